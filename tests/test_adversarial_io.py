"""Adversarial tests of quantlab.nn's files: tampered records and tensors, hostile save
targets, and a layer fed the wrong input.

``load_quantized`` validates everything it reads against the codes and shapes it finds
and refuses with a ValueError naming the layer and the field, before the model changes;
``save_quantized`` refuses a target that is not a regular file (or a new path) before
writing anything. Each tampering below starts from a valid file written by
``save_quantized`` and changes one thing, as someone editing the file by hand would.
"""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import quantlab as ql
from quantlab.core.formats import codebook
from quantlab.nn import QuantizedLinear, QuantScheme, load_quantized, pack_codes, quantize_model, save_quantized

IN, OUT = 64, 16


def _model(scheme, seed: int = 0, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(IN, OUT, bias=bias), nn.ReLU(), nn.Linear(OUT, 8))
    if isinstance(scheme, QuantizedLinear):
        m[0] = scheme
        return m
    return quantize_model(m, scheme, skip=("2",), progress=False)


def _float(seed: int = 5, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN, OUT, bias=bias), nn.ReLU(), nn.Linear(OUT, 8))


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors file)


def _tamper(src, dst, record=None, tensors=None):
    """Copy a save_quantized file, changing the record of layer '0' and/or its tensors."""
    meta, ts = _read(src)
    layers = json.loads(meta["quantlab.layers"])
    if record:
        record(layers["0"])
    meta["quantlab.layers"] = json.dumps(layers)
    if tensors:
        tensors(ts)
    save_file({k: v.contiguous() for k, v in ts.items()}, str(dst), metadata=meta)
    return dst


def _snapshot(model):
    return [(n, type(m).__name__) for n, m in model.named_modules()], {
        k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)
    }


def _refused(model, path, *words):
    """load_quantized raises a ValueError naming layer '0' and ``words``; model unchanged."""
    before_mods, before_state = _snapshot(model)
    with pytest.raises(ValueError) as info:
        load_quantized(model, path)
    msg = str(info.value)
    assert "layer '0'" in msg, msg
    for w in words:
        assert w in msg, msg
    after_mods, after_state = _snapshot(model)
    assert after_mods == before_mods
    assert after_state.keys() == before_state.keys()
    assert all(torch.equal(after_state[k], before_state[k]) for k in before_state)
    return msg


@pytest.fixture()
def int8_file(tmp_path):
    m = _model(QuantScheme("int8"))
    path = tmp_path / "int8.safetensors"
    save_quantized(m, path)
    return m, path


# --------------------------------------------------------------------------- formats


def test_int8_record_edited_to_uint8_is_refused(int8_file, tmp_path):
    _, path = int8_file
    bad = _tamper(path, tmp_path / "u.safetensors", record=lambda r: r.update(format={"name": "uint8"}))
    _refused(_float(), bad, "'zero_point'", "uint8")


def test_int8_record_edited_to_fp8_is_refused(int8_file, tmp_path):
    m, path = int8_file
    codes = m[0].codes()
    assert bool((codes == 127).any())  # 0x7F is NaN in e4m3: a row's absmax lands on +127
    bad = _tamper(path, tmp_path / "f.safetensors", record=lambda r: r.update(format={"name": "fp8_e4m3"}))
    _refused(_float(), bad, "'packed'", "NaN", "'format'")


@pytest.mark.parametrize("value", [-1.0, 0.0, float("nan"), float("inf"), -float("inf")])
def test_bad_scales_are_refused(int8_file, tmp_path, value):
    _, path = int8_file

    def edit(ts):
        ts["0.scale"] = ts["0.scale"].clone()
        ts["0.scale"][3] = value

    bad = _tamper(path, tmp_path / "s.safetensors", tensors=edit)
    _refused(_float(), bad, "'scale'", "finite positive")


def test_codebook_too_small_for_its_bits_is_refused(int8_file, tmp_path):
    _, path = int8_file
    rec = {"kind": "codebook", "name": "two", "bits": 8, "table": [-1.0, 1.0]}
    bad = _tamper(path, tmp_path / "c.safetensors", record=lambda r: r.update(format=rec))
    _refused(_float(), bad, "'format'", "2 entries", "8-bit")


def test_codebook_codes_beyond_the_table_are_refused(tmp_path):
    cb = codebook([-1.0, -0.3, 0.0, 0.4, 1.0], "five")  # 3-bit codes, codes 5..7 unused
    m = _model(QuantScheme(cb, group_size=32))
    path = tmp_path / "cb.safetensors"
    save_quantized(m, path)
    back = load_quantized(_float(), path)  # the honest file loads, bit for bit
    x = torch.randn(3, IN)
    assert torch.equal(back[0](x), m[0](x))

    def edit(ts):
        codes = m[0].codes().to(torch.int64).reshape(-1).clone()
        codes[5] = 7
        ts["0.packed"] = pack_codes(codes, 3)

    bad = _tamper(path, tmp_path / "cb2.safetensors", tensors=edit)
    _refused(_float(), bad, "'packed'", "code 7", "5 entries")


@pytest.mark.parametrize(
    "rec",
    [
        {
            "kind": "float",
            "name": "fp8x",
            "bits": 8,
            "ebits": 5,
            "mbits": 3,
            "bias": 15,
            "has_inf": True,
            "nan": "ieee",
            "overflow": "inf",
            "_nan_code": 127,
        },
        {
            "kind": "float",
            "name": "fp8y",
            "bits": 8,
            "ebits": 4,
            "mbits": 3,
            "bias": 7,
            "has_inf": False,
            "nan": "all_ones",
            "overflow": "saturate",
            "_nan_code": 4096,
        },
        {"kind": "codebook", "name": "unsorted", "bits": 1, "table": [1.0, -1.0]},
        {"kind": "codebook", "name": "nan", "bits": 1, "table": [float("nan"), 1.0]},
        {"kind": "int", "name": "int99", "bits": 99, "signed": True},
        {"name": "mxfp4"},
        {"name": "int\u0668"},
    ],
)
def test_custom_formats_that_contradict_their_bits_are_refused(int8_file, tmp_path, rec):
    _, path = int8_file
    bad = _tamper(path, tmp_path / "x.safetensors", record=lambda r: r.update(format=rec))
    _refused(_float(), bad, "'format'")


# --------------------------------------------------------------------------- layouts and shapes


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda r: r.update(group_size=3), ["'group_size'"]),
        (lambda r: r.update(granularity="group", group_size=48), ["'group_size'", "in_features 64"]),
        (lambda r: r.update(granularity="group", group_size=32), ["'scale_shape'"]),
        (lambda r: r.update(granularity="group", group_size=32, scale_shape=[OUT, 2]), ["tensor 'scale'", "shape"]),
        (lambda r: r.update(scale_shape=[OUT + 1]), ["'scale_shape'"]),
        (lambda r: r.update(granularity="diagonal"), ["'granularity'"]),
        (lambda r: r.update(axis=2), ["'axis'"]),
        (lambda r: r.update(scale_dtype="fp8"), ["'scale_dtype'"]),
        (lambda r: r.update(symmetric="yes"), ["'symmetric'"]),
        (lambda r: r.update(symmetric=False), ["'symmetric'", "'zero_point'"]),
        (lambda r: r.update(zero_point=True), ["'zero_point'"]),
        (lambda r: r.update(scaled=False), ["'scaled'"]),
        (lambda r: r.update(weight_dtype="int8"), ["'weight_dtype'"]),
        (lambda r: r.update(bias=1), ["'bias'"]),
        (lambda r: r.update(shape=[OUT, IN, 1]), ["'shape'"]),
        (lambda r: r.update(shape=[OUT * 2, IN // 2]), ["shape"]),
    ],
    ids=[
        "gs-3",
        "gs-48",
        "gs-no-scale-shape",
        "gs-wrong-tensor",
        "scale-shape",
        "granularity",
        "axis",
        "scale-dtype",
        "symmetric-str",
        "asym-no-zp",
        "zp-missing",
        "cast-int",
        "weight-dtype",
        "bias-int",
        "shape-3d",
        "shape-other",
    ],
)
def test_records_that_contradict_the_tensors_are_refused(int8_file, tmp_path, edit, words):
    _, path = int8_file
    bad = _tamper(path, tmp_path / "r.safetensors", record=edit)
    _refused(_float(), bad, *words)


def test_tensors_of_the_wrong_size_or_dtype_are_refused(int8_file, tmp_path):
    _, path = int8_file
    for name, edit, word in [
        ("short", lambda ts: ts.update({"0.packed": ts["0.packed"][:-1]}), "'packed'"),
        ("long", lambda ts: ts.update({"0.packed": torch.cat([ts["0.packed"], ts["0.packed"][:1]])}), "'packed'"),
        ("dtype", lambda ts: ts.update({"0.packed": ts["0.packed"].view(torch.int8)}), "'packed'"),
        ("scale-dtype", lambda ts: ts.update({"0.scale": ts["0.scale"].float()}), "'scale'"),
        ("bias-nan", lambda ts: ts["0.bias"].__setitem__(0, float("nan")), "'bias'"),
        ("bias-shape", lambda ts: ts.update({"0.bias": ts["0.bias"][:-1]}), "'bias'"),
    ]:
        bad = _tamper(path, tmp_path / f"{name}.safetensors", tensors=edit)
        _refused(_float(), bad, word)


def test_symmetric_uint_zero_points_must_be_mid_range(tmp_path):
    m = _model(QuantScheme("uint4", group_size=32))
    path = tmp_path / "u4.safetensors"
    save_quantized(m, path)
    assert m[0].symmetric
    load_quantized(_float(), path)

    def edit(ts):
        zp = torch.full((OUT * 2,), 8, dtype=torch.int64)
        zp[0] = 3
        ts["0.zero_point"] = pack_codes(zp, 4)

    bad = _tamper(path, tmp_path / "u4b.safetensors", tensors=edit)
    _refused(_float(), bad, "'zero_point'", "mid-range zero point 8")


def test_state_dicts_with_bad_scales_are_refused_before_copying():
    layer = QuantizedLinear.from_linear(nn.Linear(IN, OUT), "int8")
    state = layer.state_dict()
    state["scale"] = state["scale"].clone()
    state["scale"][0] = float("nan")
    before = layer.scale.clone()
    with pytest.raises(ValueError, match="'scale'.*finite positive"):
        layer.load_state_dict(state)
    assert torch.equal(layer.scale, before)


# every scheme still round-trips bit for bit through the checks
ROUND_TRIP = [
    QuantScheme("int8"),
    QuantScheme("int8", axis=1),
    QuantScheme("int4", group_size=32),
    QuantScheme("uint8", symmetric=False),
    QuantScheme("uint4", group_size=16),
    QuantScheme("int3", group_size=16, scale_dtype="bf16"),
    QuantScheme("nf4", group_size=32),
    QuantScheme("fp8_e4m3", granularity="tensor"),
    QuantScheme("fp8_e5m2"),
    QuantScheme("fp4_e2m1", group_size=32),
    QuantScheme("fp6_e3m2"),
    QuantScheme("fp16"),
    QuantScheme("bf16"),
    QuantScheme("fp32"),
    QuantScheme(codebook([-2.0, -0.5, 0.0, 0.25, 1.0, 3.0], "six"), group_size=16),
]


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(ROUND_TRIP), st.integers(0, 1000), st.booleans(), st.sampled_from([1.0, 1e-30, 1e20]))
def test_honest_files_still_load_bit_for_bit(tmp_path_factory, scheme, seed, bias, magnitude):
    m = _model(scheme, seed, bias=bias)
    if magnitude != 1.0:  # very small or very large weights (scales stay storable in fp32)
        m = _float(seed, bias=bias)
        with torch.no_grad():
            m[0].weight.mul_(magnitude)
        try:
            m = quantize_model(
                m,
                QuantScheme(scheme.fmt, scheme.granularity, scheme.group_size, scheme.axis, scheme.symmetric, "fp32")
                if not scheme.is_cast
                else scheme,
                skip=("2",),
                progress=False,
            )
        except ValueError:
            return  # a scale the format cannot hold is refused at quantize time, by name
    path = tmp_path_factory.mktemp("rt") / "m.safetensors"
    save_quantized(m, path)
    back = load_quantized(_float(seed + 1, bias=bias), path)
    x = torch.randn(2, IN, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(back[0].dequantize_weight(), m[0].dequantize_weight())
    y = m[0](x)
    assert torch.equal(back[0](x), y) or not bool(torch.isfinite(y).all())


# --------------------------------------------------------------------------- save targets


def _listing(folder):
    return sorted(os.listdir(folder))


def test_save_refuses_a_fifo_and_writes_nothing(int8_file, tmp_path):
    m, _ = int8_file
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    before = _listing(tmp_path)
    with pytest.raises(ValueError, match="FIFO"):
        save_quantized(m, fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and _listing(tmp_path) == before


def test_save_refuses_a_directory_and_a_link_to_a_device(int8_file, tmp_path):
    m, _ = int8_file
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(ValueError, match="a directory"):
        save_quantized(m, folder)
    assert folder.is_dir() and _listing(folder) == []
    link = tmp_path / "null.safetensors"
    os.symlink("/dev/null", link)
    before = _listing(tmp_path)
    with pytest.raises(ValueError, match="character device"):
        save_quantized(m, link)
    assert os.path.islink(link) and _listing(tmp_path) == before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_save_into_a_missing_directory_is_a_file_not_found_error(int8_file, tmp_path):
    m, _ = int8_file
    with pytest.raises(FileNotFoundError, match="no directory"):
        save_quantized(m, tmp_path / "missing" / "m.safetensors")
    with pytest.raises(OSError):
        save_quantized(m, tmp_path / "missing" / "deeper" / "m.safetensors")
    assert not (tmp_path / "missing").exists()


def test_save_writes_through_links_and_keeps_permissions(int8_file, tmp_path):
    m, _path = int8_file
    target = tmp_path / "real.safetensors"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.safetensors"
    os.symlink(target.name, link)
    save_quantized(m, link)
    assert os.path.islink(link) and os.readlink(link) == target.name
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    back = load_quantized(_float(), target)
    assert torch.equal(back[0].dequantize_weight(), m[0].dequantize_weight())
    fresh = tmp_path / "fresh.safetensors"
    save_quantized(m, fresh)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o666 & ~mask


def test_load_refuses_what_is_not_a_regular_file(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    with pytest.raises(ValueError, match="a directory"):
        load_quantized(_float(), folder)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):  # reading it would block forever
        load_quantized(_float(), fifo)
    with pytest.raises(ValueError, match="character device"):
        load_quantized(_float(), "/dev/zero")


# --------------------------------------------------------------------------- the layer


@pytest.mark.parametrize("shape", [(3, IN + 1), (IN - 1,), (2, 5, 7), ()])
def test_wrong_in_features_names_the_layer(shape):
    layer = QuantizedLinear.from_linear(nn.Linear(IN, OUT), QuantScheme("int4", group_size=32))
    with pytest.raises(ValueError, match=rf"in_features={IN}, out_features={OUT}, format=int4"):
        layer(torch.randn(shape))
    with pytest.raises(ValueError, match=re.escape(f"takes x of shape (..., {IN}), got shape {shape}")):
        layer(torch.randn(shape).numpy())
    with pytest.raises(TypeError, match="float x"):
        layer(torch.ones(2, IN, dtype=torch.int64))
    assert layer(torch.randn(2, 3, IN)).shape == (2, 3, OUT)


def test_constructor_refuses_contradictory_qtensors():
    qt = ql.quantize(torch.randn(OUT, IN), "uint8", granularity="channel")
    qt.zero_point = None  # unsigned codes without their zero points
    with pytest.raises(ValueError, match="'zero_point'.*uint8"):
        QuantizedLinear(qt)
