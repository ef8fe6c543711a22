"""Read-only tensors for tables that are computed once and shared (decode tables, codebooks).

A format caches its decode table and hands out values looked up in it. If a lookup ever
returned a *view* of the table (``table[i]`` with a 0-d index does) and the caller scaled
it in place, the table itself would change for the rest of the process. Lookups therefore
copy (``torch.take``), and the cached tables are wrapped by :func:`read_only`: any
in-place operation on them -- ``t.mul_(2)``, ``t += 1``, ``t[0] = 1``, ``out=t``,
``t.copy_(...)`` -- raises ``RuntimeError`` *before* anything is written, and so does
one on a view of them (``t[1:]``, ``t.view(-1)``, ``t[idx]`` with a 0-d ``idx``);
``t.numpy()`` returns a read-only numpy array. Every other operation returns an ordinary
tensor (``t * 2``, ``t.take(idx)``, ``t.clone()``, ``t.to(device)`` to another device).

(torch's inference tensors are no substitute: an in-place update of one outside
``inference_mode`` raises only after the kernel has written.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["read_only", "ReadOnlyTensor"]

# in-place dunders: their names start and end with "__", unlike the methods ending in "_"
_INPLACE_DUNDERS = frozenset(
    f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and",
                           "or", "xor", "lshift", "rshift", "matmul", "div")
) | {"__setitem__", "__set__"}
# methods ending in "_" that do not write the tensor's values
_HARMLESS = frozenset({"requires_grad_", "share_memory_", "retain_grad"})


def _storage(t: torch.Tensor) -> Any:
    try:
        with torch._C.DisableTorchFunctionSubclass():
            return (t.device, t.untyped_storage().data_ptr())
    except Exception:  # meta tensors and the like have no storage to share
        return None


class ReadOnlyTensor(torch.Tensor):
    """A tensor that refuses every in-place operation (see the module docstring)."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        first = args[0] if args else None
        writes = isinstance(first, ReadOnlyTensor) and (
            name in _INPLACE_DUNDERS
            or (name.endswith("_") and not name.startswith("__") and name not in _HARMLESS)
        )
        out = kwargs.get("out")
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if writes or any(isinstance(o, ReadOnlyTensor) for o in outs):
            raise RuntimeError(
                f"this tensor is a shared, read-only table: {name or func} would write into it; "
                "make a copy first (t.clone())"
            )
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        if name in ("numpy", "__array__") and isinstance(result, np.ndarray):
            result.flags.writeable = False
            return result
        shared = {_storage(a) for a in args if isinstance(a, ReadOnlyTensor)}
        shared.discard(None)
        return _wrap_views(result, shared)

    def __deepcopy__(self, memo: dict) -> "ReadOnlyTensor":
        return read_only(self.clone())  # clone() returns an ordinary tensor

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return (read_only, (self.clone(),))


def _wrap_views(result: Any, shared: set) -> Any:
    """Wrap every tensor in ``result`` that shares storage with a read-only input."""
    if isinstance(result, torch.Tensor) and not isinstance(result, ReadOnlyTensor):
        if shared and _storage(result) in shared:
            return result.as_subclass(ReadOnlyTensor)
        return result
    if isinstance(result, tuple) and not hasattr(result, "_fields"):
        return tuple(_wrap_views(r, shared) for r in result)
    if isinstance(result, list):
        return [_wrap_views(r, shared) for r in result]
    return result


def read_only(t: torch.Tensor) -> ReadOnlyTensor:
    """A read-only copy of ``t`` (same values, dtype and device; see the module docstring)."""
    return t.detach().clone().as_subclass(ReadOnlyTensor)
