"""Packing sub-byte codes into bytes: layout by hand, round trips, errors."""

import numpy as np
import pytest
import torch

import quantlab as ql


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
        (lambda: ql.pack(torch.tensor([1]), 0), ValueError, "bits must be from 1 to 16, got 0"),
        (lambda: ql.pack(torch.tensor([1]), 17), ValueError, "got 17"),
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
