"""Packing sub-byte codes into bytes: layout by hand, round trips, errors."""

import numpy as np
import pytest
import torch

import quantlab as ql
from quantlab.core import packing
from quantlab.core.packing import unpack_view


def test_nibble_order_by_hand():
    # element 2i in the low nibble, 2i+1 in the high nibble
    assert ql.pack(torch.tensor([1, 2, 3, 4], dtype=torch.uint8), 4).tolist() == [0x21, 0x43]
    assert ql.pack(np.array([0xF, 0x0, 0x5]), 4).tolist() == [0x0F, 0x05]  # padded with zeros


def test_two_and_one_bit_by_hand():
    assert ql.pack(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert ql.pack(torch.tensor([1, 0, 1, 1, 0, 0, 0, 1, 1]), 1).tolist() == [0b10001101, 0b1]


def test_three_bits_straddle_bytes():
    # 3-bit stream LSB first: 5=101, 3=011, 7=111 -> bits 1,0,1, 1,1,0, 1,1,1 -> 0b11011101, 0b1
    assert ql.pack(torch.tensor([5, 3, 7]), 3).tolist() == [0b11011101, 0b1]
    assert ql.unpack(torch.tensor([0b11011101, 1], dtype=torch.uint8), 3, 3).tolist() == [5, 3, 7]


def test_signed_codes_two_complement():
    codes = torch.tensor([-8, 7, -1, 0], dtype=torch.int8)
    packed = ql.pack(codes, 4)
    assert packed.tolist() == [0x78, 0x0F]
    assert ql.unpack(packed, 4, 4, signed=True).tolist() == [-8, 7, -1, 0]


@pytest.mark.parametrize("bits", range(1, 17))
def test_round_trip_every_width(bits):
    g = torch.Generator().manual_seed(bits)
    n = 1001
    codes = torch.randint(0, 2**bits, (n,), generator=g)
    packed = ql.pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == ql.packed_nbytes(n, bits)
    assert torch.equal(ql.unpack(packed, bits, n).long(), codes)


def test_numpy_in_numpy_out():
    p = ql.pack(np.array([[1, 2], [3, 4]], dtype=np.int32), 4)
    assert isinstance(p, np.ndarray) and p.dtype == np.uint8
    assert isinstance(ql.unpack(p, 4, 4), np.ndarray)


@pytest.mark.parametrize(
    "call, exc, msg",
    [
        (lambda: ql.pack(torch.tensor([16]), 4), ValueError, r"fit in 4 bits .* got values in \[16, 16\]"),
        (lambda: ql.pack(torch.tensor([-9]), 4), ValueError, "fit in 4 bits"),
        (lambda: ql.pack(torch.tensor([0.5]), 4), TypeError, "codes must be integers, got dtype float32"),
        (lambda: ql.pack(torch.tensor([1]), 0), ValueError, "bits must be from 1 to 16, or 32, got 0"),
        (lambda: ql.pack(torch.tensor([1]), 17), ValueError, "got 17"),
        (lambda: ql.pack(torch.tensor([1]), 24), ValueError, "bits must be from 1 to 16, or 32, got 24"),
        (lambda: ql.pack(torch.tensor([65536]), 16), ValueError, r"fit in 16 bits .* got values in \[65536, 65536\]"),
        (lambda: ql.pack(torch.tensor([-32769]), 16), ValueError, "fit in 16 bits"),
        (lambda: ql.pack(torch.tensor([1 << 32]), 32), ValueError, "fit in 32 bits"),
        (lambda: ql.pack(torch.tensor([-(1 << 31) - 1]), 32), ValueError, "fit in 32 bits"),
        (lambda: ql.unpack(torch.zeros(5, dtype=torch.uint8), 32, 2), ValueError, "holds 5 bytes, but 2 codes of 32"),
        (lambda: ql.pack(torch.tensor([1]), 4.0), TypeError, "bits must be an int"),
        (lambda: ql.unpack(torch.tensor([1], dtype=torch.int32), 4, 2), TypeError, "packed must be uint8"),
        (lambda: ql.unpack(torch.tensor([1], dtype=torch.uint8), 4, 3), ValueError, "holds 1 bytes"),
        (
            lambda: ql.unpack(torch.tensor([1], dtype=torch.uint8), 4, -1),
            ValueError,
            "n must be a non-negative int, got -1",
        ),
        (lambda: ql.packed_nbytes(-1, 4), ValueError, "n must be >= 0, got -1"),
    ],
)
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


# ----------------------------------------------------------------- 16- and 32-bit codes


def test_sixteen_and_thirty_two_bits_are_little_endian_bytes_by_hand():
    # fp16 1.0 = 0x3C00, -2.0 = 0xC000; unsigned 0xABCD; signed -2 = 0xFFFE
    assert ql.pack(torch.tensor([0x3C00, 0xC000, 0xABCD]), 16).tolist() == [0x00, 0x3C, 0x00, 0xC0, 0xCD, 0xAB]
    assert ql.pack(np.array([-2], dtype=np.int16), 16).tolist() == [0xFE, 0xFF]
    # fp32 1.0 = 0x3F800000, -2.0 = 0xC0000000
    codes = torch.tensor([0x3F800000, 0xC0000000, -1])
    assert ql.pack(codes, 32).tolist() == [0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0, 0xFF, 0xFF, 0xFF, 0xFF]
    packed = torch.tensor([0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0], dtype=torch.uint8)
    assert ql.unpack(packed, 32, 2).tolist() == [0x3F800000, 0xC0000000]
    assert ql.unpack(packed, 32, 2).dtype == torch.int64  # unsigned 32-bit codes do not fit int32
    assert ql.unpack(packed, 32, 2, signed=True).tolist() == [0x3F800000, -(1 << 30)]
    assert ql.unpack(packed, 16, 4, signed=True).tolist() == [0, 0x3F80, 0, -0x4000]


@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("signed", [False, True])
def test_whole_byte_widths_match_the_bitstream_rule(bits, signed):
    """Bit k of the stream is bit k % 8 of byte k // 8: for whole bytes, element i is bytes
    [i*bits/8, (i+1)*bits/8), least significant first -- computed here from the rule."""
    g = torch.Generator().manual_seed(bits + signed)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    codes = torch.randint(lo, hi + 1, (257,), generator=g, dtype=torch.int64)
    u = codes & ((1 << bits) - 1)
    want = torch.stack([(u >> (8 * k)) & 0xFF for k in range(bits // 8)], dim=1).reshape(-1)
    packed = ql.pack(codes, bits)
    assert packed.dtype == torch.uint8 and torch.equal(packed.long(), want)
    assert packed.numel() == ql.packed_nbytes(257, bits)
    back = ql.unpack(packed, bits, 257, signed)
    assert back.dtype == (torch.int64 if bits == 32 and not signed else torch.int32)
    assert torch.equal(back.long(), codes)
    view = unpack_view(packed, bits, 257, signed)
    assert torch.equal(view.long(), codes)


@pytest.mark.parametrize("bits", [16, 32])
def test_whole_byte_widths_without_little_endian_reads(bits, monkeypatch):
    """The arithmetic path a big-endian machine takes writes and reads the same bytes."""
    codes = torch.tensor([0, 1, -1, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, 0x1234])
    native = ql.pack(codes, bits)
    monkeypatch.setattr(packing, "_LITTLE_ENDIAN", False)
    assert torch.equal(ql.pack(codes, bits), native)
    assert torch.equal(ql.unpack(native, bits, 6, signed=True).long(), codes)
    assert torch.equal(unpack_view(native, bits, 6, signed=True).long(), codes)
    assert ql.unpack(native, bits, 6)[2] == (1 << bits) - 1


def test_unpack_view_shares_memory_where_the_bytes_are_the_codes():
    packed = ql.pack(torch.tensor([1, -2, 300, -300]), 16)
    v = unpack_view(packed, 16, 4, signed=True)
    assert v.dtype == torch.int16 and v.data_ptr() == packed.data_ptr()
    assert ql.unpack(packed, 16, 4, signed=True).data_ptr() != packed.data_ptr()  # unpack copies
    b = ql.pack(torch.tensor([1, -2]), 8)
    assert unpack_view(b, 8, 2, signed=True).data_ptr() == b.data_ptr()
    assert unpack_view(b, 8, 2, signed=True).tolist() == [1, -2]
    # unsigned wide codes, and widths below a byte, are computed: no view
    assert unpack_view(packed, 16, 4).tolist() == [1, 65534, 300, 65236]
    assert unpack_view(ql.pack(torch.tensor([3, 1]), 2), 2, 2).tolist() == [3, 1]
    # a view that starts at an odd byte cannot be read as int16: it is copied first
    odd = torch.cat([torch.zeros(1, dtype=torch.uint8), packed])[1:]
    assert unpack_view(odd, 16, 4, signed=True).tolist() == [1, -2, 300, -300]


def test_whole_byte_widths_numpy_out_and_meta():
    codes = np.array([7, -7, 70000], dtype=np.int64)
    p = ql.pack(codes, 32)
    assert isinstance(p, np.ndarray) and p.dtype == np.uint8 and p.size == 12
    assert isinstance(ql.unpack(p, 32, 3, signed=True), np.ndarray)
    assert ql.unpack(p, 32, 3, signed=True).tolist() == [7, -7, 70000]
    buf = np.empty(12, dtype=np.uint8)
    assert ql.pack(codes, 32, out=buf) is buf and np.array_equal(buf, p)
    out = torch.empty(3, dtype=torch.int64)
    assert ql.unpack(torch.from_numpy(p), 32, 3, out=out) is out and out.tolist() == [7, (1 << 32) - 7, 70000]
    meta = torch.empty(12, dtype=torch.uint8, device="meta")
    assert ql.unpack(meta, 32, 3).is_meta and ql.unpack(meta, 32, 3).dtype == torch.int64
    assert unpack_view(meta, 16, 6, signed=True).dtype == torch.int16
    assert unpack_view(meta, 3, 6).shape == (6,)
