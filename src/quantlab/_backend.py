"""One implementation for numpy arrays and torch tensors.

Every public function of quantlab accepts a ``numpy.ndarray`` or a ``torch.Tensor``
and returns the same kind. Internally everything is a torch tensor:
``torch.from_numpy`` shares the array's memory (no copy), and ``Tensor.numpy()``
shares it back, so there is exactly one code path and no numpy twin beside it.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["ArrayLike", "as_tensor", "like_input", "require_float"]


def as_tensor(x: Any, name: str = "x") -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, was_numpy)`` for a numpy array or torch tensor.

    Args:
        x: the input array.
        name: the parameter name, used in error messages.

    Raises:
        TypeError: if ``x`` is neither a numpy array nor a torch tensor.
    """
    if isinstance(x, torch.Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} must hold numbers, got a numpy array of dtype object")
        if any(s < 0 for s in x.strides):
            x = np.ascontiguousarray(x)
        try:
            return torch.from_numpy(x), True
        except TypeError as err:  # e.g. numpy string or datetime arrays
            raise TypeError(f"{name} must hold numbers, got numpy dtype {x.dtype}") from err
    raise TypeError(
        f"{name} must be a numpy.ndarray or a torch.Tensor, got {type(x).__name__}"
    )


def require_float(t: torch.Tensor, name: str = "x") -> None:
    """Raise ``TypeError`` unless ``t`` holds real floating-point values."""
    if t.is_complex() or not t.is_floating_point():
        raise TypeError(
            f"{name} must hold real floating-point values (float16/bfloat16/float32/float64), "
            f"got dtype {str(t.dtype).replace('torch.', '')}"
        )


def like_input(t: torch.Tensor, was_numpy: bool) -> ArrayLike:
    """Return ``t`` as the kind the caller passed in (numpy array or tensor)."""
    if not was_numpy:
        return t
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hand back float32 values
        t = t.float()
    return t.numpy()
