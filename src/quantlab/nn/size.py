"""How many bytes a model takes: :func:`size_report`, per layer (:class:`LayerSize`) and in total (:class:`SizeReport`).

Part of :mod:`quantlab.nn`, which re-exports the public names.

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .layer import QuantizedLinear

__all__ = [
    "LayerSize",
    "SizeReport",
    "size_report",
]


@dataclass(frozen=True)
class LayerSize:
    """Bytes of one layer before and after quantization (weight and bias)."""

    name: str
    shape: tuple[int, int]
    before: int
    after: int
    bits_per_weight: float


@dataclass(frozen=True)
class SizeReport:
    """Bytes of a model, layer by layer.

    Attributes:
        layers: one :class:`LayerSize` per Linear / QuantizedLinear layer.
        other: bytes of every other parameter and buffer (embeddings, norms), unchanged.
    """

    layers: tuple[LayerSize, ...]
    other: int

    @property
    def linear_before(self) -> int:
        return sum(r.before for r in self.layers)

    @property
    def linear_after(self) -> int:
        return sum(r.after for r in self.layers)

    @property
    def total_before(self) -> int:
        """Bytes of the whole model with every Linear layer at its original dtype."""
        return self.linear_before + self.other

    @property
    def total_after(self) -> int:
        """Bytes of the whole model as stored now."""
        return self.linear_after + self.other

    def __str__(self) -> str:
        lines = [f"{'layer':<44} {'shape':>11} {'before MB':>10} {'after MB':>9} {'bits/w':>7}"]
        for r in self.layers:
            lines.append(
                f"{r.name:<44} {r.shape[0]:>5}x{r.shape[1]:<5} {r.before / 1e6:>10.3f} "
                f"{r.after / 1e6:>9.3f} {r.bits_per_weight:>7.3f}"
            )
        lines.append(f"{'Linear layers':<56} {self.linear_before / 1e6:>10.3f} {self.linear_after / 1e6:>9.3f}")
        lines.append(f"{'other parameters and buffers':<56} {self.other / 1e6:>10.3f} {self.other / 1e6:>9.3f}")
        lines.append(f"{'total':<56} {self.total_before / 1e6:>10.3f} {self.total_after / 1e6:>9.3f}")
        return "\n".join(lines)


def _tensor_bytes(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def size_report(model: nn.Module) -> SizeReport:
    """Measure a model's storage: bytes per Linear layer before and after, and in total.

    "Before" is the original layer (weight at its original dtype, plus bias); "after" is
    what is stored now: :attr:`QuantizedLinear.nbytes` for quantized layers, the same as
    before for layers left in full precision. A layer registered under several names is
    one row (under its first name); every other parameter and buffer counts once, under
    ``other`` (shared tensors, such as tied embeddings, are counted once).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Taught in: chapters/04_in_practice.ipynb, "A five-line recipe".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    rows = []
    seen: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, QuantizedLinear):
            numel = m.out_features * m.in_features
            before = numel * torch.empty((), dtype=m.weight_dtype).element_size() + _tensor_bytes(m.bias)
            rows.append(LayerSize(name, (m.out_features, m.in_features), before, m.nbytes, m.bits_per_weight))
            seen.update(id(t) for t in m.buffers(recurse=False))
        elif isinstance(m, nn.Linear):
            b = _tensor_bytes(m.weight) + _tensor_bytes(m.bias)
            rows.append(LayerSize(name, (m.out_features, m.in_features), b, b, 8.0 * m.weight.element_size()))
            seen.update(id(t) for t in m.parameters(recurse=False))
    other = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        other += _tensor_bytes(t)
    return SizeReport(tuple(rows), other)
