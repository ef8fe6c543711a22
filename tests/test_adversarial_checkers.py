"""Adversarial tests of the exercise checkers (quantlab.book.exercises).

A checker must never crash on a reader's wrong answer: whatever the reader's functions
return (None, a number, a string, a ragged list, arrays of the wrong shape or dtype, NaN,
complex or object arrays, torch tensors, objects whose repr or __array__ raise) and
whatever they raise (any exception, sys.exit(), an exception whose message itself
raises), the checker returns a failed :class:`CheckResult` that says what is wrong and
renders as text, Markdown and HTML. A right answer in another numeric type still passes.

The sweep found no crash; it found three misleading diagnoses, now told apart: right
codes stored in an integer type too narrow for them (uint8 for signed codes, int8 for
8-bit unsigned ones) were reported as "outside the grid: clip them"; a scale returned in
float16 as "the scale is 0.1657715, expected 0.1657684"; a dequantize cut to integers as
"should return codes * scale". ``sys.exit()`` in the reader's code ended the checker.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.book.exercises import (
    CheckResult,
    check_asymmetric,
    check_gptq_step,
    check_pack_int4,
    check_symmetric,
)

SETTINGS = settings(max_examples=25, deadline=None)


# --------------------------------------------------------------------------- right answers


def sym_q(x, bits):
    qmax = 2 ** (bits - 1) - 1
    s = np.abs(x).max() / qmax
    return np.clip(np.round(x / s), -qmax, qmax), s


def sym_dq(codes, scale):
    return codes * scale


def asym_q(x, bits):
    top = 2**bits - 1
    lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
    s = (hi - lo) / top
    zp = int(np.clip(np.round(-lo / s), 0, top))
    return np.clip(np.round(x / s) + zp, 0, top), s, zp


def asym_dq(codes, scale, zp):
    return (codes - zp) * scale


def pack(codes):
    c = np.asarray(codes, np.int64) & 0xF
    if c.size % 2:
        c = np.append(c, 0)
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def unpack(packed, n):
    b = np.asarray(packed, np.int64)
    v = np.stack([b & 0xF, b >> 4], 1).ravel()[:n]
    return np.where(v >= 8, v - 16, v)


def step(W, H, j, qc):
    w = W[:, j].copy()
    q = qc(w)
    err = (w - q) / H[j, j]
    W[:, j] = q
    W[:, j + 1 :] -= err[:, None] * H[j, j + 1 :][None, :]
    return W


def test_right_answers_pass_in_any_numeric_type():
    for dt in (np.float64, np.float32, np.int64, np.int16):
        assert check_symmetric(lambda x, b, dt=dt: (sym_q(x, b)[0].astype(dt), sym_q(x, b)[1]), sym_dq)
        assert check_asymmetric(lambda x, b, dt=dt: (asym_q(x, b)[0].astype(dt), *asym_q(x, b)[1:]), asym_dq)
        assert check_pack_int4(pack, lambda p, n, dt=dt: unpack(p, n).astype(dt))
    assert check_symmetric(
        lambda x, b: (torch.from_numpy(sym_q(x, b)[0]), torch.tensor(sym_q(x, b)[1])),
        lambda c, s: torch.from_numpy(c) * s,
    )
    assert check_gptq_step(step)


# --------------------------------------------------------------------------- garbage


class _BrokenRepr:
    def __repr__(self):
        raise RuntimeError("repr raised")

    def __array__(self, *args, **kwargs):
        raise RuntimeError("__array__ raised")


class _BrokenLen(tuple):
    def __len__(self):
        raise RuntimeError("len raised")


class _BrokenMessage(Exception):
    def __str__(self):
        raise RuntimeError("the message raised")


_DTYPES = [np.float64, np.float32, np.float16, np.int8, np.uint8, np.int64, np.bool_, np.complex128]


@st.composite
def garbage(draw):
    kind = draw(
        st.sampled_from(
            ["none", "number", "text", "dict", "array", "tuple", "list", "torch", "broken", "generator", "huge"]
        )
    )
    if kind == "none":
        return None
    if kind == "number":
        return draw(st.one_of(st.integers(-(10**6), 10**6), st.floats(allow_nan=True, allow_infinity=True)))
    if kind == "text":
        return draw(st.text(max_size=8))
    if kind == "dict":
        return {"codes": 1}
    if kind == "generator":
        return (i for i in range(2))
    if kind == "huge":
        return (10**400, 1)
    if kind == "broken":
        return draw(
            st.sampled_from([_BrokenRepr(), _BrokenLen((1, 2)), (_BrokenRepr(), 1.0), (np.zeros(3), _BrokenRepr())])
        )
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    dtype = draw(st.sampled_from(_DTYPES))
    fill = draw(st.sampled_from([0.0, 1.5, -3.0, np.nan, np.inf, 1e300]))
    with np.errstate(all="ignore"):
        arr = np.full(shape, fill).astype(dtype)
    if kind == "array":
        return arr
    if kind == "torch":
        return torch.ones(shape, requires_grad=draw(st.booleans()))
    if kind == "list":
        return [[1, 2], [3]]  # ragged
    n = draw(st.integers(0, 4))
    return tuple(draw(st.sampled_from([arr, 1.0, None, "s", np.ones(16), 0])) for _ in range(n))


def _raiser(exc):
    def f(*args):
        raise exc

    return f


EXCEPTIONS = [
    ValueError("nope"),
    ZeroDivisionError("division by zero"),
    RecursionError(),
    MemoryError(),
    IndexError(),
    TypeError(),
    AssertionError(),
    StopIteration(),
    NotImplementedError(),
    SystemExit(1),
    _BrokenMessage(),
    KeyError("k"),
]


def _renders(r):
    assert isinstance(r, CheckResult) and not r.passed
    assert isinstance(r.message, str) and r.message.strip()
    for text in (str(r), repr(r), r._repr_html_(), r._repr_markdown_()):
        assert isinstance(text, str) and text
    assert len(r.message) < 2500


@SETTINGS
@given(garbage(), st.sampled_from(["first", "second"]))
def test_checkers_never_crash_on_garbage(value, which):
    student = lambda *args: value  # noqa: E731
    pairs = [(check_symmetric, sym_q, sym_dq), (check_asymmetric, asym_q, asym_dq), (check_pack_int4, pack, unpack)]
    for checker, right1, right2 in pairs:
        args = (student, right2) if which == "first" else (right1, student)
        _renders(checker(*args))
    _renders(check_gptq_step(student))


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_checkers_report_any_exception(exc):
    f = _raiser(exc)
    for r in (
        check_symmetric(f, sym_dq),
        check_symmetric(sym_q, f),
        check_asymmetric(f, asym_dq),
        check_asymmetric(asym_q, f),
        check_pack_int4(f, unpack),
        check_pack_int4(pack, f),
        check_gptq_step(f),
    ):
        _renders(r)
        assert "raised " + type(exc).__name__ in r.message


@SETTINGS
@given(
    st.sampled_from(
        [
            "transpose",
            "flatten",
            "extra axis",
            "drop last",
            "scalar codes",
            "scale array",
            "scale list",
            "swap outputs",
            "one output",
            "bool codes",
            "complex codes",
            "object codes",
            "nan scale",
            "negative scale",
        ]
    ),
    st.sampled_from(["symmetric", "asymmetric"]),
)
def test_wrong_shapes_and_types_are_named(mutation, which):
    right_q, right_dq = (sym_q, sym_dq) if which == "symmetric" else (asym_q, asym_dq)

    def student(x, bits):
        out = list(right_q(x, bits))
        c = out[0]
        if mutation == "transpose":
            out[0] = c.T if c.ndim == 2 else c[::-1]
        elif mutation == "flatten":
            out[0] = c.ravel()
        elif mutation == "extra axis":
            out[0] = c[None]
        elif mutation == "drop last":
            out[0] = c.ravel()[:-1]
        elif mutation == "scalar codes":
            out[0] = float(c.ravel()[0])
        elif mutation == "scale array":
            out[1] = np.full(3, out[1])
        elif mutation == "scale list":
            out[1] = [out[1], out[1]]
        elif mutation == "swap outputs":
            out[0], out[1] = out[1], out[0]
        elif mutation == "one output":
            out = out[:1]
        elif mutation == "bool codes":
            out[0] = c.astype(bool)
        elif mutation == "complex codes":
            out[0] = c.astype(complex)
        elif mutation == "object codes":
            out[0] = c.astype(object)
        elif mutation == "nan scale":
            out[1] = float("nan")
        elif mutation == "negative scale":
            out[1] = -out[1]
        return tuple(out)

    checker = check_symmetric if which == "symmetric" else check_asymmetric
    r = checker(student, right_dq)
    if mutation == "transpose" and r.passed:
        # a symmetric tensor's transpose can still agree; otherwise it must fail
        return
    _renders(r)


def test_narrow_integer_codes_are_told_apart_from_missing_clips():
    r = check_symmetric(lambda x, b: (sym_q(x, b)[0].astype(np.uint8), sym_q(x, b)[1]), sym_dq)
    _renders(r)
    assert "stored as uint8" in r.message and "signed type" in r.message and "clip" not in r.message
    r = check_asymmetric(lambda x, b: (asym_q(x, b)[0].astype(np.int8), *asym_q(x, b)[1:]), asym_dq)
    _renders(r)
    assert "stored as int8" in r.message and "np.uint8" in r.message


def test_low_precision_scales_and_integer_dequantize_are_named():
    r = check_symmetric(lambda x, b: (sym_q(x, b)[0], np.float16(sym_q(x, b)[1])), sym_dq)
    _renders(r)
    assert "rounded to float16" in r.message
    r = check_asymmetric(lambda x, b: (asym_q(x, b)[0], np.float16(asym_q(x, b)[1]), asym_q(x, b)[2]), asym_dq)
    assert "rounded to float16" in r.message
    r = check_symmetric(sym_q, lambda c, s: (c * s).astype(np.int64))
    _renders(r)
    assert "dequantize returned integers" in r.message
    r = check_asymmetric(asym_q, lambda c, s, z: ((c - z) * s).astype(np.int32))
    assert "dequantize returned integers" in r.message


def test_sys_exit_in_the_readers_code_is_reported():
    def leave(*args):
        raise SystemExit(3)

    r = check_symmetric(leave, sym_dq)
    _renders(r)
    assert "raised SystemExit: 3" in r.message and "return a value" in r.message


def test_gptq_step_garbage_and_in_place_work():
    def in_place_only(W, H, j, qc):
        step(W, H, j, qc)

    _renders(check_gptq_step(in_place_only))
    _renders(check_gptq_step(lambda W, H, j, qc: qc(W)))  # the column quantizer raises
    _renders(check_gptq_step(lambda W, H, j, qc: W.astype(np.float16)))
    assert check_gptq_step(lambda W, H, j, qc: step(W.astype(np.float32), H.astype(np.float32), j, qc))


def test_non_callables_are_a_type_error_naming_the_argument():
    with pytest.raises(TypeError, match="^quantize must be callable"):
        check_symmetric(None, sym_dq)
    with pytest.raises(TypeError, match="^unpack must be callable"):
        check_pack_int4(pack, "unpack")
