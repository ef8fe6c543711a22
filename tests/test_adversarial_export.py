"""Adversarial tests of the exporters: ``quantlab.deploy.export_onnx`` (float models
included) and the GGUF writer ``quantlab.deploy.gguf_export.write_gguf``.

export_onnx now writes float models too (``MatMul``/``Gemm``), so the float baseline comes
from the same function as the quantized model; ``quantlab.book.speed.export_float``
keeps working beside it. The sweep feeds both exporters empty batches, 1-d and 3-d
inputs, non-float32 inputs, NaN, tuples of outputs, zero-sized layers and hostile target
paths. The GGUF writer wrote NaN, infinity and f16 overflow silently (its docstring
promised a ValueError), produced files whose fp16 block scales overflowed for large
weights, and refused big-endian or reversed numpy arrays with numpy's message; all four
are pinned below. Everything here uses tiny models and a tiny GGUF template written by
the test, so it runs in seconds.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from gguf import GGUFWriter
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from quantlab.book import speed
from quantlab.deploy import export_onnx, ort_session
from quantlab.deploy import gguf_export as ge
from quantlab.nn import QuantScheme, quantize_model


def _run(path, *inputs):
    sess = ort_session(path)
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)


# --------------------------------------------------------------------------- ONNX: float models


def _mlp(seed=0, d=16):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, 8, bias=False)).eval()


def test_float_models_export_with_the_same_function(tmp_path):
    m = _mlp()
    x = torch.randn(3, 16)
    path = export_onnx(m, x, tmp_path / "float.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops & {"MatMul", "Gemm"} and not ops & {"MatMulInteger", "MatMulNBits", "DynamicQuantizeLinear"}
    assert {o.domain for o in onnx.load(str(path)).opset_import} == {""}
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(_run(path, x)[0], ref, rtol=1e-5, atol=1e-6)
    x5 = torch.randn(5, 16)  # the batch axis is dynamic, as for quantized models
    with torch.no_grad():
        np.testing.assert_allclose(_run(path, x5)[0], m(x5).numpy(), rtol=1e-5, atol=1e-6)
    # the book's export_float writes the same graph
    other = speed.export_float(m, x, tmp_path / "baseline.onnx")
    np.testing.assert_allclose(_run(other, x5)[0], _run(path, x5)[0], rtol=1e-6, atol=1e-7)
    # a bare Linear and a float64 model too (float dtypes are free without quantized layers)
    lin = nn.Linear(16, 4).double()
    p64 = export_onnx(lin, torch.randn(2, 16, dtype=torch.float64), tmp_path / "f64.onnx")
    x64 = torch.randn(2, 16, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(_run(p64, x64)[0], lin(x64).numpy(), rtol=1e-12)


def test_mixed_model_keeps_float_layers_float(tmp_path):
    m = quantize_model(_mlp(), QuantScheme("int4", group_size=32), skip=("0",), progress=False)
    path = export_onnx(m, torch.randn(2, 16), tmp_path / "mixed.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "MatMulNBits" in ops and ({"MatMul", "Gemm"} & set(ops))


SCHEMES = [
    QuantScheme("int8"),
    QuantScheme("uint8", granularity="tensor", symmetric=False),
    QuantScheme("int4", group_size=32),
    QuantScheme("int8", group_size=32, symmetric=False),
    QuantScheme("uint4", group_size=64),
    None,
]


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(SCHEMES), st.sampled_from([(0,), (1,), (3,), (2, 5), ()]), st.integers(0, 99), st.booleans())
def test_export_on_awkward_batches(tmp_path_factory, scheme, lead, seed, contiguous):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(64, 8))
    if scheme is not None:
        m = quantize_model(m, scheme, progress=False)
    x = torch.randn(*lead, 64)
    if not contiguous and x.dim() >= 2:
        x = torch.randn(64, *lead).movedim(0, -1)  # a strided view
    path = export_onnx(m, x, tmp_path_factory.mktemp("o") / "m.onnx")
    with torch.no_grad():
        ref = m(x).numpy()
    got = _run(path, x.contiguous())[0]
    assert got.shape == ref.shape
    if ref.size:
        # 8-bit activations: within a few percent of the layer's output scale
        tol = 0 if scheme is None else 0.05 * float(np.abs(ref).max()) + 1e-6
        assert float(np.abs(got - ref).max()) <= tol + 1e-5


def test_export_refuses_by_name(tmp_path):
    q = quantize_model(nn.Sequential(nn.Linear(16, 4)), "int8", progress=False)
    with pytest.raises(ValueError, match="float32"):
        export_onnx(q, torch.randn(2, 16).half(), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"in_features=16.*got shape \(2, 15\)"):
        export_onnx(q, torch.randn(2, 15), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="example_input"):
        export_onnx(q, (), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="path"):
        export_onnx(q, torch.randn(2, 16), None)
    folder = tmp_path / "dir.onnx"
    folder.mkdir()
    with pytest.raises(ValueError, match="not a file"):
        export_onnx(q, torch.randn(2, 16), folder)
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a file"):  # writing would block forever
        export_onnx(q, torch.randn(2, 16), fifo)
    assert not (tmp_path / "m.onnx").exists()


def test_tuple_outputs_and_integer_inputs(tmp_path):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 32)
            self.a, self.b = nn.Linear(32, 4), nn.Linear(32, 3)

        def forward(self, ids):
            h = self.emb(ids)
            return self.a(h), self.b(h)

    torch.manual_seed(0)
    m = Two().eval()
    ids = torch.tensor([[1, 2, 3]])
    for model in (m, quantize_model(Two().eval(), QuantScheme("int8"), progress=False)):
        path = export_onnx(model, ids, tmp_path / "two.onnx")
        outs = _run(path, ids)
        with torch.no_grad():
            ref = model(ids)
        assert [o.shape for o in outs] == [tuple(r.shape) for r in ref]


# --------------------------------------------------------------------------- GGUF writer

HIDDEN, VOCAB = 64, 16


def _template(path):
    rng = np.random.default_rng(0)
    tensors = {
        "token_embd.weight": rng.normal(0, 0.5, (VOCAB, HIDDEN)).astype(np.float32),
        "blk.0.attn_norm.weight": np.ones(HIDDEN, np.float32),
        "blk.0.attn_q.weight": rng.normal(0, 0.1, (HIDDEN, HIDDEN)).astype(np.float32),
        "output_norm.weight": np.ones(HIDDEN, np.float32),
    }
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(HIDDEN)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(VOCAB)])
    for k, v in tensors.items():
        w.add_tensor(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "template.gguf"
    return path, _template(path)


def test_gguf_layouts_write_what_their_values_say(template, tmp_path):
    path, tensors = template
    ref = ge.write_gguf(tensors, tmp_path / "ref.gguf", template=path, default_kind="q8_0")
    want = ge.read_gguf_tensors(ref.path)
    q = tensors["blk.0.attn_q.weight"]
    for label, arr in [
        ("big-endian", q.astype(">f4")),
        ("reversed", q[::-1, ::-1].copy()[::-1, ::-1]),
        ("fortran", np.asfortranarray(q)),
        ("strided", np.repeat(q, 2, axis=1)[:, ::2]),
        ("float64", q.astype(np.float64)),
        ("torch view", torch.from_numpy(q.T.copy()).T),
    ]:
        out = ge.write_gguf(
            {**tensors, "blk.0.attn_q.weight": arr}, tmp_path / "x.gguf", template=path, default_kind="q8_0"
        )
        got = ge.read_gguf_tensors(out.path)
        assert all(torch.equal(got[k], want[k]) for k in want), label


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0", "q4_0", "q4_1", "mxfp4"])
@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.0.attn_norm.weight"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_gguf_refuses_non_finite_values_by_name(template, tmp_path, kind, name, bad):
    path, tensors = template
    t = tensors[name].copy()
    t.flat[3] = bad
    target = tmp_path / "bad.gguf"
    with pytest.raises(ValueError, match=rf"tensor '{name}' holds NaN or infinity"):
        ge.write_gguf({**tensors, name: t}, target, template=path, default_kind=kind)
    assert not target.exists() and not (tmp_path / "bad.gguf.part").exists()


@pytest.mark.parametrize("kind, scale", [("f16", 1e6), ("q8_0", 1e9), ("q4_0", 1e7), ("q4_1", 1e6), ("q5_1", 1e6)])
def test_gguf_refuses_values_its_fp16_fields_cannot_hold(template, tmp_path, kind, scale):
    path, tensors = template
    big = tensors["blk.0.attn_q.weight"] * scale
    with pytest.raises(ValueError, match="blk.0.attn_q.weight.*(f16|fp16)"):
        ge.write_gguf({**tensors, "blk.0.attn_q.weight": big}, tmp_path / "b.gguf", template=path, default_kind=kind)
    # the same values fit f32 (and a kind whose scales hold them is written)
    out = ge.write_gguf(
        {**tensors, "blk.0.attn_q.weight": big},
        tmp_path / "ok.gguf",
        template=path,
        default_kind=kind,
        kinds={"blk.0.attn_q.weight": "f32"},
    )
    back = ge.read_gguf_tensors(out.path, ["blk.0.attn_q.weight"])["blk.0.attn_q.weight"]
    np.testing.assert_array_equal(back.numpy(), big)


@settings(max_examples=10, deadline=None)
@given(
    st.sampled_from(["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4", "f16", "f32"]),
    st.sampled_from([1e-30, 1e-3, 1.0, 300.0, 6e4]),
    st.integers(0, 99),
)
def test_gguf_files_decode_to_finite_values_or_are_refused(template, tmp_path_factory, kind, scale, seed):
    path, tensors = template
    rng = np.random.default_rng(seed)
    q = (rng.normal(0, 1, (HIDDEN, HIDDEN)) * scale).astype(np.float32)
    q[0] = q[0, 0]  # an all-equal row
    target = tmp_path_factory.mktemp("g") / "m.gguf"
    try:
        out = ge.write_gguf({**tensors, "blk.0.attn_q.weight": q}, target, template=path, default_kind=kind)
    except ValueError as err:
        assert "blk.0.attn_q.weight" in str(err)
        return
    back = ge.read_gguf_tensors(out.path)
    assert all(bool(torch.isfinite(v).all()) for v in back.values())


def test_gguf_targets_are_checked_before_any_work(template, tmp_path):
    path, tensors = template
    folder = tmp_path / "folder.gguf"
    folder.mkdir()
    with pytest.raises(ValueError, match="a directory"):
        ge.write_gguf(tensors, folder, template=path)
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        ge.write_gguf(tensors, fifo, template=path)
    with pytest.raises(FileNotFoundError, match="no directory"):
        ge.write_gguf(tensors, tmp_path / "missing" / "m.gguf", template=path)
    assert sorted(os.listdir(tmp_path)) == ["folder.gguf", "pipe.gguf"]


def test_gguf_names_with_non_ascii_digits_are_not_layer_names():
    with pytest.raises(ValueError, match="not a parameter"):
        ge.hf_name_to_gguf("model.layers.\u0663.self_attn.q_proj.weight")
    with pytest.raises(ValueError, match="not a tensor"):
        ge.gguf_name_to_hf("blk.\u0663.attn_q.weight")
    assert ge.hf_name_to_gguf("model.layers.3.self_attn.q_proj.weight") == "blk.3.attn_q.weight"


def test_llama_tensors_to_hf_takes_any_numpy_layout():
    w = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)
    a = ge.llama_tensors_to_hf({"blk.0.attn_q.weight": w.astype(">f4")}, 2, 2)
    b = ge.llama_tensors_to_hf({"blk.0.attn_q.weight": w[::-1][::-1]}, 2, 2)
    c = ge.llama_tensors_to_hf({"blk.0.attn_q.weight": torch.from_numpy(w)}, 2, 2)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a[key], c[key]) and torch.equal(b[key], c[key])
