"""Rotations: orthogonality, exact folding into a tiny Llama, lower RTN error after rotation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from quantlab.gptq import gptq_quantize_model
from quantlab.rotations import (
    block_hadamard,
    fold_rmsnorm,
    fold_rotation,
    gptq_rotated,
    hadamard,
    random_orthogonal,
    rotate_linear_pair,
    rtn_rotated,
)
from tiny_models import tiny_llama

import quantlab as ql

transformers = pytest.importorskip("transformers")


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.double()


def test_rotations_are_orthogonal():
    for q in (random_orthogonal(48, 3), hadamard(64), block_hadamard(576), block_hadamard(96, 32)):
        n = q.shape[0]
        np.testing.assert_allclose(q.T @ q, np.eye(n), atol=1e-12)
    assert np.array_equal(random_orthogonal(16, 1), random_orthogonal(16, 1))
    h = hadamard(4) * 2
    assert h.tolist() == [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]
    b = block_hadamard(576)
    assert np.count_nonzero(b) == 9 * 64 * 64  # 576 = 9 blocks of 64


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: block_hadamard(100, 64), "n must be a multiple of block 64, got n=100"),
        (lambda: block_hadamard(96, 48), "block must be a power of two, got 48"),
        (lambda: hadamard(12), "power of two"),
        (lambda: random_orthogonal(0), "n must be >= 1"),
        (lambda: rotate_linear_pair(np.ones((4, 3)), np.ones((2, 5)), np.eye(4)), "must chain"),
        (lambda: rotate_linear_pair(np.ones((4, 3)), np.ones((2, 4)), np.ones((4, 4))), "orthogonal"),
        (lambda: fold_rotation(torch.nn.Linear(4, 4)), "Llama-style"),
    ],
)
def test_rotation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_rotate_linear_pair_keeps_the_function():
    rng = np.random.default_rng(0)
    w1, b1, w2 = rng.standard_normal((16, 8)), rng.standard_normal(16), rng.standard_normal((4, 16))
    x = rng.standard_normal(8)
    n1, n2, nb = rotate_linear_pair(w1, w2, random_orthogonal(16, 2), b1)
    assert isinstance(n1, np.ndarray)
    np.testing.assert_allclose(n2 @ (n1 @ x + nb), w2 @ (w1 @ x + b1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["hadamard", "random"])
@pytest.mark.parametrize("tied", [True, False])
def test_fold_rotation_leaves_the_logits_unchanged(kind, tied):
    model = tiny_llama(tied=tied, random_norms=True)
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    before = _logits(model, ids)
    q = fold_rotation(model, kind=kind, seed=4)
    after = _logits(model, ids)
    assert q.shape == (64, 64)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert all(float((m.weight.detach() - 1).abs().max()) == 0 for n, m in model.named_modules() if n.endswith("norm"))
    # the residual stream really is rotated: embeddings are E Q now
    assert not torch.allclose(model.model.embed_tokens.weight, model.lm_head.weight)


def test_fold_rmsnorm_alone_keeps_the_logits():
    model = tiny_llama(tied=True, random_norms=True)
    ids = torch.arange(10).reshape(1, 10)
    before = _logits(model, ids)
    fold_rmsnorm(model)
    torch.testing.assert_close(_logits(model, ids), before, rtol=1e-5, atol=1e-5)
    assert model.config.tie_word_embeddings is False


def _outlier_weight() -> np.ndarray:
    rng = np.random.default_rng(0)
    w = 0.02 * rng.standard_normal((128, 256))
    w[:, [3, 70, 200]] *= 40.0  # a few input features with huge weights
    return w.astype(np.float32)


def test_rotation_lowers_rtn_error_on_an_outlier_layer():
    w = _outlier_weight()
    q = block_hadamard(256, 64)
    kw = dict(granularity="channel", axis=0)
    plain = ql.fake_quantize(w, "int4", **kw)
    wr = (w.astype(np.float64) @ q).astype(np.float32)
    rotated = ql.fake_quantize(wr, "int4", **kw).astype(np.float64) @ q.T  # back to the basis of w
    err_plain = np.linalg.norm(w - plain) / np.linalg.norm(w)
    err_rot = np.linalg.norm(w - rotated) / np.linalg.norm(w)
    assert err_rot < 0.5 * err_plain
    qr = random_orthogonal(256, 0)
    rand = ql.fake_quantize((w @ qr).astype(np.float32), "int4", **kw) @ qr.T
    assert np.linalg.norm(w - rand) / np.linalg.norm(w) < 0.7 * err_plain


def test_rtn_and_gptq_on_the_rotated_model():
    model = tiny_llama(tied=True, random_norms=True)
    with torch.no_grad():  # a few residual dimensions with large weights wherever they are read
        for layer in model.model.layers:
            for lin in (
                layer.self_attn.q_proj,
                layer.self_attn.k_proj,
                layer.self_attn.v_proj,
                layer.mlp.gate_proj,
                layer.mlp.up_proj,
            ):
                lin.weight[:, [5, 17]] *= 20.0
    ids = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(2))
    ref = _logits(model, ids)
    kw = dict(granularity="group", group_size=32)
    plain = ql.fake_quantized_copy(model, "int4", layers=lambda n, m: n != "lm_head", **kw)
    rot = rtn_rotated(model, "int4", **kw)
    err = lambda m: float((_logits(m, ids) - ref).pow(2).mean())  # noqa: E731
    assert err(rot) < err(plain)
    torch.testing.assert_close(_logits(model, ids), ref)  # the original is untouched
    gm, results = gptq_rotated(model, lambda m: m(ids), "int4", group_size=32)
    assert "lm_head" not in results and len(results) == 2 * 7
    g0 = copy.deepcopy(model)
    gptq_quantize_model(g0, lambda m: m(ids), "int4", group_size=32, progress=False)
    assert err(gm) < err(g0) < err(plain)
