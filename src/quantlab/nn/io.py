"""Files: :func:`save_quantized` writes the quantized layers of a model (codes, scales and
layout records) to a ``safetensors`` file; :func:`load_quantized` puts them back into a
model of the same architecture.

Part of :mod:`quantlab.nn`, which re-exports the public names.

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Optional, Union

import torch
from torch import nn

from ..core.formats import (
    CodebookFormat,
    FloatFormat,
    IntFormat,
)
from ..core.quantize import SCALE_DTYPES
from .codes import codes_nbytes, unpack_codes
from .layer import QuantizedLinear
from .layout import FILE_TAG, FILE_VERSION, StoredLayout, layout_dtype_name
from .model import names_by_module, set_module

__all__ = [
    "save_quantized",
    "load_quantized",
]


_BUFFERS = ("packed", "scale", "zero_point", "bias", "input_scale")


def _key(name: str, buffer: str) -> str:
    return f"{name}.{buffer}" if name else buffer


def _check_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be a str or os.PathLike of a str, got {type(path).__name__} {path!r}")
    return path


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((what for test, what in _FILE_KINDS if test(mode)), "not a regular file")


def _save_target(path: str) -> tuple[str, Optional[int]]:
    """Where :func:`save_quantized` writes for ``path`` (a symbolic link is written through,
    so the link stays a link) and the permission bits of the file it replaces (None: new).

    Raises:
        ValueError: ``path`` names something other than a regular file (a directory, a
            FIFO, a device, a socket): the writer replaces its target by renaming a new
            file over it, which would turn a device node into a file.
        FileNotFoundError: the directory to write into does not exist.
    """
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ValueError(
            f"path {path!r} names {_kind(st.st_mode)}; save_quantized writes a new file or "
            "replaces a regular one, nothing else (choose a file name)"
        )
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        import errno

        raise FileNotFoundError(errno.ENOENT, f"cannot save to {path!r}: no directory {folder!r} to write into", path)
    return real, None if st is None else stat.S_IMODE(st.st_mode)


def _umask() -> int:
    """The process's file creation mask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_quantized(model: nn.Module, path: Union[str, os.PathLike]) -> None:
    """Write every :class:`QuantizedLinear` of ``model`` to a ``safetensors`` file.

    The file holds, for each quantized layer ``name`` (a layer registered under several
    names is written once, under its first name), the tensors ``name.packed``,
    ``name.scale``, ``name.zero_point``, ``name.bias`` and ``name.input_scale`` that it
    has (codes and zero points packed as uint8, scales at their storage dtype), and in the
    file's metadata (strings):

    * ``"quantlab.file"``: ``"quantlab.nn.save_quantized"``;
    * ``"quantlab.version"``: :data:`FILE_VERSION` (``"1"``);
    * ``"quantlab.layers"``: JSON ``{name: record}``, where a record gives the format
      (its name, or its fields for a custom one), ``shape`` ``[out, in]``,
      ``granularity``, ``axis``, ``group_size``, ``scale_dtype``, ``scale_shape``,
      ``scaled``, ``zero_point``, ``symmetric``, ``weight_dtype``, ``bias``,
      ``input_scale`` and ``aliases`` (the layer's other names).

    Nothing else of the model is written: :func:`load_quantized` takes the rest from the
    float model it is given.

    The file is written next to its target and renamed over it, so a save that is
    interrupted leaves any old file intact. A symbolic link is written through (the link
    stays, its target is replaced); a replaced file keeps its permission bits, a new one
    gets the usual ``0o666`` minus the umask.

    Args:
        model: a model holding at least one :class:`QuantizedLinear` (or one itself).
        path: file to write: a new file, or a regular file to replace.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``path`` is not a path.
        ValueError: no quantized layer, or a layer on the meta device; ``path`` names
            something that is not a regular file (a directory, FIFO, device or socket).
            Checked before anything is written.
        FileNotFoundError: the directory of ``path`` does not exist.
        OSError: the file could not be written (e.g. no permission, disk full).
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    path = _check_path(path)
    _save_target(path)  # refuse a bad target before any work
    layers = list(names_by_module(model, QuantizedLinear).values())
    if not layers:
        raise ValueError("model has no QuantizedLinear layer to save (quantize it first)")
    tensors: dict[str, torch.Tensor] = {}
    records = {}
    for layer, names in layers:
        name = names[0]
        if layer.packed.is_meta:
            raise ValueError(f"layer {name!r} is on the meta device and holds no values")
        rec = layer._record()
        del rec["quantlab.nn"]
        rec["aliases"] = names[1:]
        records[name] = rec
        for buf in _BUFFERS:
            t = getattr(layer, buf)
            if t is not None:
                tensors[_key(name, buf)] = t.detach().to("cpu", copy=True).contiguous()
    metadata = {
        "quantlab.file": FILE_TAG,
        "quantlab.version": str(FILE_VERSION),
        "quantlab.layers": json.dumps(records, sort_keys=True),
    }
    target, mode = _save_target(path)  # again, just before writing
    try:
        save_file(tensors, target, metadata=metadata)
    except SafetensorError as err:
        raise OSError(f"could not write {path!r}: {err}") from err
    os.chmod(target, mode if mode is not None else 0o666 & ~_umask())


def _read_file(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The layer records and the tensors of a :func:`save_quantized` file, checked."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("quantlab.file") != FILE_TAG:
                raise ValueError(
                    f"{path!r} was not written by quantlab.nn.save_quantized "
                    "(its metadata has no 'quantlab.file' entry)"
                )
            if meta.get("quantlab.version") != str(FILE_VERSION):
                raise ValueError(
                    f"{path!r} is a quantlab.nn file of version "
                    f"{meta.get('quantlab.version')!r}; this quantlab reads version "
                    f"{FILE_VERSION}"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors file)
    except SafetensorError as err:
        raise ValueError(f"{path!r} is not a readable safetensors file ({err})") from err
    try:
        records = json.loads(meta.get("quantlab.layers", ""))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path!r}: the 'quantlab.layers' metadata is not valid JSON ({err})") from err
    if not isinstance(records, dict) or not records:
        raise ValueError(f"{path!r}: the 'quantlab.layers' metadata names no layer")
    return records, tensors


def load_quantized(model: nn.Module, path: Union[str, os.PathLike]) -> nn.Module:
    """Put the quantized layers of a :func:`save_quantized` file into a float model.

    Each layer recorded in the file replaces the ``nn.Linear`` of the same name (and
    the names it shares with, see ``aliases``) by a :class:`QuantizedLinear` rebuilt
    from the file alone -- whatever its format, granularity or group size -- so the
    model computes exactly, bit for bit, what the saved one did. Everything else stays
    the given model's own: non-quantized parameters and buffers (embeddings, norms,
    Linear layers that were skipped). A quantized layer's bias and input scale come
    from the file. The float weights of the replaced layers are not read, so ``model``
    may live on the ``meta`` device (the new layers are then on the CPU); otherwise each
    new layer is put on its Linear's device.

    Everything is checked before the model is changed: every field of each layer's record
    (format, shape, granularity, axis, group size, scale dtype and shape, zero points,
    symmetry, bias, input scale) against the others and against the tensors found, and
    what the tensors hold -- scales finite and positive, bias and input scale finite,
    codebook codes inside the table, no code of a scaled float layer that decodes to NaN or
    infinity, mid-range zero points for symmetric unsigned layers. A custom format must be
    consistent with its bits (``1 + ebits + mbits`` for floats, ``ceil(log2(entries))``
    for codebooks). A record edited by hand is refused unless the codes it describes could
    have come from it (an edit that changes one 8-bit format into another can only be
    seen where the codes contradict it).

    Args:
        model: a model of the architecture that was saved, with ``nn.Linear`` (or
            :class:`QuantizedLinear`) layers where the file has quantized ones.
        path: a file written by :func:`save_quantized`.

    Returns:
        ``model``, changed in place (a bare ``nn.Linear`` given as ``model`` cannot be
        changed in place: the new :class:`QuantizedLinear` is returned).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``path`` is not a path.
        FileNotFoundError: no file at ``path``.
        ValueError: a file that is not safetensors, not written by
            :func:`save_quantized` or of another :data:`FILE_VERSION`; a ``path`` that names
            a directory, FIFO or device; a layer of the file missing from the model, not a
            Linear there, of another shape, with or without a bias where the file differs,
            or not shared where the file's is; a record or tensor that fails the checks
            above. Each message names the layer and the field or tensor.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    path = _check_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no file at path {path!r}")
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):  # reading a FIFO would block, a device never end
        raise ValueError(f"path {path!r} names {_kind(mode)}, not a file written by save_quantized")
    records, tensors = _read_file(path)
    modules = {}
    for m, names in names_by_module(model, nn.Module).values():
        for n in names:
            modules[n] = m
    built: list[tuple[list[str], QuantizedLinear]] = []
    expected: set[str] = set()
    for name, rec in records.items():
        where = f"layer {name!r}"
        if not isinstance(rec, dict):
            raise ValueError(f"{path!r}: {where} has a malformed record {rec!r}")
        layout = StoredLayout.from_record(rec, f"{path!r}: {where}")
        aliases = rec.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ValueError(f"{path!r}: {where} has malformed aliases {aliases!r}")
        if name not in modules:
            raise ValueError(f"{where} of the file is not in the model (architecture mismatch)")
        target = modules[name]
        if not isinstance(target, (nn.Linear, QuantizedLinear)):
            raise ValueError(f"{where} of the file is an nn.Linear, but the model's is a {type(target).__name__}")
        out_f, in_f = target.out_features, target.in_features
        if (out_f, in_f) != layout.shape:
            raise ValueError(
                f"{where}: the file's weight has shape {layout.shape}, the model's "
                f"is {(out_f, in_f)} (architecture mismatch)"
            )
        for field in ("bias", "input_scale"):
            if not isinstance(rec.get(field), bool):
                raise ValueError(f"{path!r}: {where}: field {field!r} must be true or false, got {rec.get(field)!r}")
        has_bias = target.bias is not None
        if has_bias != rec.get("bias"):
            raise ValueError(
                f"{where}: the file's layer has {'a' if rec.get('bias') else 'no'} "
                f"bias, the model's has {'a' if has_bias else 'no'} bias"
            )
        for alias in aliases:
            if modules.get(alias) is not target:
                raise ValueError(
                    f"{where} is shared with {alias!r} in the file, but not in the model (architecture mismatch)"
                )
        parts = {}
        for buf in _BUFFERS:
            key = _key(name, buf)
            present = {
                "packed": True,
                "scale": layout.scaled,
                "zero_point": layout.zero_point,
                "bias": bool(rec.get("bias")),
                "input_scale": bool(rec.get("input_scale")),
            }[buf]
            if present != (key in tensors):
                state = "missing from" if present else "unexpected in"
                raise ValueError(f"{where}: tensor {key!r} is {state} the file")
            parts[buf] = tensors.get(key)
            if present:
                expected.add(key)
        _check_parts(layout, parts, f"{path!r}: {where}")
        _check_values(layout, parts, f"{path!r}: {where}")
        device = (
            target.bias.device
            if has_bias
            else (target.weight.device if isinstance(target, nn.Linear) else target.packed.device)
        )
        if device.type == "meta":
            device = torch.device("cpu")
        layer = QuantizedLinear.__new__(QuantizedLinear)
        nn.Module.__init__(layer)
        layer._install(layout, *(None if parts[b] is None else parts[b].to(device) for b in _BUFFERS))
        built.append(([name, *aliases], layer))
    extra = sorted(set(tensors) - expected)
    if extra:
        raise ValueError(f"{path!r} holds tensors that belong to no recorded layer: {extra[:5]}")
    for names, layer in built:
        if names == [""]:
            return layer
        for n in names:
            set_module(model, n, layer)
    return model


def _check_parts(layout: StoredLayout, parts: dict, where: str) -> None:
    """Check the dtypes and sizes of a layer's tensors read from a file."""
    bits = layout.format.bits
    want = {
        "packed": (torch.uint8, (codes_nbytes(layout.numel, bits),)),
        "scale": (SCALE_DTYPES[layout.scale_dtype], layout.scale_shape),
        "zero_point": (torch.uint8, (codes_nbytes(layout.n_scales, bits),)),
        "bias": (None, (layout.shape[0],)),
        "input_scale": (None, (layout.shape[1],)),
    }
    for buf, t in parts.items():
        if t is None:
            continue
        dtype, shape = want[buf]
        if (dtype is not None and t.dtype != dtype) or (dtype is None and not t.is_floating_point()):
            raise ValueError(
                f"{where}: tensor {buf!r} has dtype {layout_dtype_name(t.dtype)}, expected "
                f"{'a float dtype' if dtype is None else layout_dtype_name(dtype)}"
            )
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{where}: tensor {buf!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def _check_values(layout: StoredLayout, parts: dict, where: str) -> None:
    """Check what a layer's tensors hold against its layout, before the layer is built.

    Scales must be finite and positive (quantize stores a tiny positive scale even for a
    group of zeros); bias and input scale finite; codebook codes must index the table;
    the codes of a scaled float layer must decode to finite values (scaled floats
    saturate, so such a layer never stores a NaN or infinity code: finding one means the
    record's format does not describe the codes); the zero points of a symmetric unsigned
    layer must be the mid-range one.
    """
    fmt = layout.format
    scale = parts.get("scale")
    if scale is not None and scale.numel():
        s = scale.float()
        bad = ~(torch.isfinite(s) & (s > 0))
        if bool(bad.any()):
            raise ValueError(
                f"{where}: tensor 'scale' must hold finite positive scales, got "
                f"{s[bad][:4].tolist()} ({int(bad.sum())} of {s.numel()} scales)"
            )
    for name in ("bias", "input_scale"):
        t = parts.get(name)
        if t is not None and not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{where}: tensor {name!r} holds NaN or infinity "
                f"({int((~torch.isfinite(t)).sum())} of {t.numel()} values)"
            )
    zp = parts.get("zero_point")
    if zp is not None and isinstance(fmt, IntFormat) and layout.symmetric and not fmt.signed:
        z = unpack_codes(zp, fmt.bits, layout.n_scales, False)
        mid = (fmt.qmax + fmt.qmin + 1) // 2
        if z.numel() and bool((z != mid).any()):
            raise ValueError(
                f"{where}: tensor 'zero_point' of a symmetric {fmt.name} layer must "
                f"hold its mid-range zero point {mid}, got values in "
                f"[{int(z.min())}, {int(z.max())}]"
            )
    packed = parts["packed"]
    if isinstance(fmt, CodebookFormat) and layout.numel:
        codes = unpack_codes(packed, fmt.bits, layout.numel, False)
        top = int(codes.max())
        if top >= len(fmt.table):
            raise ValueError(
                f"{where}: tensor 'packed' holds code {top}, beyond the "
                f"{len(fmt.table)} entries of codebook {fmt.name!r}"
            )
    if isinstance(fmt, FloatFormat) and layout.scaled and fmt.bits <= 16 and layout.numel:
        vals = fmt.decode(unpack_codes(packed, fmt.bits, layout.numel, False))
        bad = ~torch.isfinite(vals)
        if bool(bad.any()):
            raise ValueError(
                f"{where}: tensor 'packed' holds {int(bad.sum())} codes that "
                f"decode to NaN or infinity in {fmt.name}, which a scaled "
                f"{fmt.name} layer never stores (values saturate): the record's "
                "field 'format' does not describe these codes"
            )
