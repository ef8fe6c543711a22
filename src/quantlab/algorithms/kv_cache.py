"""Quantized key/value caches, KIVI style: keys per channel, values per token.

While a transformer generates, it keeps every earlier token's key and value vectors (the
KV cache); at long contexts this cache, not the weights, fills the memory. KIVI
(Liu et al., 2024) quantizes it with a split that follows where the outliers are:

* **keys per channel**: a few key channels are large for *every* token, so each channel gets
  its own scale (a min and a step), shared by a group of ``group_size`` consecutive tokens;
* **values per token**: value outliers have no fixed channel, so each token gets its own
  scale per group of ``group_size`` channels.

Integer formats (``"int8"``, ``"int4"``, ``"int2"``) are asymmetric: per group
``step = (max - min) / (2^b - 1)``, codes ``round((x - min) / step)``, stored with an fp16
step and an fp16 minimum, so ``b + 32 / group_size`` bits per element. ``"fp8"`` is
e4m3 with one fp16 absmax scale per group (``8 + 16 / group_size`` bits).

Evaluation: :func:`quantized_kv` makes a transformers model build a :func:`quantized_cache`
for every forward call that brings none, so :func:`quantlab.evaluation.perplexity` and
:func:`quantlab.evaluation.compare_to_reference` run unchanged. The cache stores the keys
(after the rotary embedding, as a real cache holds them) and values as given, and hands
attention their fake-quantized values. In one forward pass over a window every query then
sees the quantized keys and values of all tokens up to itself, its own included: a
pessimistic stand-in for generation with a fully quantized cache (KIVI keeps the most
recent tokens in full precision, and its prefill attends to unquantized values).

Taught in: chapters/04d_beyond_int4.ipynb.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Iterator, Optional

import torch

from ..core.validate import check_int

__all__ = [
    "KV_FORMATS",
    "kv_bits_per_element",
    "fake_quantize_kv",
    "quantized_cache",
    "quantized_kv",
]

KV_FORMATS = ("int8", "int4", "int2", "fp8")
"""Cache formats: asymmetric integers with an fp16 step and minimum per group, or fp8 e4m3
with an fp16 scale per group."""

_FP8_MAX = 448.0  # largest finite e4m3 value
_FP16_MAX = 65504.0  # the steps, minimums and scales are stored in fp16


def _check_fmt(fmt: str) -> str:
    if fmt not in KV_FORMATS:
        raise ValueError(f"fmt must be one of {KV_FORMATS}, got {fmt!r}")
    return fmt


def _check_group(group_size: int) -> int:
    return check_int(group_size, "group_size", minimum=1, what="an int")


def kv_bits_per_element(fmt: str, group_size: int = 32) -> float:
    """Bits per cached key or value element, scales included.

    ``b + 32 / group_size`` for ``"int<b>"`` (an fp16 step and an fp16 minimum per group),
    ``8 + 16 / group_size`` for ``"fp8"`` (one fp16 scale per group).

    Example:
        >>> kv_bits_per_element("int4", 32)
        5.0

    Taught in: chapters/04d_beyond_int4.ipynb.
    """
    _check_fmt(fmt)
    g = _check_group(group_size)
    if fmt == "fp8":
        return 8 + 16 / g
    return int(fmt[3:]) + 32 / g


def _quantize_last(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Fake-quantize groups laid out along the last axis of ``x`` (float32)."""
    if fmt == "fp8":
        amax = x.abs().amax(-1, keepdim=True)
        scale = (amax / _FP8_MAX).to(torch.float16).float()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return (x / scale).clamp(-_FP8_MAX, _FP8_MAX).to(torch.float8_e4m3fn).float() * scale
    levels = 2 ** int(fmt[3:]) - 1
    lo = x.amin(-1, keepdim=True).to(torch.float16).float()
    hi = x.amax(-1, keepdim=True)
    step = ((hi - lo) / levels).to(torch.float16).float()
    step = torch.where(step > 0, step, torch.ones_like(step))
    codes = torch.clamp(torch.round((x - lo) / step), 0, levels)
    return lo + codes * step


def fake_quantize_kv(x: torch.Tensor, fmt: str, axis: str, group_size: int = 32) -> torch.Tensor:
    """Round cached keys or values to ``fmt`` and back, in groups along one axis.

    Args:
        x: ``(..., tokens, channels)`` float tensor, e.g. ``(batch, kv_heads, seq, head_dim)``.
        fmt: one of :data:`KV_FORMATS`.
        axis: ``"channel"`` (KIVI's keys: each channel has its own scale over a group of
            ``group_size`` consecutive tokens) or ``"token"`` (KIVI's values: each token
            has its own scale over a group of ``group_size`` channels). A last group
            shorter than ``group_size`` gets its own scale.
        group_size: elements per scale, >= 1.

    Returns:
        A tensor of the shape and dtype of ``x`` holding the rounded values (a copy of an
        empty ``x``). The minimum, step and scale of each group are fp16 values, so a group
        whose range is below fp16's smallest step (about ``6e-8``) comes back as its fp16
        minimum, and fp8 values below about ``2^-9`` times an fp16-representable scale
        round to zero, as in a real fp16 cache.

    Raises:
        ValueError: unknown ``fmt`` or ``axis``, ``x`` below 2-d, NaN or infinity in ``x``,
            values whose fp16 minimum (integers: beyond 65504 in magnitude) or scale
            (fp8: beyond about 2.9e7) would overflow.
        TypeError: ``x`` not a float tensor, ``group_size`` not an int.

    Taught in: chapters/04d_beyond_int4.ipynb.
    """
    _check_fmt(fmt)
    g = _check_group(group_size)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a float torch tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must be at least 2-d (..., tokens, channels), got shape {tuple(x.shape)}")
    if not isinstance(axis, str) or axis not in ("channel", "token"):
        raise ValueError(f"axis must be 'channel' or 'token', got {axis!r}")
    if x.numel() == 0:  # no token or no channel yet: nothing to round
        return x.detach().clone()
    t = x.detach().float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(
            f"x contains NaN or infinity ({int((~torch.isfinite(t)).sum())} of "
            f"{t.numel()} values): one would poison the scale of its whole group"
        )
    big = float(t.abs().max())
    limit = _FP16_MAX * (_FP8_MAX if fmt == "fp8" else 1.0)  # fp8: the scale is amax / 448
    if big > limit:
        raise ValueError(
            f"x holds values up to {big:.4g}: the cache stores its "
            + ("scales" if fmt == "fp8" else "minimums and steps")
            + f" in fp16, which holds them only up to {limit:.4g} in magnitude"
        )
    if axis == "channel":
        t = t.transpose(-1, -2)  # groups run over tokens, one row per channel
    n = t.shape[-1]
    parts = []
    for s in range(0, n, g):
        chunk = t[..., s : s + g]
        parts.append(_quantize_last(chunk, fmt))
    out = torch.cat(parts, dim=-1)
    if axis == "channel":
        out = out.transpose(-1, -2)
    return out.to(x.dtype).contiguous()


@functools.cache
def _cache_class():
    from transformers import DynamicCache

    class QuantizedKVCache(DynamicCache):
        """A DynamicCache that stores keys/values as given and returns them fake-quantized."""

        def __init__(self, key_fmt: Optional[str], value_fmt: Optional[str], group_size: int, **kwargs):
            super().__init__(**kwargs)
            self.key_fmt, self.value_fmt, self.group_size = key_fmt, value_fmt, group_size

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
            if self.key_fmt is not None:
                keys = fake_quantize_kv(keys, self.key_fmt, "channel", self.group_size)
            if self.value_fmt is not None:
                values = fake_quantize_kv(values, self.value_fmt, "token", self.group_size)
            return keys, values

    return QuantizedKVCache


def quantized_cache(
    key_fmt: Optional[str] = "int4",
    value_fmt: Optional[str] = "same",
    group_size: int = 32,
    config=None,
):
    """A transformers ``DynamicCache`` whose keys/values attention reads are fake-quantized.

    Args:
        key_fmt: format of the keys (per channel), one of :data:`KV_FORMATS`, or None
            to leave keys unquantized.
        value_fmt: format of the values (per token); ``"same"`` (default) uses ``key_fmt``,
            None leaves values unquantized.
        group_size: tokens per key scale and channels per value scale.
        config: the model's config, passed to ``DynamicCache`` (optional).

    Returns:
        A cache to pass as ``past_key_values`` (with ``use_cache=True``).

    Taught in: chapters/04d_beyond_int4.ipynb.
    """
    if value_fmt == "same":
        value_fmt = key_fmt
    for name, f in (("key_fmt", key_fmt), ("value_fmt", value_fmt)):
        if f is not None and f not in KV_FORMATS:
            raise ValueError(f"{name} must be one of {KV_FORMATS} or None, got {f!r}")
    _check_group(group_size)
    kwargs = {} if config is None else {"config": config}
    return _cache_class()(key_fmt, value_fmt, group_size, **kwargs)


@contextlib.contextmanager
def quantized_kv(
    model: torch.nn.Module,
    key_fmt: Optional[str] = "int4",
    value_fmt: Optional[str] = "same",
    group_size: int = 32,
) -> Iterator[torch.nn.Module]:
    """Within the block, every forward call of ``model`` without a cache gets a fresh
    :func:`quantized_cache` (so any evaluation code sees a model with a quantized KV cache).

    Example::

        with quantized_kv(model, "int4"):
            ppl = perplexity(model, tokens, 256)

    Args:
        model: a transformers causal LM whose attention uses the cache's ``update``.
        key_fmt, value_fmt, group_size: see :func:`quantized_cache`.

    Yields:
        ``model`` itself; its ``forward`` is restored on exit.

    Taught in: chapters/04d_beyond_int4.ipynb.
    """
    quantized_cache(key_fmt, value_fmt, group_size)  # validate before patching
    original = model.forward
    config = getattr(model, "config", None)
    # newer transformers call the argument ``cache``, older ones ``past_key_values``
    params = inspect.signature(original).parameters
    name = "cache" if "cache" in params else "past_key_values"

    @functools.wraps(original)
    def forward(*args, **kwargs):
        if kwargs.get("cache") is None and kwargs.get("past_key_values") is None:
            kwargs[name] = quantized_cache(key_fmt, value_fmt, group_size, config=config)
            kwargs["use_cache"] = True
        return original(*args, **kwargs)

    model.forward = forward
    try:
        yield model
    finally:
        del model.forward  # back to the class's forward
        if model.forward != original:  # an instance attribute existed before
            model.forward = original
