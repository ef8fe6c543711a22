"""The k-quant GGUF codecs: Q4_K and Q6_K, llama.cpp's reference quantizers ported.

A super-block of 256 weights is split into sub-blocks with small scales of their own, which
are themselves scaled by fp16 numbers: Q4_K (144 bytes, 4.5 bits per weight) has eight
sub-blocks of 32 with 6-bit scales and mins, ``x ~ (d sc[j]) q - dmin m[j]``; Q6_K (210
bytes, 6.5625 bits per weight) has sixteen sub-blocks of 16 with int8 scales, ``x ~ (d
sc[j]) (q - 32)``. ``gguf`` can only decode them, so the encoders here port
``quantize_row_q4_K_ref`` and ``quantize_row_q6_K_ref`` (``ggml-quants.c``) with their scale
searches (``make_qkx2_quants``, ``make_qx_quants``), operation by operation in float32.
Byte layouts and the encoders' rules in :mod:`quantlab.core.gguf_blocks`.

Taught in: chapters/04_in_practice.ipynb, "Formats you will meet in files".
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .gguf_layout import CRUMB_SHIFT, QK_K, bytes_to_fp16, cat_bytes, fp16_bytes, rdiv, signed_max

__all__ = ["ENCODERS", "DECODERS"]

_F32 = np.float32
_NIBBLE_SHIFT = torch.tensor([0, 4], dtype=torch.int32).reshape(1, 1, 2, 1)

# --------------------------------------------------------------------------- encoders


def _steps(start: float, step: float, idx: list[int], base: float) -> list[np.float32]:
    """``start + step * i + base`` for each ``i``, evaluated left to right in float32 as in C."""
    return [_F32(start) + _F32(step) * _F32(i) + _F32(base) for i in idx]


def _sum(v: torch.Tensor) -> torch.Tensor:
    """``v.sum(dim=1, keepdim=True)`` accumulated left to right in float32, like a C loop.

    A vectorized sum adds in another order; the last-bit differences that makes would tip
    near-ties in the searches below to other codes than llama.cpp's reference picks. The
    loop runs over the (short) sub-block length, each step vectorized over all sub-blocks.
    """
    cols = v.t().contiguous()
    acc = cols[0].clone()
    for c in cols[1:]:
        acc += c
    return acc.unsqueeze(1)


def _make_qkx2(
    x: torch.Tensor, w: torch.Tensor, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """llama.cpp's ``make_qkx2_quants`` for many sub-blocks at once: scale, min, codes.

    Fits ``x ~ scale * L + min`` (``min <= 0``, ``L`` in ``0..nmax``) by weighted least
    squares. Start from ``scale = (max - min) / nmax`` with ``min = min(x, 0)``; then for each
    of ``nstep + 1`` trial inverse scales ``(rmin + rdelta * i + nmax) / (max - min)`` round
    ``(x - min)`` to codes, solve the 2x2 normal equations for the best scale and min of those
    codes (``min`` clamped to 0, then ``scale = sum w L x / sum w L^2``), and keep the
    candidate if its weighted squared error ``sum w (scale L + min - x)^2`` is strictly
    smaller. As in C, ``min`` in the later trials is the one accepted so far.

    Args:
        x: sub-blocks (m, n), float32.
        w: their weights (m, n).

    Returns:
        ``(scale (m, 1), -min (m, 1), L (m, n) float32)``; zeros where ``max == min``.
    """
    lo = x.amin(dim=1, keepdim=True).clamp(max=0)
    hi = x.amax(dim=1, keepdim=True)
    flat = hi == lo
    span = torch.where(flat, torch.ones_like(hi), hi - lo)
    sum_w = _sum(w)
    sum_x = _sum(w * x)

    iscale = rdiv(nmax, span)
    scale = rdiv(1.0, iscale)
    codes = torch.round(iscale * (x - lo)).clamp_(0, nmax)  # nearest_int: half to even
    diff = scale * codes + lo - x
    best = _sum(w * (diff * diff))
    mn = lo
    for factor in _steps(rmin, rdelta, list(range(nstep + 1)), nmax):
        # as in C, a step works from the min accepted so far (not the initial one)
        span = torch.where(hi == mn, torch.ones_like(hi), hi - mn)
        laux = torch.round(rdiv(float(factor), span) * (x - mn)).clamp_(0, nmax)
        wl = w * laux
        sum_l = _sum(wl)
        sum_l2 = _sum(wl * laux)
        sum_xl = _sum(wl * x)
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        pos = this_min > 0
        this_scale = torch.where(pos, sum_xl / sum_l2, this_scale)
        this_min = torch.where(pos, torch.zeros_like(this_min), this_min)
        diff = this_scale * laux + this_min - x
        err = _sum(w * (diff * diff))
        take = (det > 0) & (err < best)
        codes = torch.where(take, laux, codes)
        best = torch.where(take, err, best)
        scale = torch.where(take, this_scale, scale)
        mn = torch.where(take, this_min, mn)
    zero = torch.zeros_like(scale)
    return torch.where(flat, zero, scale), torch.where(flat, -lo, -mn), torch.where(flat, 0, codes)


def _make_qx(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's ``make_qx_quants`` (``rmse_type = 1``) for many sub-blocks: scale, codes.

    Symmetric fit ``x ~ scale * l``, ``l`` in ``-nmax..nmax-1``, weights ``x^2``. Start from
    ``iscale = -nmax / m`` (``m`` the signed weight of largest magnitude), giving the least-
    squares ``scale = sum w x l / sum w l^2``; then try ``iscale = -(nmax + 0.1 i) / m`` for
    ``i = -9..9`` (not 0) and keep a candidate when it raises ``(sum w x l)^2 / sum w l^2``
    (the reduction in squared error), compared as ``sumlx^2 > best * suml2`` as in C.

    Args:
        x: sub-blocks (m, n), float32.

    Returns:
        ``(scale (m, 1), L = l + nmax (m, n) float32)``; zeros where ``max|x| < 1e-15``.
    """
    m = signed_max(x)
    zero = m.abs() < 1e-15  # GROUP_MAX_EPS
    m = torch.where(zero, torch.ones_like(m), m)
    w = x * x

    def fit(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        l = torch.round(iscale * x).clamp_(-nmax, nmax - 1)  # noqa: E741 (llama.cpp's name)
        wl = w * l
        return l, _sum(w * x * l), _sum(wl * l)

    l, sumlx, suml2 = fit(rdiv(-nmax, m))  # noqa: E741 (llama.cpp's name)
    scale = torch.where(suml2 != 0, sumlx / suml2, torch.zeros_like(sumlx))
    best = scale * sumlx
    codes = l
    for factor in _steps(0.0, 0.1, [i for i in range(-9, 10) if i != 0], nmax):
        l, sumlx, suml2 = fit(rdiv(-float(factor), m))  # noqa: E741 (llama.cpp's name)
        take = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        codes = torch.where(take, l, codes)
        scale = torch.where(take, sumlx / suml2, scale)
        best = torch.where(take, scale * sumlx, best)
    return torch.where(zero, 0, scale), torch.where(zero, 0, codes + nmax)


def _nearest(v: torch.Tensor) -> torch.Tensor:
    """ggml's ``nearest_int`` (round half to even); NaN (from an inf/0 scale) becomes 0."""
    return torch.nan_to_num(torch.round(v), nan=0.0, posinf=0.0, neginf=0.0)


def _enc_q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    x = b.reshape(n * 8, 32)
    # float64 square root rounded once to float32 is C's correctly rounded sqrtf
    av_x = torch.sqrt((_sum(x * x) / 32).double()).float()
    scales, mins, codes = _make_qkx2(x, av_x + x.abs(), 15, -1.0, 0.1, 20)
    scales, mins = scales.reshape(n, 8), mins.reshape(n, 8)
    # C starts from +0 and keeps strictly larger values, so -0.0 mins never become the max
    max_scale = torch.where(scales > 0, scales, 0.0).amax(dim=1, keepdim=True)
    max_min = torch.where(mins > 0, mins, 0.0).amax(dim=1, keepdim=True)
    inv_scale = torch.where(max_scale > 0, rdiv(63.0, max_scale), torch.zeros_like(max_scale))
    inv_min = torch.where(max_min > 0, rdiv(63.0, max_min), torch.zeros_like(max_min))
    # C stores nearest_int in a uint8, then takes MIN(63, .)
    ls = (_nearest(inv_scale * scales).to(torch.int32) & 255).clamp(max=63)
    lm = (_nearest(inv_min * mins).to(torch.int32) & 255).clamp(max=63)
    d_b, dmin_b = fp16_bytes(max_scale / 63), fp16_bytes(max_min / 63)
    # requantize with the scales as stored: fp16 super-scales times 6-bit sub-scales
    dq = (bytes_to_fp16(d_b) * ls).reshape(n * 8, 1)
    mq = (bytes_to_fp16(dmin_b) * lm).reshape(n * 8, 1)
    safe = torch.where(dq == 0, torch.ones_like(dq), dq)
    requant = _nearest((x + mq) / safe).clamp_(0, 15)
    codes = torch.where(dq == 0, codes, requant).to(torch.int32).reshape(n, 4, 2, 32)
    qs = (codes[:, :, 0] | (codes[:, :, 1] << 4)).reshape(n, 128)
    sc = torch.cat(
        [
            ls[:, :4] | ((ls[:, 4:] >> 4) << 6),
            lm[:, :4] | ((lm[:, 4:] >> 4) << 6),
            (ls[:, 4:] & 15) | ((lm[:, 4:] & 15) << 4),
        ],
        dim=1,
    )
    return cat_bytes(d_b, dmin_b, sc, qs)


def _enc_q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    x = b.reshape(n * 16, 16)
    scales, codes = _make_qx(x, 32)
    scales = scales.reshape(n, 16)
    # the first sub-block of largest |scale|; as C's `abs > max_abs` from 0, a NaN scale (a
    # sub-block whose squares overflow float32) never wins
    mag = scales.abs()
    mag = torch.where(mag > 0, mag, 0.0)
    imax = mag.argmax(dim=1, keepdim=True)
    max_scale = torch.gather(scales, 1, imax)
    empty = torch.gather(mag, 1, imax) < 1e-15  # the whole super-block is written as zero bytes
    iscale = rdiv(-128.0, torch.where(empty, torch.ones_like(max_scale), max_scale))
    d_b = fp16_bytes(rdiv(1.0, iscale))
    sc = _nearest(iscale * scales).clamp_(max=127).to(torch.int32)  # in -128..127
    dq = (bytes_to_fp16(d_b) * sc).reshape(n * 16, 1)
    safe = torch.where(dq == 0, torch.ones_like(dq), dq)
    requant = _nearest(x / safe).clamp_(-32, 31) + 32
    q = torch.where(dq == 0, codes, requant).to(torch.int32).reshape(n, 2, 4, 32)  # (h, k, l)
    ql = torch.cat([(q[:, :, k] & 15) | ((q[:, :, k + 2] & 15) << 4) for k in (0, 1)], dim=2)
    qh = ((q >> 4) << CRUMB_SHIFT).sum(dim=2)
    out = cat_bytes(ql.reshape(n, 128), qh.reshape(n, 64), sc & 255, d_b)
    return torch.where(empty, torch.zeros_like(out), out)


def _q4_k_scale_min(sc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 scale bytes (n, 12) -> 6-bit scales and mins (n, 8) each."""
    sc = sc.to(torch.int32)
    a, b, c = sc[:, 0:4], sc[:, 4:8], sc[:, 8:12]
    scales = torch.cat([a & 63, (c & 15) | ((a >> 2) & 48)], dim=1)
    mins = torch.cat([b & 63, (c >> 4) | ((b >> 2) & 48)], dim=1)
    return scales, mins


def _dec_q4_k(r: torch.Tensor) -> torch.Tensor:
    n = r.shape[0]
    sc, m = _q4_k_scale_min(r[:, 4:16])
    d = (bytes_to_fp16(r[:, 0:2]) * sc.to(torch.float32)).reshape(n, 8, 1)
    dm = (bytes_to_fp16(r[:, 2:4]) * m.to(torch.float32)).reshape(n, 8, 1)
    qs = r[:, 16:].to(torch.int32).reshape(n, 4, 1, 32) >> _NIBBLE_SHIFT
    q = (qs & 15).reshape(n, 8, 32).to(torch.float32)
    return (d * q - dm).reshape(n, QK_K)


def _dec_q6_k(r: torch.Tensor) -> torch.Tensor:
    n = r.shape[0]
    sc = r[:, 192:208].view(torch.int8).to(torch.float32)
    d = (bytes_to_fp16(r[:, 208:210]) * sc).reshape(n, 16, 1)
    ql = (r[:, :128].to(torch.int32).reshape(n, 2, 1, 64) >> _NIBBLE_SHIFT) & 15
    ql = ql.reshape(n, 8, 32)
    qh = r[:, 128:192].to(torch.int32).reshape(n, 2, 1, 32) >> CRUMB_SHIFT
    qh = (qh & 3).reshape(n, 8, 32)
    q = ((ql | (qh << 4)) - 32).reshape(n, 16, 16).to(torch.float32)
    return (d * q).reshape(n, QK_K)


ENCODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"q4_k": _enc_q4_k, "q6_k": _enc_q6_k}
"""Kind -> encoder: float32 super-blocks (n, 256) to their bytes (n, BLOCK_BYTES[kind])."""

DECODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"q4_k": _dec_q4_k, "q6_k": _dec_q6_k}
"""Kind -> decoder: the bytes of whole super-blocks (n, BLOCK_BYTES[kind]) to float32 (n, 256)."""
