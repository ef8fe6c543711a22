"""Tests for quantlab.gptq: error below round-to-nearest on a known Hessian, the blocked
version against the column loop and against a transcription of the reference code,
act-order, dead inputs, the model helper, and every error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quantlab.calibration import hessian
from quantlab.gptq import gptq_quantize_model, gptq_quantize_weight, gptq_reference, output_error

import quantlab as ql


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    """Tests here seed torch's global generator (for nn.Linear's initialisation): give
    the generator back to later tests as they found it."""
    with torch.random.fork_rng(devices=[]):
        yield


def _layer(seed: int, rows: int = 48, cols: int = 256, n: int = 512, dtype=torch.float64):
    """A weight and a Hessian from correlated inputs with uneven feature scales."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=dtype) / cols**0.5 + torch.eye(cols, dtype=dtype)
    X = torch.randn(n, cols, generator=g, dtype=dtype) @ mix
    X *= torch.rand(cols, generator=g, dtype=dtype) * 3 + 0.1
    W = torch.randn(rows, cols, generator=g, dtype=dtype) * 0.05
    return W, X, hessian(X)


def _reference_transcription(W, H, bits, groupsize, blocksize=128, percdamp=0.01):
    """IST-DASLab gptq.py ``fasterquant`` (symmetric absmax grid), transcribed in float64."""
    W = W.clone()
    H = H.clone()
    maxq = 2 ** (bits - 1) - 1
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Q = torch.zeros_like(W)
    idx = torch.arange(H.shape[0])
    H[idx, idx] += percdamp * torch.mean(torch.diag(H))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, W.shape[1], blocksize):
        i2 = min(i1 + blocksize, W.shape[1])
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            if (i1 + i) % groupsize == 0:
                scale = (W[:, i1 + i : i1 + i + groupsize].abs().amax(1) / maxq).float().double()
            q = torch.clamp(torch.round(w / scale), -maxq - 1, maxq)
            q = (q.float() * scale.float()).double()
            Q[:, i1 + i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q


# ----------------------------------------------------------------- known answers


def test_hessian_known_answer():
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    H = hessian(X)
    assert isinstance(H, np.ndarray) and H.dtype == np.float64  # numpy in, numpy out
    np.testing.assert_allclose(H, [[1.0, 0.0], [0.0, 4.0]])


def test_output_error_known_answer():
    assert output_error(np.array([[1.0, 2.0]]), np.zeros((1, 2)), np.diag([2.0, 3.0])) == 14.0


def test_diagonal_hessian_gives_round_to_nearest():
    """With no correlation between inputs there is nothing to compensate: GPTQ is RTN."""
    W, _, _ = _layer(0)
    H = torch.diag(torch.linspace(0.5, 2.0, W.shape[1], dtype=W.dtype))
    res = gptq_quantize_weight(W, H, "int4", group_size=64)
    rtn = ql.quantize(W, "int4", granularity="group", group_size=64, scale_dtype="fp16")  # GPTQ's default
    assert torch.equal(res.qtensor.codes, rtn.codes)
    assert torch.equal(res.weight, rtn.dequantize())


# ----------------------------------------------------------------- GPTQ beats RTN


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fmt, group_size", [("int4", 128), ("int3", 64), ("int4", None), ("nf4", 64)])
def test_output_error_below_round_to_nearest(seed, fmt, group_size):
    W, _, H = _layer(seed)
    res = gptq_quantize_weight(W, H, fmt, group_size=group_size)
    kw = dict(granularity="group", group_size=group_size) if group_size else dict(granularity="channel")
    rtn = ql.fake_quantize(W, fmt, **kw)
    assert output_error(W, res.weight, H) < 0.9 * output_error(W, rtn, H)


def test_act_order_beats_rtn_and_keeps_contiguous_groups():
    W, _, H = _layer(3)
    res = gptq_quantize_weight(W, H, "int4", group_size=64, act_order=True)
    assert torch.equal(res.perm, torch.argsort(torch.diagonal(H), descending=True, stable=True))
    q = res.qtensor
    assert q.granularity == "group" and q.group_size == 64 and q.scale.shape == (W.shape[0], 4)
    assert torch.equal(q.dequantize(), res.weight)
    rtn = ql.fake_quantize(W, "int4", granularity="group", group_size=64)
    assert output_error(W, res.weight, H) < output_error(W, rtn, H)


# ----------------------------------------------------------------- blocked vs column loop


@pytest.mark.parametrize(
    "group_size, block_size, act_order, symmetric",
    [
        (128, 128, False, True),
        (32, 128, False, True),
        (128, 32, False, False),
        (64, 50, True, True),
        (None, 100, True, False),
        (256, 7, False, True),
    ],
)
def test_blocked_equals_column_loop(group_size, block_size, act_order, symmetric):
    W, _, H = _layer(4)
    kw = dict(group_size=group_size, act_order=act_order, symmetric=symmetric)
    fast = gptq_quantize_weight(W, H, "int4", block_size=block_size, **kw)
    slow = gptq_reference(W, H, "int4", **kw)
    assert torch.equal(fast.qtensor.codes, slow.qtensor.codes)
    assert torch.equal(fast.qtensor.scale, slow.qtensor.scale)
    torch.testing.assert_close(fast.weight, slow.weight, rtol=0, atol=0)
    assert fast.loss == pytest.approx(slow.loss, rel=1e-9)
    assert gptq_quantize_weight(W, H, "int4", blocked=False, **kw).loss == slow.loss


def test_blocked_float32_close_to_column_loop():
    W, _, H = _layer(5, dtype=torch.float32)
    fast = gptq_quantize_weight(W, H, "int4")
    slow = gptq_reference(W, H, "int4")
    mismatch = (fast.qtensor.codes != slow.qtensor.codes).float().mean().item()
    assert mismatch < 1e-3  # float32 sums in another order may flip a rare tie
    assert output_error(W, fast.weight, H) == pytest.approx(output_error(W, slow.weight, H), rel=1e-2)


def test_matches_transcribed_reference_code():
    W, _, H = _layer(6, cols=384)
    ours = gptq_quantize_weight(W, H, "int4", group_size=128, block_size=128, scale_dtype="fp32")  # as transcribed
    ref = _reference_transcription(W, H, bits=4, groupsize=128)
    torch.testing.assert_close(ours.weight, ref, rtol=0, atol=1e-12)


# ----------------------------------------------------------------- the result


def test_result_is_a_packed_qtensor_like_rtn():
    W, _, H = _layer(7)
    res = gptq_quantize_weight(W.float(), H.float(), "int4", group_size=128, scale_dtype="fp16")
    rtn = ql.quantize(W.float(), "int4", granularity="group", group_size=128, scale_dtype="fp16")
    assert res.qtensor.nbytes == rtn.nbytes
    assert res.qtensor.codes.dtype == rtn.codes.dtype
    assert int(res.qtensor.codes.min()) >= -8 and int(res.qtensor.codes.max()) <= 7
    assert torch.equal(res.qtensor.scale, res.qtensor.scale.half().float())  # exact in fp16
    assert res.weight.dtype == torch.float32


def test_numpy_in_numpy_out():
    W, _, H = _layer(8)
    res = gptq_quantize_weight(W.numpy(), H.numpy(), "int4", group_size=64)
    assert isinstance(res.weight, np.ndarray) and res.weight.shape == W.shape
    np.testing.assert_array_equal(res.weight, res.qtensor.dequantize())


def test_dead_inputs_get_zero_weight():
    W, X, _ = _layer(9)
    X[:, [3, 200]] = 0
    res = gptq_quantize_weight(W, hessian(X), "int4", group_size=64)
    assert torch.all(res.weight[:, [3, 200]] == 0)
    assert torch.isfinite(res.weight).all()


# ----------------------------------------------------------------- model helper


class _Shared(torch.nn.Module):
    """Two Linears reading one tensor (like q/k/v), then a third."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(64, 32)
        self.b = torch.nn.Linear(64, 16)
        self.c = torch.nn.Linear(48, 8)

    def forward(self, x):
        return self.c(torch.relu(torch.cat([self.a(x), self.b(x)], -1)))


def test_model_helper_stacks_siblings_and_replaces_weights():
    torch.manual_seed(0)
    model = _Shared()
    originals = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    X = torch.randn(300, 64) * torch.linspace(0.2, 3, 64)
    res = gptq_quantize_model(model, lambda m: m(X), "int4", group_size=16, progress=False)
    assert list(res) == ["a", "b", "c"]
    H = hessian(X)
    for name in ("a", "b"):
        alone = gptq_quantize_weight(originals[name], H, "int4", group_size=16)
        assert torch.equal(res[name].qtensor.codes, alone.qtensor.codes)
        assert torch.equal(getattr(model, name).weight.detach(), alone.weight)
    assert torch.equal(model.c.weight.detach(), res["c"].weight)


def test_model_helper_skips_lm_head_by_default():
    model = torch.nn.Sequential()
    model.add_module("body", torch.nn.Linear(32, 32))
    model.add_module("lm_head", torch.nn.Linear(32, 100))
    head = model.lm_head.weight.detach().clone()
    res = gptq_quantize_model(model, lambda m: m(torch.randn(50, 32)), "int4", group_size=16, progress=False)
    assert list(res) == ["body"] and torch.equal(model.lm_head.weight.detach(), head)


def test_model_helper_layers_subset():
    model = _Shared()
    before = model.a.weight.detach().clone()
    res = gptq_quantize_model(
        model, lambda m: m(torch.randn(40, 64)), "int8", group_size=None, layers=["c"], progress=False
    )
    assert list(res) == ["c"] and torch.equal(model.a.weight.detach(), before)


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(W=torch.zeros(8)), ValueError, "W must be 2-d"),
        (dict(H=torch.eye(5)), ValueError, r"H must be \(16, 16\)"),
        (dict(damp=0.0), ValueError, "damp must be a positive"),
        (dict(damp=-0.1), ValueError, "damp must be a positive"),
        (dict(damp=float("nan")), ValueError, "damp must be a positive"),
        (dict(damp="1%"), TypeError, "damp must be a positive number"),
        (dict(block_size=0), ValueError, "block_size must be positive, got 0"),
        (dict(block_size=1.5), TypeError, "block_size must be a positive int"),
        (dict(group_size=3), ValueError, "group_size must divide the last dimension 16, got 3"),
        (dict(group_size=-4), ValueError, "group_size must be positive"),
        (dict(act_order="yes"), TypeError, "act_order must be True or False"),
        (dict(symmetric=None), TypeError, "symmetric must be True or False"),
        (dict(W=torch.zeros(4, 16, dtype=torch.int32)), TypeError, "W must hold real floating"),
        (dict(W=torch.full((4, 16), float("nan"))), ValueError, "W contains NaN"),
        (dict(H=-torch.eye(16)), ValueError, "not positive definite"),
        (dict(fmt="int99"), ValueError, "int99"),
    ],
)
def test_errors(kwargs, exc, match):
    args = dict(W=torch.randn(4, 16), H=torch.eye(16), fmt="int4", group_size=8)
    args.update(kwargs)
    W, H, fmt = args.pop("W"), args.pop("H"), args.pop("fmt")
    with pytest.raises(exc, match=match):
        gptq_quantize_weight(W, H, fmt, **args)


def test_errors_reference_and_output_error():
    with pytest.raises(ValueError, match="damp must be a positive"):
        gptq_reference(torch.randn(4, 16), torch.eye(16), group_size=8, damp=0)
    with pytest.raises(ValueError, match="same shape"):
        output_error(torch.zeros(2, 3), torch.zeros(3, 2), torch.eye(3))
    with pytest.raises(ValueError, match=r"H must be \(3, 3\)"):
        output_error(torch.zeros(2, 3), torch.zeros(2, 3), torch.eye(2))


def test_model_helper_errors():
    model = _Shared()
    with pytest.raises(ValueError, match="stats has no entry for layer 'zz'"):
        gptq_quantize_model(model, None, stats={}, layers=["zz"], progress=False)
    with pytest.raises(ValueError, match="nn.Linear modules"):
        gptq_quantize_model(model, lambda m: m(torch.randn(4, 64)), layers=["nope"], progress=False)
    with pytest.raises(ValueError, match="damp must be a positive finite number, got -1"):
        gptq_quantize_model(model, lambda m: m(torch.randn(4, 64)), damp=-1.0, progress=False)


def test_model_helper_reuses_the_factor_for_a_second_format():
    torch.manual_seed(3)
    model = _Shared()
    X = torch.randn(200, 64)
    from quantlab.calibration import collect_layer_stats

    stats = collect_layer_stats(model, lambda m: m(X))
    w_c = model.c.weight.detach().clone()
    gptq_quantize_model(model, None, "int4", group_size=16, stats=stats, replace_weights=False, progress=False)
    res3 = gptq_quantize_model(model, None, "int3", group_size=16, stats=stats, progress=False)
    alone = gptq_quantize_weight(w_c, stats["c"].hessian, "int3", group_size=16)
    assert torch.equal(res3["c"].qtensor.codes, alone.qtensor.codes)


def test_numpy_in_numpy_out_perm_and_weight():
    W, _X, H = _layer(4, rows=8, cols=64, n=128)
    res = gptq_quantize_weight(W.numpy(), H.numpy(), "int4", group_size=32, act_order=True)
    assert isinstance(res.weight, np.ndarray) and isinstance(res.perm, np.ndarray)
    ref = gptq_quantize_weight(W, H, "int4", group_size=32, act_order=True)
    assert isinstance(ref.perm, torch.Tensor)
    np.testing.assert_array_equal(res.perm, ref.perm.numpy())
    np.testing.assert_array_equal(res.weight, ref.weight.numpy())
    assert torch.equal(res.qtensor.codes, ref.qtensor.codes)  # QTensor codes are torch for both
