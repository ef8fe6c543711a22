"""quantlab.nn's codes: the one packing codec (core.packing) under nn's names, files written
before it still read byte for byte, and the formats that decode on a device."""

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import quantlab as ql
from quantlab.core.formats import CodebookFormat, FloatFormat, IntFormat, codebook, get_format
from quantlab.nn import QuantizedLinear, QuantScheme, load_quantized, pack_codes, unpack_codes
from quantlab.nn.codes import (
    CodebookFormatOnDevice,
    FloatFormatOnDevice,
    cast_dtype,
    device_decoder,
)

DATA = Path(__file__).parent / "data"


# ----------------------------------------------------------------- one codec


def test_pack_codes_is_the_library_codec_for_every_width():
    g = torch.Generator().manual_seed(3)
    for bits in [*range(1, 17), 32]:
        codes = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (29,), generator=g)
        assert torch.equal(pack_codes(codes, bits), ql.pack(codes, bits))
        packed = ql.pack(codes, bits)
        assert torch.equal(unpack_codes(packed, bits, 29, True).long(), ql.unpack(packed, bits, 29, True).long())


def _cast_layer(fmt: str, values: list[float]) -> QuantizedLinear:
    lin = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([values]))
    return QuantizedLinear.from_linear(lin, QuantScheme(fmt))


def test_cast_layers_store_the_bytes_written_by_hand():
    """The bytes stored for a cast are the dtype's bits, least significant byte first."""
    # fp16: 1.0 = 0x3C00, -2.0 = 0xC000, 0.5 = 0x3800
    assert _cast_layer("fp16", [1.0, -2.0, 0.5]).packed.tolist() == [0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38]
    # bf16: 1.0 = 0x3F80, -2.0 = 0xC000
    assert _cast_layer("bf16", [1.0, -2.0]).packed.tolist() == [0x80, 0x3F, 0x00, 0xC0]
    # fp32: 1.0 = 0x3F800000, -0.75 = 0xBF400000
    assert _cast_layer("fp32", [1.0, -0.75]).packed.tolist() == [0, 0, 0x80, 0x3F, 0, 0, 0x40, 0xBF]
    q = _cast_layer("fp32", [1.0, -0.75])
    assert q.codes().dtype == torch.int64 and q.codes().tolist() == [[0x3F800000, 0xBF400000]]
    assert q.dequantize_weight().tolist() == [[1.0, -0.75]]


def _fixture_model() -> nn.Sequential:
    """The float model ``tests/data/nn_codes_v1.safetensors`` was saved from (weights on a
    grid of eighths, so every format below stores them without a rounding tie)."""
    m = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 6), nn.Linear(6, 4))
    with torch.no_grad():
        for i, layer in enumerate(m):
            w = torch.arange(layer.weight.numel(), dtype=torch.float32).reshape(layer.weight.shape)
            layer.weight.copy_(((w * 7 + i) % 23 - 11) / 8)
            layer.bias.copy_(torch.arange(layer.bias.numel(), dtype=torch.float32) / 4)
    return m


FIXTURE_SCHEMES = [
    QuantScheme("fp16"),
    QuantScheme("bf16"),
    QuantScheme("fp32"),
    QuantScheme("int3", scale_dtype="fp32"),
    QuantScheme("nf4", group_size=2, scale_dtype="fp32"),
]


def test_a_file_saved_before_the_one_codec_reads_byte_for_byte():
    """``nn_codes_v1.safetensors`` was written by ``save_quantized`` when nn packed 16- and
    32-bit codes on its own path: the bytes it holds are the bytes packed today, and it
    loads into the layers built today, equal to the last bit."""
    path = DATA / "nn_codes_v1.safetensors"
    stored = load_file(path)
    model = _fixture_model()
    fresh = [QuantizedLinear.from_linear(layer, s) for layer, s in zip(model, FIXTURE_SCHEMES)]
    for i, q in enumerate(fresh):
        assert torch.equal(stored[f"{i}.packed"], q.packed), i
        if q.scale is not None:
            assert torch.equal(stored[f"{i}.scale"], q.scale), i
    loaded = load_quantized(_fixture_model(), path)
    for i, q in enumerate(fresh):
        assert torch.equal(loaded[i].packed, q.packed)
        assert torch.equal(loaded[i].dequantize_weight(), q.dequantize_weight())
    x = torch.linspace(-1, 1, 16).reshape(2, 8)
    assert torch.equal(loaded(x), nn.Sequential(*fresh)(x))


# ----------------------------------------------------------------- decoding on a device

FORMATS = [
    get_format("int4"),
    get_format("uint8"),
    get_format("fp8_e4m3"),
    get_format("fp8_e5m2"),
    get_format("fp6_e3m2"),
    get_format("fp4_e2m1"),
    get_format("nf4"),
    codebook([-1.0, -0.25, 0.0, 0.5, 1.0], "cb5"),
    get_format("fp16"),
    get_format("bf16"),
    get_format("fp32"),
    FloatFormat("fp16", 16, ebits=6, mbits=9, bias=31),  # named fp16, but not its layout
]


def _all_codes(fmt) -> torch.Tensor:
    """Every code of ``fmt`` (a sample of fp32 bit patterns), in its code dtype."""
    if isinstance(fmt, CodebookFormat):
        return torch.arange(len(fmt.table)).to(fmt.code_dtype)
    if isinstance(fmt, IntFormat):  # integers: every value from qmin to qmax
        return torch.arange(fmt.qmin, fmt.qmax + 1).to(fmt.code_dtype)
    if fmt.bits == 32:
        g = torch.Generator().manual_seed(0)
        return torch.cat([torch.randint(0, 1 << 32, (4096,), generator=g), torch.tensor([0, 1 << 31, 0x7F7FFFFF])])
    return torch.arange(1 << fmt.bits).to(fmt.code_dtype)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.name}-{f.bits}")
def test_device_decoder_gives_the_format_s_own_values(fmt):
    """Codes packed, read back as a layer reads them (signed for signed integers and for the
    casts), decoded by the device decoder on the CPU: the values of ``fmt.decode``."""
    codes = _all_codes(fmt)
    signed = fmt.signed if isinstance(fmt, IntFormat) else cast_dtype(fmt) is not None
    read = unpack_codes(pack_codes(codes, fmt.bits), fmt.bits, codes.numel(), signed)
    dec = device_decoder(fmt, torch.device("cpu"))
    got = read.to(torch.float32) if dec is fmt else dec.decode(read)
    want = codes.to(torch.float32) if dec is fmt else fmt.decode(codes)
    assert got.dtype == want.dtype == torch.float32
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan)
    assert torch.equal(got[~nan], want[~nan])
    assert torch.equal(torch.signbit(got[~nan]), torch.signbit(want[~nan]))  # -0.0 stays -0.0


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.name}-{f.bits}")
def test_device_decoder_is_a_declared_class_and_leaves_the_format_alone(fmt):
    before = dict(vars(fmt))
    dec = device_decoder(fmt, "cpu")
    assert device_decoder(fmt, torch.device("cpu")) is dec  # made once per (format, device)
    assert dict(vars(fmt)).keys() == before.keys()  # nothing set on the frozen format
    if isinstance(fmt, IntFormat):
        assert dec is fmt
        return
    assert type(dec) in (FloatFormatOnDevice, CodebookFormatOnDevice)
    assert isinstance(dec, type(fmt))
    for f in dataclasses.fields(fmt):
        assert getattr(dec, f.name) == getattr(fmt, f.name), f.name
    table = dec.device_table
    assert table is None or (table.device.type == "cpu" and not table.is_inference() and table.dtype == torch.float32)


def test_cast_dtype_names_the_dtypes_whose_bits_the_codes_are():
    assert cast_dtype(get_format("fp16")) is torch.float16
    assert cast_dtype(get_format("bf16")) is torch.bfloat16
    assert cast_dtype(get_format("fp32")) is torch.float32
    assert cast_dtype(FloatFormat("fp16", 16, ebits=6, mbits=9, bias=31)) is None
    assert cast_dtype(get_format("fp8_e4m3")) is None
    assert cast_dtype(get_format("nf4")) is None and cast_dtype(get_format("int8")) is None


def test_device_decoder_refuses_a_block_format():
    with pytest.raises(TypeError, match="fmt must be an integer, float or codebook format, got"):
        device_decoder(get_format("mxfp4"), "cpu")
