"""GPTQ: quantize a layer's weights one column at a time, correcting the rest for the error.

Round-to-nearest (RTN) rounds every weight on its own. GPTQ (Frantar et al., 2023) uses
calibration inputs ``X`` to ask what the rounding does to the layer's *output*: the
output error of a weight change ``dW`` is ``tr(dW H dW^T) / 2`` with the Hessian
``H = 2 X^T X / n`` (:func:`quantlab.calibration.hessian`). Rows of ``W`` are
independent, and all share ``H``. Column ``q`` is rounded, and its error
``e = (w_q - Q(w_q)) / [H^-1]_qq`` is spread over the columns not yet quantized,
``W[:, q+1:] -= e [H^-1]_{q, q+1:}`` (the optimal-brain-surgeon update), which then
absorb it when they are rounded in turn.

The implementation follows the reference code (``gptq.py`` of IST-DASLab/gptq):

* **damping**: ``H += damp * mean(diag H) * I`` (1% by default) keeps ``H`` invertible;
* **Cholesky**: the rows ``[H^-1]_{q, q:}`` that the updates need are the rows of the
  upper Cholesky factor of ``H^-1`` (scaled), computed once;
* **lazy batch updates**: columns are processed in blocks of ``block_size`` (128); inside
  a block the update touches only the block, and the rest of ``W`` receives the block's
  accumulated errors in one matrix product -- the same numbers, far fewer memory passes
  (field notes: 47 ms instead of 840 ms for a 384x1536 layer);
* **per-group scales** (``group_size``): a group's scales are chosen (absmax, or min/max)
  at the moment its first column is quantized, from the group's *current*, already
  error-corrected weights;
* **act-order** (``act_order=True``): columns are visited in order of decreasing
  ``diag(H)`` (most important inputs first, while there is most room to compensate);
  groups stay the contiguous column ranges of the original order, so the result is an
  ordinary grouped :class:`~quantlab.quantize.QTensor`;
* **dead inputs** (``H_jj = 0``: the input feature was always zero) get ``H_jj = 1``
  and weight 0: they cannot affect the output.

Each column is quantized by :func:`quantlab.quantize` with the group's
:class:`~quantlab.quantize.QParams`, so any format works (int, fp, NF4).

:func:`gptq_reference` is the plain column-by-column loop (every update applied at
once to all later columns); it gives the same codes and is there for tests and timing.

Taught in: chapters/04_in_practice.ipynb (GPTQ) and chapters/04b_language_model.ipynb,
"Perplexity" (sec-llm-perplexity).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from ..core._backend import ArrayLike, as_tensor, like_input, require_float
from ..core.formats import BlockFormat, IntFormat, get_format
from ..core.quantize import QParams, QTensor, choose_qparams, quantize
from ..core.scheme import DEFAULT_SCALE_DTYPE, SchemeLike, rowwise_recipe
from ..core.validate import check_positive_int
from .calibration import LayerStats, collect_layer_stats, hessian, linear_layer_names

__all__ = [
    "GPTQResult",
    "hessian",
    "gptq_quantize_weight",
    "gptq_reference",
    "output_error",
    "gptq_quantize_model",
]


@dataclass
class GPTQResult:
    """What :func:`gptq_quantize_weight` returns.

    ``weight`` and ``perm`` are of the kind of the input ``W`` (numpy or torch). The
    :class:`~quantlab.quantize.QTensor` holds torch codes and scales for either kind
    (its ``dequantize()`` returns the input's kind).

    Attributes:
        qtensor: the quantized weight (codes ``(out, in)`` and scales per row and group of
            ``group_size`` columns, or per row when ``group_size`` is None), ready for
            packed storage (``qtensor.nbytes``).
        weight: ``qtensor.dequantize()``: the weights the layer computes with, same kind
            (numpy or torch) and dtype as the input ``W``.
        perm: the column order used (act-order), or None for the natural order; a numpy
            int64 array for a numpy ``W``, else a tensor.
        loss: GPTQ's own error estimate ``sum_q ||w_q - Q(w_q)||^2 / (2 [H^-1]_qq^2)``
            (with the damped ``H``); NaN for a layer that
            :func:`gptq_quantize_model` quantized stacked with layers sharing its input.
    """

    qtensor: QTensor
    weight: ArrayLike
    perm: Optional[ArrayLike]
    loss: float


# --------------------------------------------------------------------------- checks


def _recipe(fmt: SchemeLike, group_size: Optional[int], symmetric: bool, scale_dtype: str, who: str) -> tuple:
    """``(fmt, group_size, symmetric, scale_dtype)``, read from a scheme given as ``fmt`` (see
    :func:`quantlab.core.scheme.rowwise_recipe`; the keywords' defaults are this module's)."""
    fmt, kw = rowwise_recipe(
        fmt,
        {"group_size": group_size, "symmetric": symmetric, "scale_dtype": scale_dtype},
        {"group_size": 128, "symmetric": True, "scale_dtype": DEFAULT_SCALE_DTYPE},
        who,
    )
    return fmt, kw["group_size"], kw["symmetric"], kw["scale_dtype"]


def _check_damp(damp, act_order) -> None:
    if isinstance(damp, bool) or not isinstance(damp, (int, float, np.floating)):
        raise TypeError(f"damp must be a positive number, got {damp!r}")
    if not (math.isfinite(damp) and damp > 0):
        raise ValueError(f"damp must be a positive finite number, got {damp}")
    if not isinstance(act_order, (bool, np.bool_)):
        raise TypeError(f"act_order must be True or False, got {act_order!r}")


def _prepare(W, H, fmt, group_size, block_size, damp, act_order, symmetric, scale_dtype, factor=None):
    fmt = get_format(fmt)
    if isinstance(fmt, BlockFormat):
        raise ValueError(
            f"fmt {fmt.name!r} is block-scaled and chooses its own block scales; GPTQ chooses "
            "one scale per row and group: use an integer, float or codebook format such as "
            "'int4', 'fp4_e2m1' or 'nf4'"
        )
    w, was_numpy = as_tensor(W, "W")
    h, _ = as_tensor(H, "H")
    require_float(w, "W")
    require_float(h, "H")
    if w.dim() != 2:
        raise ValueError(f"W must be 2-d (out_features, in_features), got shape {tuple(w.shape)}")
    cols = w.shape[1]
    if h.shape != (cols, cols):
        raise ValueError(f"H must be ({cols}, {cols}) to match W's {cols} input features, got shape {tuple(h.shape)}")
    group_size = check_positive_int(group_size, "group_size", allow_none=True)
    if group_size is not None and cols % group_size != 0:
        raise ValueError(f"group_size must divide the last dimension {cols}, got {group_size}")
    block_size = check_positive_int(block_size, "block_size")
    _check_damp(damp, act_order)
    if not isinstance(symmetric, (bool, np.bool_)):
        raise TypeError(f"symmetric must be True or False, got {symmetric!r}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("W contains NaN or infinity")
    work = torch.float64 if w.dtype == torch.float64 else torch.float32
    if factor is None:  # computed where the weight lives
        factor = _factor(h.to(w.device), damp, act_order, work)
    U, perm, dead, loss_scale = factor
    Wk = w.detach().to(work, copy=True)
    Wk[:, dead] = 0.0
    if perm is not None:
        Wk = Wk[:, perm]
    return fmt, w, was_numpy, Wk, U, perm, group_size, block_size, loss_scale


#: Largest ``max |H - H^T|`` accepted, relative to ``max |H|`` (float32 sums of ``X^T X``
#: are symmetric up to rounding; a larger difference is not a Hessian).
_SYMMETRY_TOL = 1e-4


def _factor(h: torch.Tensor, damp: float, act_order: bool, work: torch.dtype):
    """The part of GPTQ that depends only on ``H``: dead inputs, the act-order permutation
    and the upper Cholesky factor ``U`` of the damped ``H^-1``. Returns
    ``(U, perm, dead, loss_scale)``.

    GPTQ's codes do not change when ``H`` is multiplied by a constant (every update uses
    ratios of entries of ``U``), so ``H`` is first multiplied by an even power of two
    ``4^-j`` that brings its mean diagonal near 1. That is exact (every value, square
    root and product scales by a power of two), so the codes are bit for bit those of
    the unscaled ``H`` wherever that one factors, and Hessians of very large or very
    small inputs (``1e38``, ``1e-40``) factor too instead of overflowing or underflowing.
    The errors then come out scaled by ``2^-j``: ``loss_scale = 4^j`` restores the loss.
    """
    if not bool(torch.isfinite(h).all()):
        raise ValueError("H contains NaN or infinity")
    Hk = h.detach().to(work, copy=True)
    if Hk.numel():
        top = float(Hk.abs().max())
        asym = float((Hk - Hk.T).abs().max())
        if asym > _SYMMETRY_TOL * top:
            raise ValueError(
                f"H must be symmetric (a Hessian 2 X^T X / n), got max |H - H^T| = {asym:.3g} with max |H| = {top:.3g}"
            )
    dead = torch.diagonal(Hk) == 0
    Hk[dead, dead] = 1.0
    loss_scale = 1.0
    mean_diag = float(torch.diagonal(Hk).double().mean()) if Hk.numel() else 1.0
    if mean_diag > 0 and math.isfinite(mean_diag):
        j = round(math.log2(mean_diag) / 2)  # H * 4^-j: mean diagonal within [1/2, 2]
        if j:
            Hk.mul_(2.0**-j).mul_(2.0**-j)  # two steps: 4^-j alone may overflow the dtype
            loss_scale = 4.0**j
    perm = None
    if act_order:
        perm = torch.argsort(torch.diagonal(Hk), descending=True, stable=True)
        Hk = Hk[perm][:, perm]
    Hk.diagonal().add_(damp * torch.diagonal(Hk).mean())
    try:
        L = torch.linalg.cholesky(Hk)
        Hinv = torch.cholesky_inverse(L)
        U = torch.linalg.cholesky(Hinv, upper=True)
    except RuntimeError as err:  # torch.linalg.LinAlgError subclasses RuntimeError
        raise ValueError(
            f"H (plus damping {damp} * mean diagonal) is not positive definite; "
            "pass a larger damp or more calibration rows"
        ) from err
    if not bool(torch.isfinite(U).all()):
        raise ValueError(
            f"H (plus damping {damp} * mean diagonal) is too ill-conditioned to "
            "invert in its dtype; pass a larger damp or more calibration rows"
        )
    return U, perm, dead, loss_scale


class _Groups:
    """Per-group quantization parameters, chosen when a group's first column comes up,
    and the rounding of one column onto its group's grid."""

    def __init__(self, W: torch.Tensor, fmt, group_size, perm, symmetric, scale_dtype):
        rows, cols = W.shape
        self.fmt, self.group_size, self.symmetric, self.scale_dtype = fmt, group_size, symmetric, scale_dtype
        self.n_groups = 1 if group_size is None else cols // group_size
        # position (in processing order) -> original column; original column -> position
        self.orig = torch.arange(cols, device=W.device) if perm is None else perm
        self.pos = torch.empty_like(self.orig)
        self.pos[self.orig] = torch.arange(cols, device=self.orig.device)
        self.group_ids: list[int] = [0] * cols if group_size is None else (self.orig // group_size).tolist()
        self.params: list[Optional[QParams]] = [None] * self.n_groups
        self._fast: list[Optional[tuple]] = [None] * self.n_groups
        self._buf = torch.empty(rows, dtype=W.dtype, device=W.device)
        if group_size is None:  # one scale per row, from the whole (original) weight
            self.start(0, W)

    def start(self, g: int, values: torch.Tensor) -> None:
        """Choose group ``g``'s parameters from its current values ``(rows, group_size)``."""
        qp = choose_qparams(
            values, self.fmt, granularity="channel", axis=0, symmetric=self.symmetric, scale_dtype=self.scale_dtype
        )
        self.params[g] = qp
        if isinstance(self.fmt, IntFormat):
            zp = None if qp.zero_point is None else qp.zero_point.to(torch.float32).reshape(-1)
            scale = qp.scale.reshape(-1)
            self._fast[g] = (scale.to(values.dtype), scale, zp)

    def positions(self, g: int) -> torch.Tensor:
        """Processing positions of group ``g``'s columns (all not yet quantized)."""
        return self.pos[g * self.group_size : (g + 1) * self.group_size]

    def quantize_column(self, col: torch.Tensor, g: int, code_out: torch.Tensor) -> torch.Tensor:
        """Round one weight column ``col`` (a contiguous ``(rows,)`` vector) onto group
        ``g``'s grid; write its codes (as floats of ``col``'s dtype) into ``code_out``
        and return the dequantized column.

        Integer formats take a fast path that performs :func:`quantlab.quantize`'s exact
        operations (divide by the scale, round half to even, add the zero point, clamp;
        dequantize in float32) without its per-call checks: GPTQ rounds one column at a
        time, so the checks would cost more than the arithmetic. The tests check that it
        gives the library's codes (the column loop :func:`gptq_reference` calls
        :func:`quantlab.quantize` itself). Other formats call :func:`quantlab.quantize`.
        """
        fast = self._fast[g]
        if fast is None:
            q = quantize(col.unsqueeze(1), self.fmt, qparams=self.params[g])
            code_out.copy_(q.codes.reshape(-1))
            return q.dequantize().reshape(-1)
        scale_w, scale32, zp = fast
        torch.div(col, scale_w, out=code_out)
        code_out.round_()
        if zp is not None:
            code_out += zp
        code_out.clamp_(self.fmt.qmin, self.fmt.qmax)
        if col.dtype == torch.float32:
            if zp is None:
                return torch.mul(code_out, scale32, out=self._buf)
            return torch.sub(code_out, zp, out=self._buf).mul_(scale32)
        v32 = code_out.to(torch.float32)
        if zp is not None:
            v32 -= zp
        v32 *= scale32
        return v32.to(col.dtype)

    def build(self, codes: torch.Tensor, w: torch.Tensor, was_numpy: bool) -> QTensor:
        codes = codes[:, self.pos]  # back to the original column order
        scale = torch.cat([p.scale for p in self.params], dim=1)
        zp = None if self.params[0].zero_point is None else torch.cat([p.zero_point for p in self.params], dim=1)
        if self.group_size is None:
            return QTensor(
                codes,
                scale.reshape(-1),
                None if zp is None else zp.reshape(-1),
                self.fmt,
                tuple(w.shape),
                "channel",
                0,
                None,
                self.scale_dtype,
                w.dtype,
                was_numpy,
            )
        return QTensor(
            codes,
            scale,
            zp,
            self.fmt,
            tuple(w.shape),
            "group",
            0,
            self.group_size,
            self.scale_dtype,
            w.dtype,
            was_numpy,
        )


_SUB_BLOCK = 16  # columns per sub-block of the fast path's rank-1 updates


def _start_group(
    groups: _Groups, g: int, Wt: torch.Tensor, U: torch.Tensor, Err1: torch.Tensor, i2: int, rows: int
) -> None:
    """Choose group ``g``'s grid from its current values as its first column comes up in
    the block ending at ``i2``: the block's columns hold their updated values; columns
    after the block still miss the block's errors ``Err1`` (zero for the rows not yet
    processed)."""
    i1 = i2 - Err1.shape[0]
    pos = groups.positions(g)
    cur = torch.empty(pos.numel(), rows, dtype=Wt.dtype, device=Wt.device)
    inside = pos < i2
    cur[inside] = Wt[pos[inside]]
    later = pos[~inside]
    if later.numel():  # columns after this block still miss its updates
        cur[~inside] = Wt[later] - U[i1:i2, later].T @ Err1
    groups.start(g, cur.T)


def _code_buffer(fmt, rows: int, cols: int, device: torch.device) -> torch.Tensor:
    return torch.empty(rows, cols, dtype=fmt.code_dtype, device=device)


# --------------------------------------------------------------------------- blocked


def gptq_quantize_weight(
    W: ArrayLike,
    H: ArrayLike,
    fmt: SchemeLike = "int4",
    *,
    group_size: Optional[int] = 128,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
    symmetric: bool = True,
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
    blocked: bool = True,
) -> GPTQResult:
    """Quantize a Linear weight with GPTQ (blocked, lazy batch updates).

    Args:
        W: weight ``(out_features, in_features)``, float numpy array or torch tensor.
        H: Hessian ``(in_features, in_features)``, e.g. ``hessian(X)`` = ``2 X^T X / n``.
        fmt: target format (``"int4"``, ``"int3"``, ``"nf4"``, ...), or a
            :class:`~quantlab.core.scheme.QuantScheme` (per group or per output row) that also
            gives ``group_size``, ``symmetric`` and ``scale_dtype``.
        group_size: input columns sharing one scale per row (must divide ``in_features``),
            or None for one scale per row (per-channel).
        block_size: columns per lazy-update block (any positive int; 128 in the paper).
        damp: fraction of the mean diagonal of ``H`` added to its diagonal (> 0).
        act_order: visit columns by decreasing ``diag(H)``.
        symmetric: absmax scales (True) or min/max scales with zero points (False).
        scale_dtype: ``"fp32"``, ``"fp16"`` or ``"bf16"`` scales.
        blocked: False runs :func:`gptq_reference` (the column-by-column loop).

    Returns:
        A :class:`GPTQResult` (``.qtensor``, ``.weight``, ``.perm``, ``.loss``).

    Raises:
        TypeError: a non-float ``W``/``H``, or an argument of the wrong type.
        ValueError: ``W`` not 2-d, ``H`` of the wrong shape, NaN/inf, ``group_size`` not
            dividing ``in_features``, ``block_size``/``group_size``/``damp`` not positive,
            or ``H`` not positive definite even after damping.
    """
    fmt, group_size, symmetric, scale_dtype = _recipe(fmt, group_size, symmetric, scale_dtype, "gptq_quantize_weight")
    if not blocked:
        return gptq_reference(
            W,
            H,
            fmt,
            group_size=group_size,
            damp=damp,
            act_order=act_order,
            symmetric=symmetric,
            scale_dtype=scale_dtype,
        )
    return _gptq_blocked(W, H, fmt, group_size, block_size, damp, act_order, symmetric, scale_dtype)


def _gptq_blocked(
    W, H, fmt, group_size, block_size, damp, act_order, symmetric, scale_dtype, factor=None
) -> GPTQResult:
    """The blocked algorithm; ``factor`` reuses :func:`_factor`'s output for this ``H``."""
    fmt, w, was_numpy, Wk, U, perm, group_size, block_size, loss_scale = _prepare(
        W, H, fmt, group_size, block_size, damp, act_order, symmetric, scale_dtype, factor
    )
    rows, cols = Wk.shape
    groups = _Groups(Wk, fmt, group_size, perm, symmetric, scale_dtype)
    # Work on the transpose: column q of W is the contiguous row q of Wt, so rounding a
    # column and the rank-1 updates touch contiguous memory. Buffers are allocated once
    # and the loop over columns works on views of them, in place.
    Wt = Wk.T.contiguous()
    Qt = torch.empty_like(Wt)  # the codes, as floats of the working dtype
    Et = torch.zeros_like(Wt)  # the scaled errors e of each column
    tmp = torch.empty(rows, dtype=Wt.dtype, device=Wt.device)
    d_all = torch.diagonal(U).clone()
    diag = d_all.tolist()
    gid = groups.group_ids
    # Fast path (float32, symmetric integer grids): the loop computes only what the
    # next columns need, r = w - clamp(round(w / s)) * s, and updates them with the row
    # [H^-1]_{q, q+1:} / [H^-1]_qq; the codes and the errors e = r / [H^-1]_qq of the
    # whole block follow at its end in one pass each. A quantized column is never
    # updated again, so the block's rows of Wt still hold the values it rounded, and
    # the element-wise operations give the same codes as rounding column by column.
    # inference mode: torch skips autograd's bookkeeping for the many small ops and views
    # of the loop (all buffers were created outside it and stay ordinary tensors)
    with torch.inference_mode():
        fast_ok = isinstance(fmt, IntFormat) and Wt.dtype == torch.float32
        qmin, qmax = (fmt.qmin, fmt.qmax) if fast_ok else (0, 0)
        loss = 0.0
        for i1 in range(0, cols, block_size):
            i2 = min(i1 + block_size, cols)
            n = i2 - i1
            W1 = Wt[i1:i2]  # the block, updated in place
            Err1 = Et[i1:i2]
            d1 = d_all[i1:i2].unsqueeze(1)
            fast = fast_ok
            if fast:  # every group of the block must be started before its first column;
                # with group starts inside the block, use the column-by-column path
                fast = all(groups.params[g] is not None or gid.index(g, i1, i2) == i1 for g in set(gid[i1:i2]))
                if fast:
                    for g in set(gid[i1:i2]):
                        if groups.params[g] is None:
                            _start_group(groups, g, Wt, U, Err1, i2, rows)
                    fast = all(groups._fast[g] is not None and groups._fast[g][2] is None for g in set(gid[i1:i2]))
            if fast:
                # [H^-1]_{q, q+1:} / [H^-1]_qq, zero on and below the diagonal
                Us = torch.triu(U[i1:i2, i1:i2], diagonal=1).div_(d1)
                g_cur, scale = -1, None
                # Two levels of lazy updates: rank-1 updates only inside sub-blocks of
                # _SUB_BLOCK columns (their residuals r wait in Err1), then one product per
                # sub-block for the rest of the block. Each rank-1 update spans the whole
                # sub-block: the zeros of Us leave the rows already quantized unchanged.
                for j1 in range(0, n, _SUB_BLOCK):
                    j2 = min(j1 + _SUB_BLOCK, n)
                    Wsub = W1[j1:j2]
                    for w_col, r, u_row, p in zip(Wsub, Err1[j1:j2], Us[j1:j2, j1:j2], range(i1 + j1, i1 + j2)):
                        g = gid[p]
                        if g != g_cur:
                            g_cur, scale = g, groups._fast[g][0]
                        torch.div(w_col, scale, out=tmp)
                        tmp.round_().clamp_(qmin, qmax)
                        tmp.mul_(scale)
                        torch.sub(w_col, tmp, out=r)  # r = w - Q(w)
                        Wsub.addr_(u_row, r, alpha=-1)  # W[:, q+1:] -= r [H^-1]_{q, q+1:} / [H^-1]_qq
                    if j2 < n:
                        W1[j2:].addmm_(Us[j1:j2, j2:].T, Err1[j1:j2], alpha=-1)
                S = (
                    torch.stack([groups._fast[g][0] for g in gid[i1:i2]])
                    if len(set(gid[i1:i2])) > 1
                    else groups._fast[gid[i1]][0].expand(n, rows)
                )
                Q1 = Qt[i1:i2]
                torch.div(W1, S, out=Q1)
                Q1.round_().clamp_(fmt.qmin, fmt.qmax)
                torch.mul(Q1, S, out=Err1)
                torch.sub(W1, Err1, out=Err1)
                Err1 /= d1
            else:
                U1 = U[i1:i2, i1:i2]
                for i in range(n):
                    p = i1 + i
                    g = gid[p]
                    if groups.params[g] is None:  # the group starts here: its current values
                        _start_group(groups, g, Wt, U, Err1, i2, rows)
                    w_col = W1[i]
                    q = groups.quantize_column(w_col, g, Qt[p])
                    err = Err1[i]
                    torch.sub(w_col, q, out=err)
                    err /= diag[p]
                    if i + 1 < n:  # W[:, q+1:] -= e [H^-1]_{q, q+1:} within the block
                        W1[i + 1 :].addr_(U1[i, i + 1 :], err, alpha=-1)
            loss += float(Err1.square().sum()) / 2
            if i2 < cols:  # the lazy batch update of all later columns: one matrix product
                Wt[i2:].addmm_(U[i1:i2, i2:].T, Err1, alpha=-1)
    codes_t = Qt.to(fmt.code_dtype)
    codes = codes_t.T
    qt = groups.build(codes, w, was_numpy)
    return GPTQResult(qt, qt.dequantize(), _perm_out(perm, was_numpy), loss * loss_scale)


def _perm_out(perm: Optional[torch.Tensor], was_numpy: bool) -> Optional[ArrayLike]:
    return None if perm is None else like_input(perm, was_numpy)


def gptq_reference(
    W: ArrayLike,
    H: ArrayLike,
    fmt: SchemeLike = "int4",
    *,
    group_size: Optional[int] = 128,
    damp: float = 0.01,
    act_order: bool = False,
    symmetric: bool = True,
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
) -> GPTQResult:
    """GPTQ as a plain column-by-column loop: after each column, update all later columns.

    Same arguments, result and errors as :func:`gptq_quantize_weight` (no ``block_size``);
    it does ``in_features`` full-width rank-1 updates instead of lazy blocks, so it is
    slower and exists as the readable reference the blocked version is tested against.
    """
    fmt, group_size, symmetric, scale_dtype = _recipe(fmt, group_size, symmetric, scale_dtype, "gptq_reference")
    return _gptq_columns(W, H, fmt, group_size, damp, act_order, symmetric, scale_dtype)


def _gptq_columns(W, H, fmt, group_size, damp, act_order, symmetric, scale_dtype, factor=None) -> GPTQResult:
    """The column loop; ``factor`` reuses :func:`_factor`'s output for this ``H``."""
    fmt, w, was_numpy, Wk, U, perm, group_size, _, loss_scale = _prepare(
        W, H, fmt, group_size, 1, damp, act_order, symmetric, scale_dtype, factor
    )
    rows, cols = Wk.shape
    groups = _Groups(Wk, fmt, group_size, perm, symmetric, scale_dtype)
    codes = _code_buffer(fmt, rows, cols, Wk.device)
    loss = 0.0
    for p in range(cols):
        g = groups.group_ids[p]
        if groups.params[g] is None:  # the group starts: choose its grid from current values
            groups.start(g, Wk[:, groups.positions(g)])
        w_col = Wk[:, p : p + 1]
        qt = quantize(w_col, fmt, qparams=groups.params[g])  # the library's quantizer
        codes[:, p : p + 1] = qt.codes
        err = (w_col - qt.dequantize()) / U[p, p]
        loss += float((err * err).sum()) / 2
        Wk[:, p:] -= err @ U[p : p + 1, p:]  # spread the error over all later columns
    qt = groups.build(codes, w, was_numpy)
    return GPTQResult(qt, qt.dequantize(), _perm_out(perm, was_numpy), loss * loss_scale)


def output_error(W: ArrayLike, W_hat: ArrayLike, H: ArrayLike) -> float:
    """The layer-output error GPTQ minimises: ``tr(dW H dW^T)`` with ``dW = W - W_hat``.

    With ``H = 2 X^T X / n`` this is twice the mean over calibration rows of the squared
    output error ``||x dW^T||^2``.

    Raises:
        ValueError: shapes that do not fit ``(out, in)``, ``(out, in)``, ``(in, in)``.
    """
    w, _ = as_tensor(W, "W")
    wh, _ = as_tensor(W_hat, "W_hat")
    h, _ = as_tensor(H, "H")
    for t, name in ((w, "W"), (wh, "W_hat"), (h, "H")):
        require_float(t, name)
    if w.dim() != 2 or wh.shape != w.shape:
        raise ValueError(f"W and W_hat must be 2-d of the same shape, got {tuple(w.shape)} and {tuple(wh.shape)}")
    if h.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"H must be ({w.shape[1]}, {w.shape[1]}), got shape {tuple(h.shape)}")
    dw = w.double() - wh.double()
    return float(((dw @ h.double()) * dw).sum())


# --------------------------------------------------------------------------- models

_FACTOR_CACHE: weakref.WeakKeyDictionary[LayerStats, dict] = weakref.WeakKeyDictionary()


def _rows(res: GPTQResult, r0: int, r1: int) -> GPTQResult:
    """The rows ``r0:r1`` of a result (one layer of a stacked batch)."""
    q = res.qtensor
    zp = None if q.zero_point is None else q.zero_point[r0:r1].clone()
    qt = QTensor(
        q.codes[r0:r1].clone(),
        q.scale[r0:r1].clone(),
        zp,
        q.format,
        (r1 - r0, *q.shape[1:]),
        q.granularity,
        q.axis,
        q.group_size,
        q.scale_dtype,
        q.dtype,
        q.was_numpy,
    )
    return GPTQResult(qt, qt.dequantize(), res.perm, float("nan"))


def gptq_quantize_model(
    model: torch.nn.Module,
    run: Callable[[torch.nn.Module], object],
    fmt: SchemeLike = "int4",
    *,
    group_size: Optional[int] = 128,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
    symmetric: bool = True,
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
    layers: Optional[Iterable[str]] = None,
    stats: Optional[dict[str, LayerStats]] = None,
    replace_weights: bool = True,
    progress: bool = True,
) -> dict[str, GPTQResult]:
    """GPTQ over a model's Linear layers, with Hessians from calibration inputs.

    The inputs of every chosen layer are captured with forward hooks during one call of
    ``run(model)`` on the *unquantized* model (:func:`quantlab.calibration.collect_layer_stats`).
    The paper's reference code instead quantizes block by block and feeds each block the
    outputs of the already-quantized blocks before it; capturing everything in one pass is
    simpler and, for the 4-bit settings of the chapter, loses little.

    Args:
        model: a torch module; its ``nn.Linear`` weights are quantized.
        run: ``run(model)`` feeds the calibration data through the model.
        fmt, group_size, block_size, damp, act_order, symmetric, scale_dtype:
            see :func:`gptq_quantize_weight`.
        layers: names of the Linear layers to quantize (default: all but one named
            ``lm_head``, a language model's output head, which is often tied to the token
            embeddings; :func:`quantlab.nn.quantize_model` skips it too).
        stats: statistics from an earlier ``collect_layer_stats`` (then ``run`` is not
            called and may be None), e.g. to quantize to several formats from one pass.
        replace_weights: write each ``result.weight`` into the layer (in place), so the
            model computes with the quantized values ("fake quantization"); packed storage
            comes from ``result.qtensor``.
        progress: show a progress bar over layers.

    Returns:
        ``{layer name: GPTQResult}``.

    Raises:
        TypeError, ValueError: see :func:`collect_layer_stats` and :func:`gptq_quantize_weight`.
    """
    fmt, group_size, symmetric, scale_dtype = _recipe(fmt, group_size, symmetric, scale_dtype, "gptq_quantize_model")
    from tqdm.auto import tqdm

    _check_damp(damp, act_order)
    if layers is None:
        pool = linear_layer_names(model) if stats is None else list(stats)
        layers = [n for n in pool if n != "lm_head"]
    names = list(layers)
    if stats is None:
        stats = collect_layer_stats(model, run, names)
    modules = dict(model.named_modules())
    for name in names:
        if name not in stats:
            raise ValueError(f"stats has no entry for layer {name!r}")
    # Layers that share an input share H; GPTQ treats rows independently, so their
    # weights are stacked and quantized in one call (same result, fewer column steps).
    batches: list[list[str]] = []
    for name in names:
        if batches and stats[batches[-1][0]] is stats[name]:
            batches[-1].append(name)
        else:
            batches.append([name])
    results: dict[str, GPTQResult] = {}
    bar = tqdm(total=len(names), desc=f"GPTQ {get_format(fmt).name}", disable=not progress)
    for batch in batches:
        st = stats[batch[0]]
        H = st.hessian
        lins = [modules[n] for n in batch]
        weights = [lin.weight.detach().float() for lin in lins]
        # H's Cholesky factor is kept with the statistics, so quantizing the same model to
        # another format from the same statistics does not factor H again.
        cache = _FACTOR_CACHE.setdefault(st, {})
        key = (st.n, float(damp), bool(act_order))
        if key not in cache:
            cache[key] = _factor(H, damp, act_order, torch.float32)
        with torch.no_grad():
            res = _gptq_blocked(
                torch.cat(weights) if len(weights) > 1 else weights[0],
                H,
                fmt,
                group_size,
                block_size,
                damp,
                act_order,
                symmetric,
                scale_dtype,
                cache[key],
            )
            row = 0
            for name, lin, w in zip(batch, lins, weights):
                part = res if len(batch) == 1 else _rows(res, row, row + w.shape[0])
                row += w.shape[0]
                if replace_weights:
                    lin.weight.copy_(part.weight.to(lin.weight.dtype))
                results[name] = part
        bar.update(len(batch))
    bar.close()
    return results
