"""Adversarial tests of the algorithms: GPTQ, AWQ, HQQ, rotations, imatrix, calibration
statistics and the KV cache.

Inputs a hostile or unlucky user gives them: empty weights and calibration sets, 0-d and
1-d tensors, NaN and infinity, huge outliers and magnitudes near the float limits,
all-equal columns, singular, indefinite, asymmetric and badly scaled Hessians, zero
calibration rows, mismatched shapes, odd group and block sizes, non-contiguous and
big-endian numpy arrays. Each either works (and the property says what holds) or raises
a ValueError/TypeError naming what is wrong.

What this sweep found and what was fixed is pinned here: Hessians of very large or very
small inputs failed to factor (GPTQ now rescales ``H`` by an exact power of four, so the
codes are those of the unscaled ``H``); a non-symmetric ``H`` was read as its lower
triangle; NaN calibration inputs gave a NaN Hessian; AWQ's scale normalisation overflowed
to zero for activations beyond ~1e34 and divided by zero for a weight without rows; HQQ
stored infinite fp16 zero points for constant groups beyond 65504 and for groups far from
0; imatrix's weighted sums overflowed for large importances; the KV cache failed on an
empty cache and returned infinity for values beyond fp16; an empty rotation failed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantlab as ql
from quantlab.algorithms import rotations as R
from quantlab.algorithms.awq import awq_quantize_weight, awq_scales
from quantlab.algorithms.calibration import LayerStats, hessian
from quantlab.algorithms.gptq import gptq_quantize_weight, gptq_reference
from quantlab.algorithms.hqq import hqq_quantize
from quantlab.algorithms.imatrix import imatrix_quantize, importance_from_activations, weighted_error
from quantlab.algorithms.kv_cache import KV_FORMATS, fake_quantize_kv
from quantlab.core.scheme import DEFAULT_SCALE_DTYPE
from quantlab.nn import QuantizedLinear

SETTINGS = settings(max_examples=25, deadline=None)
GPTQ_FMTS = ["int2", "int3", "int4", "int8", "uint4", "nf4", "fp4_e2m1", "fp8_e4m3"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@st.composite
def layers(draw):
    """A float64 weight, calibration inputs with dead columns, rank deficiency or
    all-equal columns, and a group size that divides the width (odd ones included)."""
    rows = draw(st.integers(0, 5))
    cols = draw(st.sampled_from([1, 2, 3, 5, 6, 9, 12, 15, 16]))
    n = draw(st.sampled_from([1, 2, cols, 3 * cols + 1]))  # fewer rows than columns: singular
    seed = draw(st.integers(0, 10_000))
    g = _gen(seed)
    X = torch.randn(n, cols, generator=g, dtype=torch.float64)
    kind = draw(st.sampled_from(["plain", "dead", "equal", "outlier"]))
    if kind == "dead":
        X[:, 0] = 0
    elif kind == "equal":
        X[:, :] = X[:, :1]
    elif kind == "outlier":
        X[:, -1] *= 1e4
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    if draw(st.booleans()) and rows:
        W[0] = 7.0  # an all-equal row
    group = draw(st.sampled_from([None] + [d for d in range(1, cols + 1) if cols % d == 0]))
    return W, X, group


# --------------------------------------------------------------------------- GPTQ


@SETTINGS
@given(layers(), st.sampled_from(GPTQ_FMTS), st.integers(1, 20), st.booleans(), st.booleans())
def test_gptq_on_awkward_layers(layer, name, block, act_order, symmetric):
    W, X, group = layer
    fmt = ql.get_format(name)
    if not isinstance(fmt, ql.formats.IntFormat):
        symmetric = True
    H = hessian(X)
    kw = dict(group_size=group, act_order=act_order, symmetric=symmetric)
    res = gptq_quantize_weight(W, H, name, block_size=block, **kw)
    q = res.qtensor
    assert res.weight.shape == W.shape and bool(torch.isfinite(res.weight).all())
    assert torch.equal(q.dequantize(), res.weight)
    assert math.isfinite(res.loss) and res.loss >= 0
    if isinstance(fmt, ql.formats.IntFormat) and q.codes.numel():
        assert fmt.qmin <= int(q.codes.min()) and int(q.codes.max()) <= fmt.qmax
    dead = torch.diagonal(H) == 0
    assert bool((res.weight[:, dead] == 0).all())  # inputs that never fire get weight 0
    ref = gptq_reference(W, H, name, **kw)  # the column loop, in float64: the same codes
    assert torch.equal(ref.qtensor.codes, q.codes)
    # GPTQ only uses ratios of H's entries: a power-of-four factor changes no code,
    # however large or small (before, 4^60 H overflowed and 4^-60 H underflowed). Dead
    # inputs are the exception: their H_jj is set to 1, whatever the scale of the others.
    if bool(dead.any()):
        return
    for k in (-60, 60):
        scaled = gptq_quantize_weight(W, H * 4.0**k, name, block_size=block, **kw)
        assert torch.equal(scaled.qtensor.codes, q.codes)
        assert scaled.loss == pytest.approx(res.loss * 4.0**k, rel=1e-12, abs=1e-300)


def test_gptq_float32_hessians_near_the_limits_factor():
    g = _gen(3)
    W = torch.randn(6, 16, generator=g)
    H = hessian(torch.randn(64, 16, generator=g))  # float32
    base = gptq_quantize_weight(W, H, "int4", group_size=8)
    # near float32's largest values (the mean diagonal overflowed) and among its subnormals
    # (the inverse overflowed): both were "not positive definite" before
    for k in (124, 126, -130, -140):
        big = gptq_quantize_weight(W, H * 2.0**k, "int4", group_size=8)
        assert torch.equal(big.qtensor.codes, base.qtensor.codes)
        assert big.loss == pytest.approx(base.loss * 2.0**k, rel=1e-5)


@pytest.mark.parametrize(
    "H, match",
    [
        (-torch.eye(8), "not positive definite"),
        (torch.eye(8) + torch.triu(torch.ones(8, 8), 1) * 3, "symmetric"),
        (torch.full((8, 8), float("nan")), "NaN or infinity"),
        (torch.eye(8).index_fill(0, torch.tensor([2]), float("inf")), "NaN or infinity"),
        (torch.eye(7), r"H must be \(8, 8\)"),
        (torch.eye(8, dtype=torch.int64), "floating-point"),
    ],
)
def test_gptq_refuses_hessians_that_are_not(H, match):
    W = torch.randn(4, 8, generator=_gen(0))
    with pytest.raises((ValueError, TypeError), match=match):
        gptq_quantize_weight(W, H, "int4", group_size=4)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(fmt="mxfp4"), "block-scaled"),
        (dict(group_size=3), "group_size must divide"),
        (dict(group_size=0), "group_size must be positive"),
        (dict(block_size=0), "block_size must be positive"),
        (dict(damp=0.0), "damp"),
        (dict(damp=float("nan")), "damp"),
    ],
)
def test_gptq_argument_errors_name_the_argument(kw, match):
    kw = {"group_size": 4, **kw}
    fmt = kw.pop("fmt", "int4")
    with pytest.raises(ValueError, match=match):
        gptq_quantize_weight(torch.randn(4, 8), torch.eye(8), fmt, **kw)


def test_gptq_numpy_layouts_give_the_torch_result():
    g = _gen(1)
    W = torch.randn(5, 12, generator=g)
    H = hessian(torch.randn(40, 12, generator=g))
    ref = gptq_quantize_weight(W, H, "int4", group_size=6)
    w, h = W.numpy(), H.numpy()
    for a, b in [
        (w.astype(">f4"), h.astype(">f4")),
        (np.asfortranarray(w), np.asfortranarray(h)),
        (np.repeat(w, 2, axis=1)[:, ::2], h[::-1, ::-1][::-1, ::-1]),
    ]:
        out = gptq_quantize_weight(a, b, "int4", group_size=6)
        assert torch.equal(out.qtensor.codes, ref.qtensor.codes)
        np.testing.assert_array_equal(out.weight, ref.weight.numpy())


def test_gptq_empty_weights():
    for W, H in [(torch.zeros(0, 8), torch.eye(8)), (torch.zeros(3, 0), torch.zeros(0, 0))]:
        res = gptq_quantize_weight(W, H, "int4", group_size=None)
        assert res.weight.shape == W.shape and res.loss == 0.0


# --------------------------------------------------------------------------- calibration


def test_calibration_statistics_refuse_nan_and_overflow_and_take_empty_widths():
    st_ = LayerStats()
    with pytest.raises(ValueError, match="NaN or infinity"):
        st_.add(torch.tensor([[1.0, float("nan")]]))
    assert st_.n == 0  # nothing was added
    with pytest.raises(ValueError, match="overflow float32.*float64"):
        hessian(torch.full((4, 3), 1e20))
    assert bool(torch.isfinite(hessian(torch.full((4, 3), 1e20, dtype=torch.float64))).all())
    assert hessian(torch.zeros(5, 0)).shape == (0, 0)
    with pytest.raises(ValueError, match="at least one row"):
        hessian(torch.zeros(0, 4))
    h = hessian(np.ones((3, 4), ">f4")[:, ::-1])  # big-endian, reversed
    np.testing.assert_array_equal(h, np.full((4, 4), 2.0, np.float32))


# --------------------------------------------------------------------------- AWQ


@SETTINGS
@given(
    st.integers(0, 4),
    st.sampled_from([4, 6, 8]),
    st.integers(1, 12),
    st.integers(0, 999),
    st.sampled_from([1.0, 1e-20, 1e20, 1e36]),
    st.sampled_from(["int4", "int3", "nf4", "uint4"]),
)
def test_awq_on_awkward_inputs(rows, cols, n, seed, magnitude, name):
    g = _gen(seed)
    W = torch.randn(rows, cols, generator=g)
    X = torch.randn(n, cols, generator=g) * magnitude
    X[:, 0] = X[:1, 0]  # an all-equal column
    res = awq_quantize_weight(W, X, name, group_size=2, n_grid=5)
    assert res.alpha in [k / 5 for k in range(5)]
    assert res.weight.shape == W.shape and bool(torch.isfinite(res.weight).all())
    s = res.scale
    assert bool(torch.isfinite(s).all()) and bool((s > 0).all())
    assert float(s.max() * s.min()) == pytest.approx(1.0, rel=1e-5)  # geometric normalisation
    rtn = ql.quantize(W, name, granularity="group", group_size=2, scale_dtype=DEFAULT_SCALE_DTYPE).dequantize()
    alpha0 = awq_quantize_weight(W, X, name, group_size=2, alpha=0.0)
    assert torch.equal(alpha0.weight, rtn)  # alpha = 0 is round-to-nearest
    if rows:
        assert float(res.losses.min()) <= float(res.losses[0])


def test_awq_scales_of_huge_activations_stay_normalised():
    m = torch.tensor([1e30, 1e36, 3e38, 1.0])
    s = awq_scales(m, 1.0)
    assert bool(torch.isfinite(s).all()) and bool((s > 0).all())
    assert float(s.max()) * float(s.min()) == pytest.approx(1.0, rel=1e-5)
    ordinary = torch.tensor([0.5, 2.0, 8.0])
    root = ordinary.pow(0.5)
    assert torch.equal(awq_scales(ordinary, 0.5), root / (root.max() * root.min()).sqrt())


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(X=torch.zeros(0, 8)), "at least one row"),
        (dict(X=torch.randn(3, 7)), r"\(\.\.\., 8\)"),
        (dict(X=torch.tensor(1.0)), r"\(\.\.\., 8\)"),
        (dict(X=torch.full((3, 8), float("inf"))), "NaN or infinity"),
        (dict(act_abs_mean=-torch.ones(8)), "non-negative"),
        (dict(act_abs_mean=torch.ones(1, 8)), r"shape \(8,\)"),
        (dict(alpha=1.5), "alpha"),
        (dict(group_size=3), "group_size"),
        (dict(W=[]), "non-empty"),
        (dict(W=[torch.randn(2, 8), torch.randn(2, 4)]), "share in_features"),
    ],
)
def test_awq_errors_name_the_argument(kw, match):
    args = dict(W=torch.randn(4, 8), X=torch.randn(6, 8))
    args.update(kw)
    W, X = args.pop("W"), args.pop("X")
    with pytest.raises((ValueError, TypeError), match=match):
        awq_quantize_weight(W, X, "int4", **{"group_size": 4, **args})


# --------------------------------------------------------------------------- HQQ


@SETTINGS
@given(
    st.integers(0, 3),
    st.sampled_from([1, 3, 4, 8, 12]),
    st.integers(0, 999),
    st.sampled_from(["int4", "uint4", "int2", "int8", "uint3"]),
    st.booleans(),
    st.sampled_from(["fp16", "bf16", "fp32"]),
)
def test_hqq_results_are_finite_and_on_their_grid(rows, cols, seed, name, opt, sdt):
    g = _gen(seed)
    w = torch.randn(rows, cols, generator=g)
    if rows:
        w[0] = 5.0  # a constant group
    q = hqq_quantize(w, name, None, iters=5, optimize_scale=opt, scale_dtype=sdt)
    d = q.dequantize()
    assert d.shape == w.shape and bool(torch.isfinite(d).all())
    fmt = q.format
    if q.codes.numel():
        assert fmt.qmin <= int(q.codes.min()) and int(q.codes.max()) <= fmt.qmax
    assert bool(torch.isfinite(q.scale).all()) and bool((q.scale > 0).all())
    assert bool(torch.isfinite(q.zero_point).all())
    if rows:
        assert float((d[0] - 5.0).abs().max()) <= 5.0 * 2**-6  # fp16/bf16 rounding of s, z


@pytest.mark.parametrize("c", [1e5, -4e4, 3e-3, 60000.0])
def test_hqq_constant_groups_keep_finite_zero_points(c):
    w = torch.full((2, 8), c)
    q = hqq_quantize(w, "int4", 8, scale_dtype="fp32")
    assert bool(torch.isfinite(q.zero_point).all())
    assert torch.allclose(q.dequantize(), w, rtol=1e-5, atol=0)
    if abs(c) <= 65504 * 15 / 2:  # s = |c| / 15 fits fp16 too
        q16 = hqq_quantize(w, "int4", 8)
        assert bool(torch.isfinite(q16.dequantize()).all())
        assert torch.allclose(q16.dequantize(), w, rtol=2e-3, atol=0)


def test_hqq_groups_far_from_zero_need_fp32_zero_points():
    w = 1000 + torch.rand(2, 8, generator=_gen(0)) * 1e-3
    with pytest.raises(ValueError, match="cannot hold a zero point.*scale_dtype='fp32'"):
        hqq_quantize(w, "int4", 8)
    q = hqq_quantize(w, "int4", 8, scale_dtype="fp32")
    assert float((q.dequantize() - w).abs().max()) < 2e-3


def test_hqq_shapes_and_layers():
    assert hqq_quantize(torch.zeros(3, 0), "int4", None).dequantize().shape == (3, 0)
    assert hqq_quantize(torch.randn(16), "int4", 4).dequantize().shape == (16,)
    with pytest.raises(ValueError, match="0-d"):
        hqq_quantize(torch.tensor(1.0), "int4", 4)
    with pytest.raises(ValueError, match="real-valued zero points"):
        QuantizedLinear(hqq_quantize(torch.randn(4, 8), "int4", 4))


# --------------------------------------------------------------------------- imatrix


@SETTINGS
@given(
    st.integers(0, 4),
    st.sampled_from([2, 4, 6, 8]),
    st.integers(0, 999),
    st.integers(-1000, 1023),
    st.sampled_from(["int2", "int3", "int4", "int8"]),
)
def test_imatrix_is_invariant_to_the_scale_of_importance(rows, cols, seed, k, name):
    g = _gen(seed)
    w = torch.randn(rows, cols, generator=g)
    imp = torch.rand(cols, generator=g, dtype=torch.float64) * 0.9 + 0.01
    imp[0] = 0.0  # a column that does not matter
    base = imatrix_quantize(w, imp, name, 2, scale_dtype="fp32")  # the search compares exact scales
    scaled = imp * 2.0**k  # up to 2^1000 (before: sums overflowed into NaN scales)
    if not bool(torch.isfinite(scaled).all()) or float(scaled.max()) < 1e-300:
        return
    q = imatrix_quantize(w, scaled, name, 2, scale_dtype="fp32")
    assert torch.equal(q.codes, base.codes) and torch.equal(q.scale, base.scale)
    assert bool(torch.isfinite(q.dequantize()).all())
    rtn = ql.quantize(w, name, granularity="group", group_size=2, scale_dtype="fp32").dequantize()
    assert weighted_error(w, q.dequantize(), imp) <= weighted_error(w, rtn, imp) * (1 + 1e-5) + 1e-12


def test_imatrix_with_importances_near_float64_limits():
    w = torch.randn(4, 16, generator=_gen(2))
    base = imatrix_quantize(w, None, "int8", 8)
    for value in (1e308, 1e-300):  # sums of imp * w * q overflowed to NaN scales before
        q = imatrix_quantize(w, torch.full((16,), value, dtype=torch.float64), "int8", 8)
        assert torch.equal(q.codes, base.codes) and torch.equal(q.scale, base.scale)


def test_imatrix_edges():
    assert imatrix_quantize(torch.zeros(3, 0), None, "int4", None).dequantize().shape == (3, 0)
    assert imatrix_quantize(torch.randn(16), None, "int4", 8).dequantize().shape == (16,)
    with pytest.raises(ValueError, match="overflow float64"):
        importance_from_activations(torch.full((2, 4), 1e200, dtype=torch.float64))
    with pytest.raises(ValueError, match="0-d"):
        weighted_error(torch.tensor(1.0), torch.tensor(1.0), torch.ones(1))
    with pytest.raises(ValueError, match="importance must have shape"):
        imatrix_quantize(torch.randn(2, 8), torch.ones(7), "int4", 4)
    np.testing.assert_array_equal(importance_from_activations(np.ones((3, 2), ">f8")[::-1]), [3.0, 3.0])


# --------------------------------------------------------------------------- KV cache


@SETTINGS
@given(
    st.integers(0, 2),
    st.integers(0, 9),
    st.integers(0, 9),
    st.integers(1, 12),
    st.sampled_from(KV_FORMATS),
    st.sampled_from(["channel", "token"]),
    st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    st.integers(0, 999),
)
def test_kv_cache_rounding_on_any_shape(heads, tokens, channels, group, fmt, axis, dtype, seed):
    x = (torch.randn(1, heads, tokens, channels, generator=_gen(seed)) * 3).to(dtype)
    y = fake_quantize_kv(x, fmt, axis, group)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert bool(torch.isfinite(y).all())
    if x.numel():
        # every value stays within its tensor's range, widened by the rounding of fp16
        # minimums and steps (integers) or by e4m3's half step, 2^-4 relative (fp8)
        lo, hi = float(x.float().min()), float(x.float().max())
        span = max(hi - lo, abs(lo), abs(hi))
        slack = span * (2**-4 if fmt == "fp8" else 2**-7)
        assert float(y.float().min()) >= lo - slack
        assert float(y.float().max()) <= hi + slack
    assert torch.equal(fake_quantize_kv(y, fmt, axis, group), fake_quantize_kv(y, fmt, axis, group))


@pytest.mark.parametrize("fmt", KV_FORMATS)
def test_kv_cache_refuses_what_fp16_cannot_hold(fmt):
    x = torch.randn(1, 2, 4, 8, generator=_gen(0))
    with pytest.raises(ValueError, match="NaN or infinity"):
        fake_quantize_kv(x.index_fill(2, torch.tensor([1]), float("nan")), fmt, "channel", 4)
    big = 1e6 if fmt != "fp8" else 1e8
    with pytest.raises(ValueError, match="fp16"):
        fake_quantize_kv(x * big, fmt, "token", 4)
    assert fake_quantize_kv(x[:, :, :0], fmt, "channel", 4).shape == (1, 2, 0, 8)
    assert fake_quantize_kv(x, fmt, "token", np.int64(4)).shape == x.shape


# --------------------------------------------------------------------------- rotations


@SETTINGS
@given(st.integers(0, 6), st.integers(0, 6), st.sampled_from([1, 2, 4, 8, 16]), st.integers(0, 99), st.booleans())
def test_rotated_pairs_compute_the_same_function(n, m, d, seed, numpy_be):
    g = _gen(seed)
    w1 = torch.randn(d, n, generator=g, dtype=torch.float64)
    w2 = torch.randn(m, d, generator=g, dtype=torch.float64)
    b1 = torch.randn(d, generator=g, dtype=torch.float64)
    q = R.random_orthogonal(d, seed) if seed % 2 else R.hadamard(d)
    args = (w1, w2, torch.from_numpy(q), b1)
    if numpy_be:
        args = tuple(np.asarray(a).astype(">f8") for a in args)
    n1, n2, nb = R.rotate_linear_pair(*args)
    n1, n2, nb = (torch.as_tensor(np.asarray(t)) for t in (n1, n2, nb))
    x = torch.randn(3, n, generator=g, dtype=torch.float64)
    assert torch.allclose((x @ n1.T + nb) @ n2.T, (x @ w1.T + b1) @ w2.T, rtol=1e-10, atol=1e-10)


def test_rotations_refuse_what_is_not_orthogonal_and_take_empty_pairs():
    w1, w2 = torch.zeros(0, 3), torch.zeros(2, 0)
    n1, n2, _ = R.rotate_linear_pair(w1, w2, torch.zeros(0, 0))
    assert n1.shape == (0, 3) and n2.shape == (2, 0)
    for q, match in [
        (torch.full((4, 4), float("nan")), "orthogonal"),
        (torch.ones(4, 4), "orthogonal"),
        (torch.eye(3), "4 x 4"),
    ]:
        with pytest.raises(ValueError, match=match):
            R.rotate_linear_pair(torch.randn(4, 3), torch.randn(2, 4), q)
    with pytest.raises(ValueError, match="power of two"):
        R.hadamard(12)
    with pytest.raises(ValueError, match=">= 1"):
        R.random_orthogonal(0)


def test_a_refused_rotation_leaves_the_model_unchanged():
    from tiny_models import tiny_llama

    model = tiny_llama(random_norms=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = model.model.embed_tokens.weight.shape[1]
    for q, kw, match in [
        (np.ones((d, d)), {}, "orthogonal"),
        (np.eye(d - 1), {}, f"{d} x {d}"),
        (None, {"kind": "spiral"}, "kind"),
        (None, {"block": 3}, "power of two"),
        (np.full((d, d), np.nan), {}, "orthogonal"),
    ]:
        with pytest.raises(ValueError, match=match):
            R.fold_rotation(model, q, **kw)
        after = model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items())
    q = R.random_orthogonal(d, 1).astype(">f8")  # a big-endian rotation works
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        ref = model(ids).logits
        R.fold_rotation(model, q)
        assert torch.allclose(model(ids).logits, ref, atol=1e-4)


def test_awq_and_hqq_take_numpy_arrays_in_any_layout():
    g = _gen(4)
    W, X = torch.randn(6, 16, generator=g), torch.randn(20, 16, generator=g)
    ref = awq_quantize_weight(W, X, "int4", group_size=8, n_grid=4)
    for w, x in [
        (W.numpy().astype(">f4"), X.numpy().astype(">f4")),
        (np.asfortranarray(W.numpy()), np.repeat(X.numpy(), 2, axis=1)[:, ::2]),
    ]:
        out = awq_quantize_weight(w, x, "int4", group_size=8, n_grid=4)
        assert out.alpha == ref.alpha
        np.testing.assert_array_equal(out.weight, ref.weight.numpy())
    h = hqq_quantize(W, "int4", 8)
    for w in (W.numpy().astype(">f4"), W.numpy()[::-1][::-1], np.asfortranarray(W.numpy())):
        np.testing.assert_array_equal(hqq_quantize(w, "int4", 8).dequantize(), h.dequantize().numpy())
