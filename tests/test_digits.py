"""quantlab.models.digits: the bundled digits data, the seeded MLP, weight quantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quantlab.models import digits
from torch import nn

import quantlab as ql


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_rng():
    """digits.train and a test here seed torch's global generator (for nn.Linear's
    initialisation): give it back to later test modules as they found it."""
    with torch.random.fork_rng(devices=[]):
        yield


@pytest.fixture(scope="module")
def data() -> digits.DigitsData:
    return digits.load_data()


@pytest.fixture(scope="module")
def model(data) -> digits.DigitsMLP:
    return digits.train(0, data)


def test_load_data_split(data):
    assert data.X_train.shape == (1257, 64) and data.X_test.shape == (540, 64)
    assert data.X_train.dtype == torch.float32 and data.y_test.dtype == torch.int64
    assert float(data.X_train.min()) == 0.0 and float(data.X_train.max()) == 1.0
    per_class = torch.bincount(torch.cat([data.y_train, data.y_test]), minlength=10)
    counts = torch.bincount(data.y_test, minlength=10)
    assert torch.all((counts - 0.3 * per_class).abs() <= 1)  # stratified: 30% of every class
    again = digits.load_data()
    assert torch.equal(again.X_test, data.X_test)
    assert not torch.equal(digits.load_data(split_seed=1).X_test, data.X_test)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(test_size=0), ValueError, "test_size must be in \\(0, 1\\), got 0"),
        (dict(test_size="0.3"), TypeError, "test_size must be a number"),
        (dict(split_seed=-2), ValueError, "split_seed must be a non-negative int, got -2"),
    ],
)
def test_load_data_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        digits.load_data(**kwargs)


def test_model_shape():
    m = digits.DigitsMLP()
    assert m(torch.zeros(5, 64)).shape == (5, 10)
    assert sum(p.numel() for p in m.parameters()) == 64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    with pytest.raises(ValueError, match="hidden must be positive, got 0"):
        digits.DigitsMLP(0)


def test_training_is_seeded_and_learns(data, model):
    again = digits.train(0, data)
    other = digits.train(1, data)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(model.net[0].weight, other.net[0].weight)
    assert digits.accuracy(model, data.X_test, data.y_test) > 0.94
    assert not model.training


def test_training_restores_the_thread_count(data):
    before = torch.get_num_threads()
    digits.train(0, data, epochs=1, num_threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(seed=-1), ValueError, "seed must be a non-negative int, got -1"),
        (dict(epochs=0), ValueError, "epochs must be positive, got 0"),
        (dict(batch_size=2.5), TypeError, "batch_size must be a positive int"),
        (dict(lr=0.0), ValueError, "lr must be a positive number, got 0.0"),
        (dict(data="digits"), TypeError, "data must be a DigitsData, got str"),
    ],
)
def test_train_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        digits.train(**kwargs)


def test_accuracy_known_answer():
    class Fixed(nn.Module):
        def forward(self, x):
            return x

    X = torch.eye(3)  # arg-max of row i is i
    assert digits.accuracy(Fixed(), X, torch.tensor([0, 1, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same number of examples, got 3 and 2"):
        digits.accuracy(Fixed(), X, torch.tensor([0, 1]))


def test_quantize_weights_rounds_weights_only(model):
    before = [p.clone() for p in model.parameters()]
    q = digits.quantize_weights(model, "int4")
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)  # the original is untouched
    for layer, qlayer in zip(model.net, q.net):
        if isinstance(layer, nn.Linear):
            assert torch.equal(qlayer.bias, layer.bias)
            assert torch.equal(qlayer.weight, ql.fake_quantize(layer.weight.detach(), "int4"))
            levels = torch.unique(qlayer.weight)
            assert levels.numel() <= 15  # symmetric int4: codes -7..7 (-8 unused)
    qc = digits.quantize_weights(model, "int4", granularity="channel")
    w = model.net[0].weight.detach()
    assert torch.equal(qc.net[0].weight, ql.fake_quantize(w, "int4", granularity="channel", axis=0))


def test_quantize_weights_errors(model):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        digits.quantize_weights({}, "int8")
    with pytest.raises(ValueError, match="model has no nn.Linear layer"):
        digits.quantize_weights(nn.ReLU(), "int8")
    with pytest.raises(ValueError, match="granularity must be one of"):
        digits.quantize_weights(model, "int8", granularity="row")


def test_eight_bits_keep_accuracy_two_bits_per_tensor_lose_it(data, model):
    base = digits.accuracy(model, data.X_test, data.y_test)
    int8 = digits.accuracy(digits.quantize_weights(model, "int8"), data.X_test, data.y_test)
    int2 = digits.accuracy(digits.quantize_weights(model, "int2"), data.X_test, data.y_test)
    assert abs(base - int8) < 0.01
    assert int2 < base - 0.3


def test_accuracy_vs_bits_rows(data):
    rows = digits.accuracy_vs_bits(bits=(8, 2), seeds=(0, 1), data=data, epochs=2)
    assert len(rows) == 2 * (1 + 2 * 2)
    assert rows[0]["granularity"] == "fp32" and rows[0]["bits"] == 32 and rows[0]["seed"] == 0
    assert [(r["bits"], r["granularity"]) for r in rows[1:5]] == [
        (8, "tensor"),
        (8, "channel"),
        (2, "tensor"),
        (2, "channel"),
    ]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bits=()), "must be non-empty"),
        (dict(bits=(1,)), "bits must be ints from 2 to 16, got 1"),
        (dict(granularities=("group",)), "granularities must be 'tensor' or 'channel', got 'group'"),
        (dict(seeds=(-1,)), "seed must be a non-negative int, got -1"),
    ],
)
def test_accuracy_vs_bits_errors(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        digits.accuracy_vs_bits(data=data, **kwargs)


def test_summarize_known_answer():
    rows = [
        {"seed": 0, "bits": 32, "granularity": "fp32", "accuracy": 0.90},
        {"seed": 0, "bits": 4, "granularity": "tensor", "accuracy": 0.80},
        {"seed": 1, "bits": 32, "granularity": "fp32", "accuracy": 0.96},
        {"seed": 1, "bits": 4, "granularity": "tensor", "accuracy": 0.94},
    ]
    s = {(r["granularity"], r["bits"]): r for r in digits.summarize(rows)}
    r = s[("tensor", 4)]
    assert r["n"] == 2
    assert r["mean"] == pytest.approx(0.87)
    assert r["std"] == pytest.approx(np.std([0.80, 0.94], ddof=1))
    assert (r["min"], r["max"]) == (0.80, 0.94)
    assert r["drop"] == pytest.approx(((0.90 - 0.80) + (0.96 - 0.94)) / 2)
    assert s[("fp32", 32)]["drop"] == 0.0
    no_base = digits.summarize(rows[1:2])
    assert no_base[0]["drop"] is None and no_base[0]["std"] == 0.0


def test_summarize_errors():
    with pytest.raises(ValueError, match="rows must not be empty"):
        digits.summarize([])
    with pytest.raises(ValueError, match="missing 'accuracy'"):
        digits.summarize([{"seed": 0, "bits": 8, "granularity": "tensor"}])


@pytest.mark.slow
def test_written_out_adam_matches_torch_optim_adam(data):
    torch.manual_seed(0)
    a, b = digits.DigitsMLP(), digits.DigitsMLP()
    b.load_state_dict(a.state_dict())
    mine = digits._Adam(list(a.parameters()), lr=1e-2)
    ref = torch.optim.Adam(b.parameters(), lr=1e-2)
    X, y = data.X_train[:128], data.y_train[:128]
    for _ in range(25):
        nn.functional.cross_entropy(a(X), y).backward()
        mine.step()
        ref.zero_grad()
        nn.functional.cross_entropy(b(X), y).backward()
        ref.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert p.grad is None
