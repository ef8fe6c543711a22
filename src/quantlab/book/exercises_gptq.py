"""Checker of the GPTQ exercise: one column step, as :mod:`quantlab.gptq` does it.

:func:`check_gptq_step` -- quantize column ``j`` of ``W``, then spread its error over the
columns to its right through the upper Cholesky factor ``U`` of the damped inverse Hessian::

    err = (W[:, j] - q) / U[j, j];    W[:, j+1:] -= outer(err, U[j, j+1:])

Taught in: chapters/02b_build_it.ipynb, "Build it yourself".
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .exercises_common import (
    CheckResult,
    Fail,
    call_reader,
    require_callable,
    run_check,
    shaped_array,
    show_values,
)

__all__ = ["check_gptq_step"]

# --------------------------------------------------------------------------- GPTQ step


class _ColumnQuantizer:
    """``quantize_column(w) -> q``: round one column onto a fixed int4 grid, one scale per row.

    ``q = clip(round(w / scale), -8, 7) * scale`` with ``scale = max_k |W[r, k]| / 7`` of the
    original weight (the per-row grid :func:`quantlab.gptq.gptq_reference` uses with
    ``group_size=None``). The grid is fixed before GPTQ's corrections move the later columns,
    so an updated weight can round beyond ``-7``; int4's spare code ``-8`` then catches it, as
    in :func:`quantlab.quantize` (chapters/02b_build_it.ipynb, "One GPTQ step").
    Returns the dequantized values, same shape as ``w``.
    """

    def __init__(self, scale: np.ndarray):
        self.scale = np.asarray(scale, dtype=np.float64)

    def __call__(self, w: Any) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        rows = self.scale.size
        if w.shape not in ((rows,), (rows, 1)):
            raise ValueError(f"quantize_column expects one column W[:, j] of shape ({rows},), got shape {w.shape}")
        s = self.scale.reshape(w.shape)
        return np.clip(np.round(w / s), -8, 7) * s

    def __repr__(self) -> str:
        return "quantize_column (int4, one scale per row)"


def _gptq_cases() -> list[tuple[np.ndarray, np.ndarray, int, _ColumnQuantizer, str]]:
    rng = np.random.default_rng(11)
    cases = []
    for rows, cols, j, kind in [
        (4, 3, 0, "cholesky"),
        (4, 5, 2, "cholesky"),
        (3, 5, 2, "inverse"),
        (4, 5, 4, "cholesky"),
    ]:
        W = rng.normal(0.0, 1.0, (rows, cols))
        X = rng.normal(0.0, 0.6, (8 * cols, cols)) @ (np.eye(cols) + 0.5 * rng.normal(size=(cols, cols)))
        H = 2.0 * X.T @ X / X.shape[0]
        H += 0.01 * np.mean(np.diag(H)) * np.eye(cols)
        H_inv = np.linalg.inv(H)
        M = np.linalg.cholesky(H_inv).T if kind == "cholesky" else H_inv
        qc = _ColumnQuantizer(np.abs(W).max(axis=1) / 7)
        cases.append((W, M, j, qc, kind))
    return cases


def _ref_gptq_step(W: np.ndarray, U: np.ndarray, j: int, quantize_column: Callable) -> np.ndarray:
    """Reference: column ``j`` becomes ``q_j``; ``W[:, j+1:] -= err ⊗ U[j, j+1:]``."""
    W = np.array(W, dtype=np.float64)
    w = W[:, j].copy()
    q = quantize_column(w)
    err = (w - q) / U[j, j]
    W[:, j] = q
    W[:, j + 1 :] -= err[:, None] * U[j, j + 1 :][None, :]
    return W


def _check_gptq_case(
    gptq_step: Callable, W: np.ndarray, M: np.ndarray, j: int, qc: _ColumnQuantizer, kind: str
) -> None:
    rows, cols = W.shape
    what = (
        "the upper Cholesky factor of the inverse Hessian, as quantlab.gptq uses"
        if kind == "cholesky"
        else "the full inverse Hessian in place of its Cholesky factor"
    )
    where = f" (on a {rows}x{cols} W, j = {j}, U = {what})"
    expected = _ref_gptq_step(W, M, j, qc)
    w = W[:, j]
    q = qc(w)
    d = M[j, j]
    err = (w - q) / d

    out = call_reader(gptq_step, f"gptq_step(W, U, {j}, quantize_column)", W.copy(), M.copy(), j, qc, hint=where)
    if out is None:
        raise Fail(
            f"gptq_step returned None: return the updated W (an array of shape "
            f"{W.shape}), also if you changed W in place{where}"
        )
    got = shaped_array(out, "the W returned by gptq_step", W.shape, where)

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.allclose(a, b, rtol=1e-6, atol=1e-9))

    if j > 0 and not close(got[:, :j], W[:, :j]):
        changed = sorted({int(c) for c in np.nonzero(~np.isclose(got[:, :j], W[:, :j], rtol=1e-6, atol=1e-9))[1]})
        raise Fail(
            f"columns {changed} changed, but the columns before j = {j} are already "
            f"quantized: GPTQ never touches them again; update only W[:, j+1:] "
            f"(the row U[j, :j] is not used){where}"
        )
    later = got[:, j + 1 :]
    if not close(later, expected[:, j + 1 :]):
        row = M[j, j + 1 :][None, :]
        rest = W[:, j + 1 :]
        k = int(np.argmax(np.abs(later - expected[:, j + 1 :]).max(axis=0))) + j + 1
        ex = f"(column {k}: expected {show_values(expected[:, k], 4)}, got {show_values(got[:, k], 4)})"
        variants = [
            (
                rest,
                "the columns after j did not change: spread the rounding error of column j "
                "over them, err = (w_j - q_j) / U[j, j], W[:, j+1:] -= err[:, None] * "
                "U[j, j+1:][None, :] (row j of U; with the upper-triangular Cholesky "
                "factor, the column U[j+1:, j] is zero) ",
            ),
            (
                rest - (w - q)[:, None] * row,
                f"you forgot the division by U[j, j] = {d:.4g}: "
                f"err = (w_j - q_j) / U[j, j], then W[:, j+1:] -= err[:, None] * "
                f"U[j, j+1:][None, :] ",
            ),
            (
                rest - ((w - q) * d)[:, None] * row,
                f"you multiplied by U[j, j] = {d:.4g} instead of dividing: err = (w_j - q_j) / U[j, j] ",
            ),
            (
                rest + err[:, None] * row,
                "the update has the wrong sign: with err = (w_j - q_j) / "
                "U[j, j] (original minus quantized), the later columns are corrected by "
                "W[:, j+1:] -= err[:, None] * U[j, j+1:][None, :] ",
            ),
            (rest - ((w - q) / d**2)[:, None] * row, "you divided by U[j, j] twice: err = (w_j - q_j) / U[j, j] "),
        ]
        for variant, message in variants:
            if close(later, variant):
                raise Fail(message + ex + where)
        raise Fail(
            f"the columns after j are not updated as expected: W[:, j+1:] -= "
            f"err[:, None] * U[j, j+1:][None, :] with err = (w_j - q_j) / "
            f"U[j, j] {ex}{where}"
        )
    if not close(got[:, j], q):
        ex = f"(expected {show_values(q, 4)}, got {show_values(got[:, j], 4)})"
        if close(got[:, j], w):
            raise Fail(
                f"column j = {j} still holds its unquantized values: set W[:, j] = q_j = "
                f"quantize_column(W[:, j]) (subtracting err * U[j, j] from column j "
                f"does exactly that) {ex}{where}"
            )
        raise Fail(f"column j = {j} must hold its quantized values q_j = quantize_column(W[:, j]) {ex}{where}")


def check_gptq_step(gptq_step: Callable) -> CheckResult:
    """Check one GPTQ column step: quantize column ``j``, spread its error over the later ones.

    The reference (the update of :func:`quantlab.gptq.gptq_reference`, one column)::

        w = W[:, j];  q = quantize_column(w)
        err = (w - q) / U[j, j]
        W[:, j] = q
        W[:, j+1:] -= err[:, None] * U[j, j+1:][None, :]

    The step reads only the row ``U[j, j:]``. In GPTQ (the paper's code and
    :mod:`quantlab.gptq`) ``U`` is the upper Cholesky factor of the damped
    inverse Hessian (``U.T @ U = H^-1``): its row ``j`` is the row ``j`` of the inverse
    Hessian of the columns not yet quantized, divided by the square root of its diagonal
    entry, so ``err * U[j, k]`` with ``err = (w - q) / U[j, j]`` is the optimal-brain-surgeon
    update ``(w - q) [H_j^-1]_jk / [H_j^-1]_jj``. Running the step for ``j = 0, 1, ...``
    with ``U`` therefore gives ``gptq_reference``'s codes; for ``j = 0`` the inverse
    Hessian itself gives the same update. Setting ``W[:, j] = q`` is the same as
    including column ``j`` in the update (``W[:, j:] -= err[:, None] * U[j, j:]``), as
    the library does.

    The cases: 3- and 5-column toys, ``j`` first, middle and last, with ``U`` and (once)
    with the full symmetric inverse Hessian, where changing the columns before ``j`` shows.
    The checker passes copies of ``W`` and ``U``, so changing them in place is fine,
    as long as the result is returned.

    Mistakes recognised (each with its own message): changing already-quantized columns
    (before ``j``); not updating the later columns (or using the zero column
    ``U[j+1:, j]``); forgetting the division by ``U[j, j]``, multiplying
    by it, or dividing twice; the wrong sign; leaving column ``j`` unquantized; returning
    None or the wrong shape; exceptions.

    Args:
        gptq_step: the reader's ``gptq_step(W, U, j, quantize_column) -> W_updated``:
            ``W`` a float64 ``(rows, cols)`` array, ``U`` a ``(cols, cols)`` array,
            ``j`` the column to quantize, ``quantize_column(w) -> q`` a function that rounds
            one column ``w = W[:, j]`` onto the grid (int4, one scale per row) and returns
            the dequantized values ``q``, same shape.

    Returns:
        A :class:`CheckResult`: passed, or the first mistake found, in words.

    Raises:
        TypeError: ``gptq_step`` is not callable.
    """
    require_callable(gptq_step, "gptq_step")
    cases = _gptq_cases()

    def body() -> str:
        for W, M, j, qc, kind in cases:
            _check_gptq_case(gptq_step, W, M, j, qc, kind)
        return (
            f"gptq_step agrees with the reference on {len(cases)} steps (first, middle and "
            f"last column): W[:, j] = q_j, err = (w_j - q_j) / U[j, j], "
            f"W[:, j+1:] -= err[:, None] * U[j, j+1:][None, :]."
        )

    return run_check(body)
