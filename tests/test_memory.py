"""Tests for quantlab.memory: known answers by hand, properties, and every error."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from quantlab.memory import GB, GPU, GPUS, DoubleQuant, GiB, QuantSpec

from quantlab import memory as mem

# ----------------------------------------------------------------- known answers


def test_7b_fp32_is_28_gb_and_26_1_gib():
    b = mem.weight_bytes(7e9, "fp32")
    assert b == 28e9
    assert mem.to_gb(b) == 28.0
    assert round(mem.to_gib(b), 1) == 26.1
    assert mem.format_bytes(b, "GB") == "28.0 GB"
    assert mem.format_bytes(b, "GiB") == "26.1 GiB"


@pytest.mark.parametrize(
    "fmt, bits",
    [
        ("fp32", 32),
        ("fp16", 16),
        ("bf16", 16),
        ("fp8_e4m3", 8),
        ("fp8_e5m2", 8),
        ("int8", 8),
        ("uint8", 8),
        ("int4", 4),
        ("int3", 3),
        ("uint1", 1),
        ("int16", 16),
        ("nf4", 4),
        ("fp4_e2m1", 4),
        ("fp6_e3m2", 6),
    ],
)
def test_plain_formats_have_their_bit_width(fmt, bits):
    assert mem.bits_per_weight(fmt) == bits
    assert mem.weight_bytes(1000, fmt) == 1000 * bits / 8


def test_int4_fp16_scale_per_128_is_4_125_bits():
    assert mem.bits_per_weight("int4", group_size=128, scale_dtype="fp16") == 4.125
    assert mem.weight_bytes(7e9, "int4", group_size=128) == 7e9 * 4.125 / 8


def test_gguf_q4_0_is_4_5_bits():
    assert mem.bits_per_weight("int4", group_size=32, scale_dtype="fp16") == 4.5


def test_nf4_fp32_absmax_per_64_is_4_5_bits():
    assert mem.bits_per_weight("nf4", group_size=64, scale_dtype="fp32") == 4.5


def test_nf4_double_quant_is_about_4_127_bits():
    expected = 4 + 8 / 64 + 32 / (64 * 256)
    got = mem.bits_per_weight("nf4", group_size=64, double_quant=DoubleQuant("int8", 256, "fp32"))
    assert got == expected == 4.126953125
    assert mem.bits_per_weight("nf4", 64, double_quant=True) == expected
    assert round(got, 3) == 4.127


def test_asymmetric_adds_a_zero_point():
    # GGUF Q4_1: int4 with an fp16 scale and an fp16 minimum per 32 weights = 5 bits
    assert mem.bits_per_weight("uint4", 32, "fp16", zero_point_dtype="fp16") == 5.0
    assert mem.bits_per_weight("uint8", 64, "fp32", zero_point_dtype="uint8") == 8 + 32 / 64 + 8 / 64


def test_per_channel_overhead_is_one_scale_per_row():
    in_features = 4096
    assert mem.bits_per_weight("int8", group_size=in_features, scale_dtype="fp32") == 8 + 32 / 4096


def test_double_quant_false_is_plain_scales():
    assert mem.bits_per_weight("nf4", 64, "fp32", double_quant=False) == 4.5


def test_quantspec_equals_keyword_form():
    spec = QuantSpec("int4", 128)
    assert spec.bits_per_weight() == 4.125
    assert mem.weight_bytes(1e9, spec) == mem.weight_bytes(1e9, "int4", group_size=128)
    assert str(spec) == "int4 g128"
    assert str(QuantSpec("fp16")) == "fp16"


def test_units():
    assert GB == 10**9 and GiB == 2**30
    assert mem.to_gib(2**30) == 1.0
    assert mem.format_bytes(1536 * 2**20, "GiB", digits=2) == "1.50 GiB"
    assert mem.format_bytes(5e6, "MB", 0) == "5 MB"
    assert mem.format_bytes(2**20, "MiB", 0) == "1 MiB"
    assert mem.format_bytes(7, "B", 0) == "7 B"


def test_gpu_catalog():
    assert mem.get_gpu("RTX 4090") == GPU("RTX 4090", 24, 1008, "consumer")
    assert mem.get_gpu("rtx4090").memory_bytes == 24 * 2**30
    assert mem.get_gpu("H100 80GB").memory_gib == 80
    assert mem.get_gpu("Jetson Orin Nano 8GB").kind == "edge"
    memories = [g.memory_gib for g in GPUS]
    assert memories == sorted(memories)
    assert {8, 12, 16, 24, 48, 80} <= set(memories)
    with pytest.raises(AttributeError):
        GPUS[0].memory_gib = 1  # frozen


def test_fits_with_and_without_overhead():
    # 3B in fp32 = 12 GB = 11.18 GiB: weights alone fit a 12 GiB card, with 20 % more they do not.
    assert mem.fits(3e9, "fp32", "RTX 3060", overhead=0)
    assert not mem.fits(3e9, "fp32", "RTX 3060")
    assert mem.required_bytes(3e9, "fp32") == 12e9 * 1.2
    assert mem.required_bytes(3e9, "fp32", overhead=0, extra_bytes=5.0) == 12e9 + 5
    # capacities as bytes and as GPU objects
    assert mem.fits(1e9, "int8", 1e9, overhead=0)
    assert not mem.fits(1e9, "int8", 1e9 - 1, overhead=0)
    assert mem.fits(7e9, "fp16", mem.get_gpu("RTX 4090"))


def test_13b_int4_g128_fits_an_8_gb_card():
    spec = QuantSpec("int4", 128)
    assert mem.weight_bytes(13e9, spec) == 13e9 * 4.125 / 8
    fitting = mem.gpus_that_fit(13e9, spec)
    assert fitting[0].memory_gib == 8
    assert len(fitting) == len(GPUS)
    # 13B fp16: 26 GB x 1.2 = 29.1 GiB
    assert mem.gpus_that_fit(13e9, "fp16") == [g for g in GPUS if g.memory_gib >= 40]
    assert mem.gpus_that_fit(70e9, "fp16") == []
    assert mem.gpus_that_fit(1e9, "fp32", gpus=[GPUS[0]]) == [GPUS[0]]


def test_kv_cache_llama2_7b():
    # 2 (K and V) * 32 layers * 32 heads * 128 dims * 4096 tokens * 2 bytes = 2 GiB
    assert mem.kv_cache_bytes(32, 32, 128, 4096, 1, "fp16") == 2 * 2**30
    model = mem.get_model("Llama-2-7B")
    assert model.kv_cache_bytes(4096) == 2 * 2**30
    assert model.kv_cache_bytes(4096, batch=8, dtype="int8") == 8 * 2**30
    assert mem.kv_cache_bytes(32, 32, 128, 0) == 0
    assert mem.kv_cache_bytes(32, 32, 128, 10, dtype=QuantSpec("int8")) == 2 * 32 * 32 * 128 * 10


def test_model_catalog():
    assert mem.MODEL_SIZES == (1e9, 3e9, 7e9, 13e9, 70e9)
    m = mem.get_model("llama-2-7b")
    assert (m.n_layers, m.n_heads, m.head_dim, m.hidden_size) == (32, 32, 128, 4096)
    for m in mem.MODELS:
        assert m.n_heads * m.head_dim == m.hidden_size
        assert m.n_heads % m.n_kv_heads == 0


def test_activation_estimate():
    s, b, h, a, L = 2048, 1, 4096, 32, 32
    assert mem.activation_bytes(L, h, a, s, b) == L * s * b * h * (34 + 5 * a * s / h)
    assert mem.activation_bytes(L, h, a, s, b, store_attention_scores=False) == L * s * b * h * 34


def test_training_state_adam_is_16_bytes_per_param():
    parts = mem.training_breakdown(7e9)
    assert parts == {
        "weights": 14e9,
        "adapters": 0.0,
        "gradients": 14e9,
        "master_weights": 28e9,
        "optimizer_state": 56e9,
    }
    assert mem.training_bytes(7e9) == 112e9
    # plain fp32 Adam: no separate master copy, still 16 bytes per parameter
    fp32 = mem.training_breakdown(7e9, "fp32")
    assert fp32["master_weights"] == 0 and mem.training_bytes(7e9, "fp32") == 112e9
    assert mem.training_bytes(1e9, "fp32", optimizer="sgd") == 8e9
    assert mem.training_bytes(1e9, "fp32", optimizer="sgd_momentum") == 12e9
    assert mem.training_bytes(1e9, "bf16", master_dtype=None) == 12e9


def test_training_with_adapters_on_a_quantized_base():
    spec = QuantSpec("nf4", 64, double_quant=True)
    parts = mem.training_breakdown(7e9, spec, adapter_params=40e6)
    assert parts["weights"] == 7e9 * spec.bits_per_weight() / 8
    assert parts["adapters"] == 80e6
    assert parts["gradients"] == 80e6
    assert parts["master_weights"] == 160e6
    assert parts["optimizer_state"] == 320e6


def test_rlhf_breakdown():
    full = mem.rlhf_bytes(7e9)
    assert full == {"policy": 112e9, "reference": 14e9, "reward": 14e9, "value": 112e9}
    q = QuantSpec("int4", 128)
    frozen_int4 = mem.rlhf_bytes(7e9, reference_fmt=q, reward_fmt=q)
    assert frozen_int4["reference"] == frozen_int4["reward"] == 7e9 * 4.125 / 8
    assert frozen_int4["policy"] == 112e9
    small_critic = mem.rlhf_bytes(7e9, reward_params=1e9)
    assert small_critic["reward"] == 2e9 and small_critic["value"] == 16e9
    assert mem.rlhf_bytes(7e9, reward_params=1e9, value_params=3e9)["value"] == 48e9
    lora = mem.rlhf_bytes(7e9, policy_fmt=q, value_fmt=q, reference_fmt=q, reward_fmt=q, adapter_params=1e6)
    assert lora["policy"] == 7e9 * 4.125 / 8 + 16e6


def test_weight_read_time():
    # 1B fp16 = 2 GB read at 1008 GB/s
    assert mem.weight_read_seconds(1e9, "fp16", "RTX 4090") == 2e9 / 1008e9
    gpu = mem.get_gpu("Jetson Orin Nano 8GB")
    assert mem.weight_read_seconds(1e9, "int4", gpu, group_size=128) == 1e9 * 4.125 / 8 / 68e9


# ----------------------------------------------------------------- properties

bit_formats = st.integers(1, 16).map(lambda b: f"int{b}")


@given(st.integers(1, 16), st.integers(1, 16), st.floats(0, 1e12))
def test_bytes_monotone_in_bits(b1, b2, n):
    lo, hi = sorted((b1, b2))
    assert mem.weight_bytes(n, f"int{lo}") <= mem.weight_bytes(n, f"int{hi}")
    assert mem.weight_bytes(n, f"int{lo}", 64) <= mem.weight_bytes(n, f"int{hi}", 64)


@given(bit_formats, st.integers(1, 2**16), st.integers(1, 2**16), st.sampled_from(["fp16", "fp32", "int8"]))
def test_overhead_shrinks_as_group_grows(fmt, g1, g2, scale):
    small, large = sorted((g1, g2))
    bits = mem.format_bits(fmt)
    b_small = mem.bits_per_weight(fmt, small, scale)
    b_large = mem.bits_per_weight(fmt, large, scale)
    assert b_small >= b_large > bits
    assert math.isclose(b_large - bits, mem.format_bits(scale) / large)


@given(st.integers(0, 10**12), bit_formats, st.sampled_from([None, 32, 64, 128]))
def test_bytes_linear_in_params(n, fmt, g):
    assert math.isclose(mem.weight_bytes(2 * n, fmt, g), 2 * mem.weight_bytes(n, fmt, g))


@given(st.floats(1e6, 1e11), st.floats(0, 1))
def test_fits_agrees_with_gpus_that_fit(n, overhead):
    fitting = mem.gpus_that_fit(n, "int8", overhead=overhead)
    assert fitting == [g for g in GPUS if mem.fits(n, "int8", g, overhead=overhead)]
    # a GPU that fits implies every larger one fits
    if fitting:
        assert all(g in fitting for g in GPUS if g.memory_gib >= fitting[0].memory_gib)


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [-1, -7e9, float("nan"), float("inf")])
def test_bad_n_params_value(bad):
    with pytest.raises(ValueError, match="n_params"):
        mem.weight_bytes(bad, "fp32")


@pytest.mark.parametrize("bad", ["7e9", None, True, [1]])
def test_bad_n_params_type(bad):
    with pytest.raises(TypeError, match="n_params"):
        mem.weight_bytes(bad, "fp32")


@pytest.mark.parametrize("bad", ["int17", "int0", "fp64", "float8", ""])
def test_unknown_format(bad):
    with pytest.raises(ValueError, match=f"fmt.*{bad!r}"):
        mem.bits_per_weight(bad)


def test_format_of_wrong_type():
    with pytest.raises(TypeError, match="fmt"):
        mem.bits_per_weight(4)


@pytest.mark.parametrize("bad", [0, -128])
def test_bad_group_size_value(bad):
    with pytest.raises(ValueError, match=f"group_size must be >= 1, got {bad}"):
        mem.bits_per_weight("int4", group_size=bad)


@pytest.mark.parametrize("bad", [1.5, "128", True])
def test_bad_group_size_type(bad):
    with pytest.raises(TypeError, match="group_size"):
        mem.bits_per_weight("int4", group_size=bad)


def test_unknown_scale_and_zero_point_dtypes():
    with pytest.raises(ValueError, match="scale_dtype.*'fp64'"):
        mem.bits_per_weight("int4", 128, scale_dtype="fp64")
    with pytest.raises(ValueError, match="scale_dtype.*'fp64'"):
        mem.bits_per_weight("int4", scale_dtype="fp64")
    with pytest.raises(ValueError, match="zero_point_dtype.*'int99'"):
        mem.bits_per_weight("int4", 128, zero_point_dtype="int99")


def test_scale_arguments_without_a_group():
    with pytest.raises(ValueError, match="double_quant needs a group_size"):
        mem.bits_per_weight("nf4", double_quant=True)
    with pytest.raises(ValueError, match="zero_point_dtype needs a group_size"):
        mem.bits_per_weight("uint4", zero_point_dtype="fp16")


def test_bad_double_quant():
    with pytest.raises(TypeError, match="double_quant"):
        mem.bits_per_weight("nf4", 64, double_quant="yes")
    with pytest.raises(ValueError, match="DoubleQuant.block_size must be >= 1, got 0"):
        DoubleQuant(block_size=0)
    with pytest.raises(ValueError, match="DoubleQuant.dtype.*'int42'"):
        DoubleQuant(dtype="int42")
    with pytest.raises(ValueError, match="DoubleQuant.scale_dtype.*'fp7'"):
        DoubleQuant(scale_dtype="fp7")


def test_bad_quantspec():
    with pytest.raises(ValueError, match="group_size must be a positive int, got 0"):
        QuantSpec("int4", 0)
    with pytest.raises(ValueError, match="fmt.*'int99'"):
        QuantSpec("int99")
    with pytest.raises(ValueError, match="fmt is a QuantScheme.*group_size=32"):
        mem.weight_bytes(1e9, QuantSpec("int4", 128), group_size=32)


def test_bad_units():
    with pytest.raises(ValueError, match="unit must be one of .* got 'gb'"):
        mem.format_bytes(1, "gb")
    with pytest.raises(ValueError, match="digits must be >= 0, got -1"):
        mem.format_bytes(1, "GB", -1)
    with pytest.raises(ValueError, match="nbytes must be >= 0, got -1.0"):
        mem.to_gb(-1)
    with pytest.raises(ValueError, match="nbytes"):
        mem.to_gib(float("nan"))


def test_unknown_gpu():
    with pytest.raises(ValueError, match="name must be one of .* got 'RTX 9090'"):
        mem.get_gpu("RTX 9090")
    with pytest.raises(ValueError, match="RTX 9090"):
        mem.fits(1e9, "int4", "RTX 9090")
    with pytest.raises(TypeError, match="name must be a string"):
        mem.get_gpu(4090)


def test_bad_gpu_argument():
    with pytest.raises(ValueError, match="gpu must be > 0, got 0.0"):
        mem.fits(1e9, "int4", 0)
    with pytest.raises(TypeError, match="gpu must be a GPU"):
        mem.fits(1e9, "int4", None)
    with pytest.raises(TypeError, match="gpus must hold GPU objects"):
        mem.gpus_that_fit(1e9, "int4", gpus=["RTX 4090"])
    with pytest.raises(TypeError, match="gpu must be a GPU or a GPU name"):
        mem.weight_read_seconds(1e9, "int4", 24 * GiB)
    with pytest.raises(ValueError, match="RTX 9090"):
        mem.weight_read_seconds(1e9, "int4", "RTX 9090")


def test_bad_overhead_and_extra():
    with pytest.raises(ValueError, match="overhead must be >= 0, got -0.1"):
        mem.fits(1e9, "int4", "RTX 4090", overhead=-0.1)
    with pytest.raises(ValueError, match="extra_bytes must be >= 0, got -1.0"):
        mem.required_bytes(1e9, "int4", extra_bytes=-1)


def test_unknown_model():
    with pytest.raises(ValueError, match="name must be one of .* got 'GPT-5'"):
        mem.get_model("GPT-5")
    with pytest.raises(TypeError, match="name must be a string"):
        mem.get_model(7)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(n_layers=0), ValueError, "n_layers must be >= 1, got 0"),
        (dict(n_kv_heads=-1), ValueError, "n_kv_heads must be >= 1, got -1"),
        (dict(head_dim=0), ValueError, "head_dim must be >= 1, got 0"),
        (dict(seq_len=-5), ValueError, "seq_len must be >= 0, got -5"),
        (dict(batch=0), ValueError, "batch must be >= 1, got 0"),
        (dict(seq_len=1.5), TypeError, "seq_len must be an integer"),
        (dict(dtype="fp64"), ValueError, "dtype.*'fp64'"),
    ],
)
def test_bad_kv_cache_arguments(kwargs, exc, msg):
    args = dict(n_layers=32, n_kv_heads=32, head_dim=128, seq_len=4096, batch=1, dtype="fp16")
    args.update(kwargs)
    with pytest.raises(exc, match=msg):
        mem.kv_cache_bytes(**args)


def test_bad_activation_arguments():
    with pytest.raises(ValueError, match="hidden_size must be >= 1, got 0"):
        mem.activation_bytes(32, 0, 32, 2048)
    with pytest.raises(ValueError, match="n_heads must be >= 1, got 0"):
        mem.activation_bytes(32, 4096, 0, 2048)
    with pytest.raises(TypeError, match="store_attention_scores must be True or False"):
        mem.activation_bytes(32, 4096, 32, 2048, store_attention_scores="no")


def test_bad_training_arguments():
    with pytest.raises(ValueError, match="optimizer must be one of .* got 'lion'"):
        mem.training_bytes(1e9, optimizer="lion")
    with pytest.raises(ValueError, match="full fine-tuning needs a floating-point weight_dtype.*'int4'"):
        mem.training_bytes(1e9, "int4")
    with pytest.raises(ValueError, match="full fine-tuning.*'nf4 g64'"):
        mem.training_bytes(1e9, QuantSpec("nf4", 64))
    with pytest.raises(ValueError, match="adapter_params must be >= 0, got -1.0"):
        mem.training_bytes(1e9, "int4", adapter_params=-1)
    with pytest.raises(ValueError, match="master_dtype.*'fp64'"):
        mem.training_bytes(1e9, master_dtype="fp64")
    with pytest.raises(ValueError, match="moment_dtype.*'fp64'"):
        mem.training_bytes(1e9, moment_dtype="fp64")
    with pytest.raises(ValueError, match="grad_dtype.*'fp64'"):
        mem.training_bytes(1e9, grad_dtype="fp64")
    with pytest.raises(ValueError, match="adapter_dtype.*'fp64'"):
        mem.training_bytes(1e9, "int4", adapter_params=1e6, adapter_dtype="fp64")
    with pytest.raises(ValueError, match="n_params must be >= 0"):
        mem.training_bytes(-1e9)


def test_bad_rlhf_arguments():
    with pytest.raises(ValueError, match="reward_params must be >= 0, got -1.0"):
        mem.rlhf_bytes(7e9, reward_params=-1)
    with pytest.raises(ValueError, match="value_params must be finite"):
        mem.rlhf_bytes(7e9, value_params=float("inf"))
    with pytest.raises(ValueError, match="reference_fmt.*'int99'"):
        mem.rlhf_bytes(7e9, reference_fmt="int99")
    with pytest.raises(ValueError, match="reward_fmt.*'int99'"):
        mem.rlhf_bytes(7e9, reward_fmt="int99")
    with pytest.raises(ValueError, match="full fine-tuning.*'int8'"):
        mem.rlhf_bytes(7e9, policy_fmt="int8")


# ----------------------------------------------------------------- agreement with the rest of quantlab


def test_reachable_as_ql_memory_and_takes_format_objects():
    import quantlab as ql

    assert ql.memory is mem
    assert mem.bits_per_weight(ql.get_format("int4"), 128) == 4.125
    assert mem.weight_bytes(10, ql.get_format("bf16")) == 20


@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec("int4", 128),
        QuantSpec("int4", 32),
        QuantSpec("nf4", 64, "fp32"),
        QuantSpec("uint4", 32, zero_point_dtype="uint4"),
        QuantSpec("int8", 256, "fp32"),
    ],
    ids=str,
)
def test_agrees_with_packed_qtensor_size(spec):
    """The calculator's recipe is the one quantize() takes, and its bits per weight are those of
    the real packed QTensor (rows of 256)."""
    import numpy as np

    import quantlab as ql

    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    q = ql.quantize(x, spec)
    zero_points = None if spec.symmetric else (spec.zero_point_dtype or spec.fmt.name)
    assert (
        q.bits_per_weight
        == spec.bits_per_weight(x.shape)
        == mem.bits_per_weight(spec.fmt, spec.group_size, spec.scale_dtype, zero_points)
    )
    assert q.nbytes == mem.weight_bytes(x.size, spec)
