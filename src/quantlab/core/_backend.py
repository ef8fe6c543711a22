"""One implementation for numpy arrays and torch tensors.

Every public function of quantlab accepts a ``numpy.ndarray`` or a ``torch.Tensor``
and returns the same kind. Internally everything is a torch tensor:
``torch.from_numpy`` shares the array's memory (no copy), and ``Tensor.numpy()``
shares it back, so there is exactly one code path and no numpy twin beside it.

Inputs are read, never written (except an ``out=`` buffer): a read-only numpy array or
memory map is a fine input. A numpy array in non-native byte order (e.g. big-endian
``">f4"`` data read from a file) is converted to native order first (a copy). Tensors
must be dense (strided layout) and hold data: sparse tensors and tensors on the
``meta`` device are refused with a clear error.

Tables computed once and shared (decode tables, codebooks) are wrapped by
:func:`read_only`: an in-place operation on them, or on a view of them, raises
``RuntimeError`` *before* anything is written (torch's inference tensors are no substitute:
an in-place update of one outside ``inference_mode`` raises only after the kernel has
written), and their ``numpy()`` is a read-only array. Every other operation returns an
ordinary tensor. Lookups into such tables copy (``torch.take``): indexing with a 0-d index
would return a view.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    "ArrayLike",
    "as_tensor",
    "like_input",
    "require_float",
    "check_out",
    "dtype_name",
    "memory_span",
    "overlaps",
    "read_only",
    "ReadOnlyTensor",
]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).replace("torch.", "")


def _check_dense(t: torch.Tensor, name: str) -> None:
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {t.layout} (call .to_dense() first)")
    if t.is_meta:
        raise ValueError(f"{name} must hold data, got a tensor on the meta device")


def as_tensor(x: Any, name: str = "x") -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, was_numpy)`` for a numpy array or torch tensor.

    Args:
        x: the input array.
        name: the parameter name, used in error messages.

    Returns:
        The tensor shares memory with ``x`` (a numpy array with negative strides or
        non-native byte order is copied first).

    Raises:
        TypeError: if ``x`` is neither a numpy array nor a torch tensor, holds no numbers,
            or is a sparse tensor.
        ValueError: a tensor on the ``meta`` device (it has no values).
    """
    if isinstance(x, torch.Tensor):
        _check_dense(x, name)
        return x, False
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} must hold numbers, got a numpy array of dtype object")
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        if any(s < 0 for s in x.strides):
            x = np.ascontiguousarray(x)
        try:
            if x.flags.writeable:
                return torch.from_numpy(x), True
            with warnings.catch_warnings():  # read-only inputs are only read
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(x), True
        except TypeError as err:  # e.g. numpy string or datetime arrays
            raise TypeError(f"{name} must hold numbers, got numpy dtype {x.dtype}") from err
    raise TypeError(f"{name} must be a numpy.ndarray or a torch.Tensor, got {type(x).__name__}")


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


def check_out(
    out: Any,
    *,
    was_numpy: bool,
    dtype: torch.dtype,
    shape: Sequence[int],
    device: Optional[torch.device] = None,
    like: str = "x",
    name: str = "out",
) -> torch.Tensor:
    """Check an ``out=`` buffer before anything is written, and return it as a tensor.

    The buffer must be of the same kind as the input (numpy array or tensor),
    writable, in native byte order, dense, contiguous, of dtype ``dtype``, shape
    ``shape`` and (tensors) on ``device``.

    Args:
        out: the buffer received.
        was_numpy: whether the input (and so ``out``) is a numpy array.
        dtype: the dtype ``out`` must have.
        shape: the shape ``out`` must have.
        device: the device ``out`` must be on (None: any).
        like: what ``out`` must resemble, for messages.
        name: the parameter name, for messages.

    Returns:
        A tensor sharing ``out``'s memory (detached if ``out`` requires grad).

    Raises:
        TypeError: wrong kind or dtype, or non-native byte order.
        ValueError: read-only, wrong shape, not contiguous, wrong device, or meta/sparse.
    """
    kind = "a numpy.ndarray" if was_numpy else "a torch.Tensor"
    if isinstance(out, np.ndarray) != was_numpy or not isinstance(out, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be {kind} like {like}, got {type(out).__name__}")
    if isinstance(out, np.ndarray):
        if not out.flags.writeable:
            raise ValueError(f"{name} must be writable, got a read-only numpy array")
        if not out.dtype.isnative:
            raise TypeError(f"{name} must be in native byte order, got numpy dtype {out.dtype.str!r}")
        if out.dtype == object:
            raise TypeError(f"{name} must have dtype {dtype_name(dtype)}, got object")
        o = torch.from_numpy(out)
    else:
        if out.layout != torch.strided:
            raise ValueError(f"{name} must be a dense tensor, got layout {out.layout}")
        if out.is_meta:
            raise ValueError(f"{name} must hold data, got a tensor on the meta device")
        if out.is_inference() and not torch.is_inference_mode_enabled():
            raise ValueError(f"{name} must be writable, got an inference tensor outside inference mode")
        o = out.detach()
    if tuple(o.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} like {like}, got {tuple(o.shape)}")
    if o.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype_name(dtype)} like {like}, got {dtype_name(o.dtype)}")
    if device is not None and o.device != device:
        raise ValueError(f"{name} must be on device {device} like {like}, got {o.device}")
    if not o.is_contiguous():
        raise ValueError(f"{name} must be contiguous, got a strided view")
    return o


def memory_span(t: torch.Tensor) -> tuple[int, int]:
    """The bytes ``[first, end)`` of memory that the elements of ``t`` lie in (strides and
    storage offset included); ``(0, 0)`` for a tensor without elements."""
    if t.numel() == 0:
        return (0, 0)
    size = t.element_size()
    start = t.data_ptr() + sum(min(0, st) * (n - 1) for st, n in zip(t.stride(), t.shape)) * size
    end = t.data_ptr() + (1 + sum(max(0, st) * (n - 1) for st, n in zip(t.stride(), t.shape))) * size
    return start, end


def overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory spans of ``a`` and ``b`` (on one device) intersect.

    Conservative: two interleaved views that share no element (``x[::2]`` and ``x[1::2]``)
    count as overlapping, since their spans do.
    """
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device or a.is_meta or b.is_meta:
        return False
    a0, a1 = memory_span(a)
    b0, b1 = memory_span(b)
    return a0 < b1 and b0 < a1


# --------------------------------------------------------------------------- read-only tables

# in-place dunders: their names start and end with "__", unlike the methods ending in "_"
_INPLACE_DUNDERS = frozenset(
    f"__i{op}__"
    for op in (
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "mod",
        "pow",
        "and",
        "or",
        "xor",
        "lshift",
        "rshift",
        "matmul",
        "div",
    )
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
            or kwargs.get("inplace") is True  # F.relu(t, inplace=True) and the like
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

    def __deepcopy__(self, memo: dict) -> ReadOnlyTensor:
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
