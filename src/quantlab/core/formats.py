"""Number formats: integers of any width, floating point ExMy, and codebooks.

A *format* is the set of values a code of ``bits`` bits can stand for:

* :class:`IntFormat` -- ``intN`` (two's complement, ``[-2^(N-1), 2^(N-1)-1]``) and
  ``uintN`` (``[0, 2^N-1]``) for N = 1..16. On their own they hold integers; a
  ``scale`` (and ``zero_point``) maps them onto real numbers (see :mod:`quantlab.quantize`).
* :class:`FloatFormat` -- sign, ``ebits`` exponent bits and ``mbits`` mantissa bits:
  ``value = (-1)^s * 2^(E - bias) * (1 + M / 2^mbits)`` for normal numbers and
  ``(-1)^s * 2^(1 - bias) * (M / 2^mbits)`` for subnormals (E = 0). Rounding is to
  nearest, ties to even. Overflow behaviour is per format (``overflow``):
  ``"inf"`` (fp32, fp16, bf16, fp8_e5m2: IEEE-like) or ``"saturate"`` to the largest
  finite value (fp8_e4m3 -- the finite-only ``e4m3fn`` variant --, fp6 and fp4, which
  have no infinity). Both agree with torch's own casts where torch has the dtype.
* :class:`CodebookFormat` -- an explicit sorted table of values, e.g. NF4 (QLoRA's
  16 quantiles of a normal distribution) or one you give with :func:`codebook`.
* :class:`BlockFormat` -- a block-scaled format: an element format (one of the above)
  whose blocks of ``block_size`` consecutive elements share one stored scale, e.g. the
  OCP Microscaling formats ``mxfp8_e4m3`` .. ``mxfp4``, ``mxint8`` (E8M0 power-of-two
  scales per 32) and NVIDIA's ``nvfp4`` (an fp8 e4m3 scale per 16 plus one fp32 scale
  per tensor). The scales are part of the format; :mod:`quantlab.mx` computes them.

Every format has a ``name``, a bit width ``bits`` and can list or bound the values it
represents. The element-wise methods (``round``, ``encode``, ``decode``) take a torch
tensor or a numpy array and return the same kind; ``values()`` and ``decode_table``
are torch tensors. :func:`get_format` turns names such as ``"int4"``, ``"fp8_e4m3"`` or
``"nf4"`` into format objects.

Taught in: chapters/03_core_tradeoff.ipynb, "How the formats store a number".
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable, Optional, Union

import torch

from ._backend import as_tensor, like_input, read_only
from ._fast import CAST_CHUNK_ELEMENTS, CHUNK_ELEMENTS, chunk_elements, row_chunks
from .validate import check_bool, check_int

__all__ = [
    "Format",
    "IntFormat",
    "FloatFormat",
    "CodebookFormat",
    "BlockFormat",
    "FloatFields",
    "NF4_VALUES",
    "get_format",
    "codebook",
    "FORMAT_NAMES",
    "BLOCK_FORMAT_NAMES",
]


def _numpy_in_out(method: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """Let a tensor method take a numpy array too (and return one); tensors that require
    grad are read detached."""

    @functools.wraps(method)
    def wrapper(self: Format, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return method(self, x.detach() if x.requires_grad else x)
        t, was_numpy = as_tensor(x, "x")
        return like_input(method(self, t), was_numpy)

    return wrapper


@dataclass(frozen=True)
class Format:
    """Base class of all formats: a name and a bit width."""

    name: str
    bits: int

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------- integers


@dataclass(frozen=True)
class IntFormat(Format):
    """Signed (two's complement) or unsigned integers of ``bits`` bits.

    Attributes:
        name: e.g. ``"int4"`` or ``"uint8"``.
        bits: 1 to 16.
        signed: two's complement if True.
    """

    signed: bool = True

    def __post_init__(self) -> None:
        check_int(self.bits, "bits", minimum=1, maximum=16)
        check_bool(self.signed, "signed")

    @property
    def qmin(self) -> int:
        """Smallest code: ``-2^(bits-1)`` if signed, else 0."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest code: ``2^(bits-1) - 1`` if signed, else ``2^bits - 1``."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def levels(self) -> int:
        """Number of distinct codes, ``2^bits``."""
        return 1 << self.bits

    @property
    def code_dtype(self) -> torch.dtype:
        """The smallest torch dtype that holds every code."""
        if self.signed:
            return torch.int8 if self.bits <= 8 else torch.int16
        return torch.uint8 if self.bits <= 8 else torch.int32

    def values(self) -> torch.Tensor:
        """All representable integers, ascending (float64)."""
        return torch.arange(self.qmin, self.qmax + 1, dtype=torch.float64)


# --------------------------------------------------------------------------- floats


@dataclass(frozen=True)
class FloatFields:
    """The bit fields of one value stored in a :class:`FloatFormat`.

    Attributes:
        value: the value the bits stand for (after rounding to the format).
        code: the whole bit pattern as an unsigned integer.
        sign, exponent, mantissa: the three fields as unsigned integers.
        sign_bits, exponent_bits, mantissa_bits: the same fields as ``"0"``/``"1"`` strings.
        unbiased_exponent: ``E - bias`` (``1 - bias`` for subnormals), None for inf/NaN.
        kind: ``"zero"``, ``"subnormal"``, ``"normal"``, ``"inf"`` or ``"nan"``.
    """

    value: float
    code: int
    sign: int
    exponent: int
    mantissa: int
    sign_bits: str
    exponent_bits: str
    mantissa_bits: str
    unbiased_exponent: int | None
    kind: str


#: Formats torch stores natively with the same rounding (used for float32 inputs).
_TORCH_CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16}

_SRC = {  # source float layouts the rounding works on: (mantissa bits, bias, int view)
    torch.float32: (23, 127, torch.int32),
    torch.float64: (52, 1023, torch.int64),
}


@dataclass(frozen=True)
class FloatFormat(Format):
    """A binary floating-point format with ``ebits`` exponent and ``mbits`` mantissa bits.

    Attributes:
        ebits: exponent bits.
        mbits: explicit mantissa (fraction) bits.
        bias: exponent bias.
        has_inf: whether the all-ones exponent encodes infinity (IEEE style).
        nan: how NaN is encoded: ``"ieee"`` (exponent all ones, mantissa non-zero),
            ``"all_ones"`` (only exponent and mantissa all ones, as in e4m3fn) or ``"none"``.
        overflow: ``"inf"`` or ``"saturate"``: what a finite value beyond ``max_value``
            becomes when rounded into this format.
    """

    ebits: int = 8
    mbits: int = 23
    bias: int = 127
    has_inf: bool = True
    nan: str = "ieee"
    overflow: str = "inf"
    _nan_code: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        check_int(self.bits, "bits", minimum=1)
        check_int(self.ebits, "ebits", minimum=1)
        check_int(self.mbits, "mbits", minimum=0)
        check_bool(self.has_inf, "has_inf")
        if self.nan not in ("ieee", "all_ones", "none"):
            raise ValueError(f"nan must be 'ieee', 'all_ones' or 'none', got {self.nan!r}")
        if self.overflow not in ("inf", "saturate"):
            raise ValueError(f"overflow must be 'inf' or 'saturate', got {self.overflow!r}")

    # ---- range and precision
    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number, ``1 - bias``."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        top = (1 << self.ebits) - 1  # all-ones exponent field
        return (top - 1 if self.has_inf else top) - self.bias

    @property
    def max_value(self) -> float:
        """Largest finite value."""
        top_mantissa = (1 << self.mbits) - 1
        if self.nan == "all_ones":  # the all-ones pattern is NaN, one step below is the max
            top_mantissa -= 1
        return math.ldexp(1.0 + top_mantissa / (1 << self.mbits), self.emax)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, ``2^emin``."""
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value, ``2^(emin - mbits)``."""
        return math.ldexp(1.0, self.emin - self.mbits)

    @property
    def eps(self) -> float:
        """Spacing of values just above 1.0, ``2^-mbits``."""
        return math.ldexp(1.0, -self.mbits)

    @property
    def levels(self) -> int:
        """Number of distinct finite values (+0 and -0 counted once)."""
        return int(torch.unique(self.values()).numel())

    def values(self) -> torch.Tensor:
        """All distinct finite values, ascending (float64). Only for formats of <= 16 bits."""
        if self.bits > 16:
            raise ValueError(f"values() lists formats of at most 16 bits, got {self.name}")
        table = self._decode_table.double()
        return torch.unique(table[torch.isfinite(table)])

    # ---- rounding
    @_numpy_in_out
    def round(self, x: torch.Tensor) -> torch.Tensor:
        """Round values to the nearest value of this format (ties to even).

        The spacing of this format's values around ``x`` is a power of two,
        ``q = 2^(max(e, emin) - mbits)`` where ``e = floor(log2|x|)`` (and ``emin`` for
        the subnormals), so rounding is ``round(x / q) * q``: dividing by a power of two
        is exact and ``torch.round`` rounds ties to even. ``q`` comes straight from the
        bits of ``x``: keep its exponent field, raise it to at least ``emin``, subtract
        ``mbits``. Saturating formats clamp to ``max_value`` first; IEEE-like formats turn
        results beyond ``max_value`` into infinity. float16/bfloat16 inputs are widened to
        float32 first (exact); float64 inputs are rounded once, from float64.

        Fast path: for fp16 and bf16 from float32 the result is torch's own cast there and
        back, which rounds the same way (``tests/test_formats.py`` checks that both
        paths agree bit for bit). Both run on cache-sized chunks (see ``quantlab._fast``).

        Args:
            x: float tensor, any shape.

        Returns:
            Float tensor of the same shape (float32, or float64 for float64 input) whose
            values all lie in this format; NaN stays NaN, overflow follows ``overflow``.
        """
        if x.dtype not in _SRC:
            x = x.float()
        out = x.clone(memory_format=torch.contiguous_format)
        self._round_inplace(out)
        return out

    def _round_inplace(self, t: torch.Tensor, *, use_cast: bool = True) -> None:
        """Round the contiguous float32/float64 tensor ``t`` to this format, in place.

        ``use_cast=False`` forces the ``round(x / q) * q`` path even where torch's own
        cast would be used (tests compare the two).
        """
        flat = t.view(-1)
        if flat.numel() == 0:
            return
        rounder = self._rounder(t.dtype, use_cast=use_cast)
        if rounder is not None:  # None: the source format is contained in this one
            rounder(flat)

    def _rounder(self, dtype: torch.dtype, *, use_cast: bool = True) -> Optional[Callable[..., None]]:
        """A function ``f(c, src=None)`` that writes ``src`` (default: ``c``) rounded to this
        format into the contiguous tensor ``c``, ``CHUNK_ELEMENTS`` at a time.

        Returns None when every ``dtype`` value is already in this format. The function
        owns a scratch buffer, so a caller can apply it chunk by chunk without allocating.
        """
        rounder = self._chunk_rounder(dtype, use_cast=use_cast)
        if rounder is None:
            return None

        step = self._chunk_size(dtype, use_cast)

        def round_all(c: torch.Tensor, src: Optional[torch.Tensor] = None) -> None:
            flat = c.view(-1)
            sflat = flat if src is None else src.reshape(-1)
            if flat.numel() <= step:
                rounder(flat, sflat)
            else:
                for sl in row_chunks(flat, step):
                    rounder(flat[sl], sflat[sl])

        return round_all

    def _torch_cast(self, dtype: torch.dtype, use_cast: bool) -> Optional[torch.dtype]:
        """The torch dtype whose cast rounds ``dtype`` values exactly like this format, if any."""
        cast = _TORCH_CASTS.get(self.name) if use_cast and dtype == torch.float32 else None
        if cast is not None and _FLOATS.get(self.name) != self:
            cast = None  # a look-alike format with other fields: take the general path
        return cast

    def _chunk_size(self, dtype: torch.dtype, use_cast: bool) -> int:
        return chunk_elements(CAST_CHUNK_ELEMENTS if self._torch_cast(dtype, use_cast) else CHUNK_ELEMENTS)

    def _chunk_rounder(
        self, dtype: torch.dtype, *, use_cast: bool = True
    ) -> Optional[Callable[[torch.Tensor, torch.Tensor], None]]:
        """Like :meth:`_rounder`, for 1-d chunks of at most :meth:`_chunk_size` (``src`` given)."""
        src_m, src_bias, int_dtype = _SRC[dtype]
        if self.mbits >= src_m and self.emin <= 1 - src_bias:
            return None
        cast = self._torch_cast(dtype, use_cast)
        if cast is not None:
            s16 = torch.empty(self._chunk_size(dtype, use_cast), dtype=cast)

            def round_by_cast(c: torch.Tensor, src: torch.Tensor) -> None:
                s = s16[: c.numel()]
                s.copy_(src)
                c.copy_(s)

            return round_by_cast
        if self.emin - self.mbits < 1 - src_bias:
            # q would be a subnormal of the source dtype: round in float64 (exact widening)
            if dtype != torch.float32:
                raise ValueError(f"{self.name} has values too small for {dtype}")
            rounder64 = self._chunk_rounder(torch.float64, use_cast=False)

            def round_wide(c: torch.Tensor, src: torch.Tensor) -> None:
                wide = src.double()
                rounder64(wide, wide)
                c.copy_(wide)

            return round_wide
        scratch = torch.empty(self._chunk_size(dtype, use_cast), dtype=int_dtype)
        exp_mask = ((1 << (src_bias.bit_length() + 1)) - 1) << src_m  # the exponent field
        lowest = (self.emin + src_bias) << src_m  # exponent field of 2^emin
        k = src_bias - self.emax  # src_bias is also the source's largest exponent
        saturate, to_inf = self.overflow == "saturate", self.overflow == "inf" and k > 0

        def round_by_spacing(c: torch.Tensor, src: torch.Tensor) -> None:
            s = scratch[: c.numel()]
            if saturate:
                torch.clamp(src, -self.max_value, self.max_value, out=c)  # NaN stays NaN
                src = c
            torch.bitwise_and(src.view(int_dtype), exp_mask, out=s)
            s.clamp_(min=lowest).sub_(self.mbits << src_m)
            q = s.view(dtype)  # 2^(max(e, emin) - mbits), a power of two
            torch.div(src, q, out=c).round_().mul_(q)
            if to_inf:
                # the first value past max_value is 2^(emax+1); scaling by 2^k makes it
                # overflow the source dtype to infinity, and scaling back is exact
                c.mul_(2.0**k).mul_(2.0**-k)

        return round_by_spacing

    # ---- codes
    @property
    def code_dtype(self) -> torch.dtype:
        """Torch dtype holding the bit patterns (uint8 up to 8 bits, int32 up to 32)."""
        if self.bits <= 8:
            return torch.uint8
        return torch.int32 if self.bits < 32 else torch.int64

    @_numpy_in_out
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Round ``x`` into this format and return the bit patterns.

        Args:
            x: float tensor, any shape.

        Returns:
            Integer tensor (``code_dtype``), same shape: ``sign << (bits-1) |
            E << mbits | M``.

        Raises:
            ValueError: if ``x`` holds NaN and this format has no NaN encoding.
        """
        q = self.round(x)
        if q.dtype not in _SRC:
            q = q.float()
        src_m, src_bias, int_dtype = _SRC[q.dtype]
        nan_mask = torch.isnan(q)
        if self.nan == "none" and bool(nan_mask.any()):
            raise ValueError(f"x contains NaN, which format {self.name} cannot encode")
        u = q.view(int_dtype).to(torch.int64)
        sign = (u >> (src_m + (8 if src_m == 23 else 11))) & 1
        a = q.abs()
        au = a.view(int_dtype).to(torch.int64)
        exp_field = (au >> src_m) - src_bias + self.bias
        mant = (au >> (src_m - self.mbits)) & ((1 << self.mbits) - 1)
        sub_mant = torch.round(a.double() / self.min_subnormal).to(torch.int64)
        is_sub = a < self.min_normal
        exp_field = torch.where(is_sub, torch.zeros_like(exp_field), exp_field)
        mant = torch.where(is_sub, sub_mant, mant)
        top = (1 << self.ebits) - 1
        if self.has_inf:
            is_inf = torch.isinf(q)
            exp_field = torch.where(is_inf, torch.full_like(exp_field, top), exp_field)
            mant = torch.where(is_inf, torch.zeros_like(mant), mant)
        code = (sign << (self.bits - 1)) | (exp_field << self.mbits) | mant
        code = torch.where(nan_mask, (sign << (self.bits - 1)) | self._nan_code, code)
        return code.to(self.code_dtype)

    @property
    def decode_table(self) -> torch.Tensor:
        """float32 value of every code 0 .. 2^bits - 1 (formats of at most 16 bits).

        A new tensor on every access: the table the format decodes with is cached once,
        read-only (``quantlab.core._backend.read_only``), and never handed out.
        """
        return self._decode_table.clone()

    @cached_property
    def _decode_table(self) -> torch.Tensor:
        if self.bits > 16:
            raise ValueError(f"decode_table exists for formats of at most 16 bits, got {self.name}")
        return read_only(
            torch.tensor([self._decode_one(c) for c in range(1 << self.bits)], dtype=torch.float64).float()
        )

    @_numpy_in_out
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Bit patterns -> float32 values (exact), a new tensor of the shape of ``codes``."""
        if self.bits == 32:
            return codes.to(torch.int32, copy=True).view(torch.float32)
        # take() always copies: indexing with a 0-d index would return a view of the table
        return self._decode_table.take(codes.long() & ((1 << self.bits) - 1))

    def _decode_one(self, code: int) -> float:
        sign = -1.0 if (code >> (self.bits - 1)) & 1 else 1.0
        e = (code >> self.mbits) & ((1 << self.ebits) - 1)
        m = code & ((1 << self.mbits) - 1)
        top = (1 << self.ebits) - 1
        if e == top:
            if self.has_inf:
                return sign * math.inf if m == 0 else math.nan
            if self.nan == "all_ones" and m == (1 << self.mbits) - 1:
                return math.nan
        if e == 0:
            return sign * math.ldexp(m, self.emin - self.mbits)
        return sign * math.ldexp(1.0 + m / (1 << self.mbits), e - self.bias)

    def fields(self, value: float) -> FloatFields:
        """Decompose one number into this format's sign, exponent and mantissa bits.

        The value is first rounded into the format (ties to even).

        Example:
            >>> get_format("fp16").fields(-2.5).exponent_bits
            '10000'

        Taught in: chapters/03_core_tradeoff.ipynb, "How the formats store a number".
        """
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"value must be a real number, got {type(value).__name__}")
        code = int(self.encode(torch.tensor([float(value)], dtype=torch.float64))[0].item())
        code &= (1 << self.bits) - 1
        sign = code >> (self.bits - 1)
        e = (code >> self.mbits) & ((1 << self.ebits) - 1)
        m = code & ((1 << self.mbits) - 1)
        v = self._decode_one(code)
        if math.isnan(v):
            kind, unb = "nan", None
        elif math.isinf(v):
            kind, unb = "inf", None
        elif v == 0:
            kind, unb = "zero", self.emin
        elif e == 0:
            kind, unb = "subnormal", self.emin
        else:
            kind, unb = "normal", e - self.bias
        return FloatFields(
            value=v,
            code=code,
            sign=sign,
            exponent=e,
            mantissa=m,
            sign_bits=str(sign),
            exponent_bits=format(e, f"0{self.ebits}b"),
            mantissa_bits=format(m, f"0{self.mbits}b"),
            unbiased_exponent=unb,
            kind=kind,
        )


# --------------------------------------------------------------------------- codebooks

#: The 16 NF4 values of QLoRA (Dettmers et al., 2023), exactly as bitsandbytes stores them.
NF4_VALUES: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)


@dataclass(frozen=True)
class CodebookFormat(Format):
    """A format given by an explicit table of values (a codebook).

    A code is an index into ``table`` (ascending). With a ``scale``, a value ``x`` is
    stored as the index of the table entry nearest to ``x / scale``; ties go to the
    lower entry.

    Attributes:
        table: the representable values, ascending, as a tuple of floats.
    """

    table: tuple[float, ...] = ()

    @property
    def max_value(self) -> float:
        """Largest magnitude in the table (the value absmax scaling maps to)."""
        return max(abs(v) for v in self.table)

    @property
    def levels(self) -> int:
        return len(self.table)

    @property
    def code_dtype(self) -> torch.dtype:
        return torch.uint8 if self.bits <= 8 else torch.int32

    def values(self) -> torch.Tensor:
        return torch.tensor(self.table, dtype=torch.float64)

    @cached_property
    def _table32(self) -> torch.Tensor:
        return read_only(torch.tensor(self.table, dtype=torch.float32))

    @cached_property
    def _midpoints(self) -> torch.Tensor:
        t = torch.tensor(self.table, dtype=torch.float64)
        return read_only(((t[1:] + t[:-1]) / 2).float())

    @_numpy_in_out
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest table value for each element (ties to the lower index)."""
        mids = self._midpoints.to(x.dtype) if x.dtype == torch.float64 else self._midpoints
        x = x if x.dtype == torch.float64 else x.float()
        return torch.bucketize(x.contiguous(), mids).to(self.code_dtype)

    @_numpy_in_out
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Indices -> float32 table values, a new tensor of the shape of ``codes``.

        Raises:
            ValueError: an index outside ``0 .. len(table) - 1``.
        """
        idx = codes.long()
        if idx.numel():
            lo, hi = (int(v) for v in torch.aminmax(idx))
            if lo < 0 or hi >= len(self.table):
                raise ValueError(
                    f"codes of {self.name} must be indices 0..{len(self.table) - 1} into its "
                    f"table, got values in [{lo}, {hi}]"
                )
        return self._table32.take(idx)


def codebook(values: Iterable[float], name: str = "codebook") -> CodebookFormat:
    """Make a :class:`CodebookFormat` from any list of distinct finite values.

    Args:
        values: 2 to 65536 distinct finite numbers (any order).
        name: a name for tables and plots.

    Raises:
        ValueError: fewer than 2 values, duplicates, NaN/inf, or more than 2^16 values.
        TypeError: values that are not real numbers.
    """
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise TypeError(f"values must be real numbers, got {values!r}") from err
    if len(vals) < 2:
        raise ValueError(f"values must hold at least 2 entries, got {len(vals)}")
    if len(vals) > 1 << 16:
        raise ValueError(f"values may hold at most 65536 entries, got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"values must be finite, got {vals}")
    if len(set(vals)) != len(vals):
        raise ValueError(f"values must be distinct, got {sorted(vals)}")
    if not all(v == 0 or abs(v) > 0 for v in vals):  # pragma: no cover - float sanity
        raise ValueError(f"invalid values {vals}")
    if max(abs(v) for v in vals) == 0:
        raise ValueError("values must not all be zero")
    bits = max(1, math.ceil(math.log2(len(vals))))
    return CodebookFormat(name=name, bits=bits, table=tuple(sorted(vals)))


# --------------------------------------------------------------------------- block-scaled


#: How each kind of block scale is stored: name -> bits.
BLOCK_SCALE_BITS: dict[str, int] = {"e8m0": 8, "fp8_e4m3": 8}


@dataclass(frozen=True)
class BlockFormat(Format):
    """A block-scaled format: ``block_size`` consecutive elements share one scale.

    A value is ``element_value * element_scale * X_block`` (times one fp32 scale per
    tensor where ``tensor_scale`` is set), with ``X_block`` stored in ``scale_format``:

    * ``"e8m0"`` -- the OCP Microscaling (MX) v1.0 scale: 8 exponent bits, no sign or
      mantissa, ``X = 2^(code - 127)`` for codes 0..254 (255 is NaN);
    * ``"fp8_e4m3"`` -- an fp8 e4m3 value (NVFP4's block scale).

    ``bits`` is the element width (the codes); the scales add ``8 / block_size`` bits per
    element (:attr:`bits_per_weight`). Quantization is :func:`quantlab.quantize` with the
    format's name (the arithmetic lives in :mod:`quantlab.mx`).

    Attributes:
        element: the element format (:class:`FloatFormat` or, for ``mxint8``, int8).
        block_size: elements per scale (32 for MX, 16 for NVFP4).
        scale_format: ``"e8m0"`` or ``"fp8_e4m3"``.
        element_scale: the element's implicit factor: ``2^-6`` for ``mxint8`` (codes are
            fixed-point 1.6 numbers), 1 otherwise.
        tensor_scale: whether one fp32 scale per tensor multiplies everything (NVFP4).

    Taught in: chapters/ (Beyond int4).
    """

    element: Optional[Format] = None
    block_size: int = 32
    scale_format: str = "e8m0"
    element_scale: float = 1.0
    tensor_scale: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.element, (FloatFormat, IntFormat)):
            raise TypeError(f"element must be a FloatFormat or IntFormat, got {type(self.element).__name__}")
        check_int(self.block_size, "block_size", minimum=1)
        if self.scale_format not in BLOCK_SCALE_BITS:
            raise ValueError(f"scale_format must be one of {tuple(BLOCK_SCALE_BITS)}, got {self.scale_format!r}")
        check_bool(self.tensor_scale, "tensor_scale")

    @property
    def emax_elem(self) -> int:
        """Exponent of the element format's largest power of two (MX's ``emax_elem``):
        ``emax`` of a float element (e4m3: 8, e5m2: 15, e3m2: 4, e2m3: 2, e2m1: 2), 0 for
        ``mxint8`` (its elements lie in ``[-2, 2)``)."""
        if isinstance(self.element, FloatFormat):
            return self.element.emax
        return self.element.bits - 2 + round(math.log2(self.element_scale))

    @property
    def max_value(self) -> float:
        """Largest element magnitude (before the block scale): 448 for e4m3, 6 for e2m1,
        ``127 * 2^-6`` for ``mxint8``."""
        if isinstance(self.element, FloatFormat):
            return self.element.max_value
        return self.element.qmax * self.element_scale

    @property
    def scale_bits(self) -> int:
        """Bits of one block scale (8)."""
        return BLOCK_SCALE_BITS[self.scale_format]

    @property
    def bits_per_weight(self) -> float:
        """``bits + scale_bits / block_size``: 4.25 for mxfp4, 8.25 for mxfp8 and mxint8,
        6.25 for mxfp6, 4.5 for nvfp4 (whose one fp32 per tensor is not included)."""
        return self.bits + self.scale_bits / self.block_size

    @property
    def code_dtype(self) -> torch.dtype:
        """Torch dtype of the element codes."""
        return self.element.code_dtype

    @property
    def levels(self) -> int:
        """Distinct element values (``mxint8``: 255, its codes being symmetric)."""
        return int(self.values().numel())

    def values(self) -> torch.Tensor:
        """All distinct element values before the block scale, ascending (float64)."""
        if isinstance(self.element, FloatFormat):
            return self.element.values()
        q = self.element.qmax
        return torch.arange(-q, q + 1, dtype=torch.float64) * self.element_scale


# --------------------------------------------------------------------------- registry

_FLOATS: dict[str, FloatFormat] = {
    "fp32": FloatFormat("fp32", 32, ebits=8, mbits=23, bias=127, _nan_code=0x7FC00000),
    "fp16": FloatFormat("fp16", 16, ebits=5, mbits=10, bias=15, _nan_code=0x7E00),
    "bf16": FloatFormat("bf16", 16, ebits=8, mbits=7, bias=127, _nan_code=0x7FC0),
    "fp8_e4m3": FloatFormat(
        "fp8_e4m3",
        8,
        ebits=4,
        mbits=3,
        bias=7,
        has_inf=False,
        nan="all_ones",
        overflow="saturate",
        _nan_code=0x7F,
    ),
    "fp8_e5m2": FloatFormat("fp8_e5m2", 8, ebits=5, mbits=2, bias=15, _nan_code=0x7F),
    "fp6_e3m2": FloatFormat("fp6_e3m2", 6, ebits=3, mbits=2, bias=3, has_inf=False, nan="none", overflow="saturate"),
    "fp6_e2m3": FloatFormat("fp6_e2m3", 6, ebits=2, mbits=3, bias=1, has_inf=False, nan="none", overflow="saturate"),
    "fp4_e2m1": FloatFormat("fp4_e2m1", 4, ebits=2, mbits=1, bias=1, has_inf=False, nan="none", overflow="saturate"),
}

_CODEBOOKS: dict[str, CodebookFormat] = {
    "nf4": CodebookFormat("nf4", 4, table=NF4_VALUES),
}

_BLOCKS: dict[str, BlockFormat] = {
    name: BlockFormat(name, _FLOATS[elem].bits, element=_FLOATS[elem])
    for name, elem in (
        ("mxfp8_e4m3", "fp8_e4m3"),
        ("mxfp8_e5m2", "fp8_e5m2"),
        ("mxfp6_e3m2", "fp6_e3m2"),
        ("mxfp6_e2m3", "fp6_e2m3"),
        ("mxfp4", "fp4_e2m1"),
    )
}
_BLOCKS["mxint8"] = BlockFormat("mxint8", 8, element=IntFormat("int8", 8), element_scale=2.0**-6)
_BLOCKS["nvfp4"] = BlockFormat(
    "nvfp4",
    4,
    element=_FLOATS["fp4_e2m1"],
    block_size=16,
    scale_format="fp8_e4m3",
    tensor_scale=True,
)

_ALIASES = {
    "float32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "fp8_e4m3fn": "fp8_e4m3",
    "e4m3": "fp8_e4m3",
    "e5m2": "fp8_e5m2",
    "fp4": "fp4_e2m1",
    "mxfp8": "mxfp8_e4m3",
    "mxfp6": "mxfp6_e3m2",
    "mxfp4_e2m1": "mxfp4",
}

#: Every name :func:`get_format` knows besides ``int1``..``int16`` and ``uint1``..``uint16``
#: and the block-scaled formats of :data:`BLOCK_FORMAT_NAMES`.
FORMAT_NAMES: tuple[str, ...] = tuple(_FLOATS) + tuple(_CODEBOOKS)

#: The block-scaled formats :func:`get_format` knows (see :class:`BlockFormat`).
BLOCK_FORMAT_NAMES: tuple[str, ...] = tuple(_BLOCKS)

_INT_RE = re.compile(r"^(u?)int([0-9]+)$")  # ASCII digits only: "int٤" is no name

#: A format or its name: what :func:`get_format` accepts. The one name for this type in
#: quantlab (recipes that add a scale layout are :class:`quantlab.nn.QuantScheme` and
#: :class:`quantlab.memory.QuantSpec`).
FormatLike = Union[str, Format]


def get_format(fmt: FormatLike) -> Format:
    """Return the format object for a name (or pass a format object through).

    Args:
        fmt: ``"int1"`` .. ``"int16"``, ``"uint1"`` .. ``"uint16"``, ``"fp32"``, ``"fp16"``,
            ``"bf16"``, ``"fp8_e4m3"``, ``"fp8_e5m2"``, ``"fp6_e3m2"``, ``"fp6_e2m3"``,
            ``"fp4_e2m1"``, ``"nf4"``, the block-scaled ``"mxfp8_e4m3"``, ``"mxfp8_e5m2"``,
            ``"mxfp6_e3m2"``, ``"mxfp6_e2m3"``, ``"mxfp4"``, ``"mxint8"``, ``"nvfp4"``
            (case-insensitive; a few aliases such as ``"float16"``), or a :class:`Format`.

    Raises:
        ValueError: unknown name, or an integer width outside 1..16.
        TypeError: neither a string nor a Format.
    """
    if isinstance(fmt, Format):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a format name or a Format, got {type(fmt).__name__}")
    key = fmt.strip().lower()
    key = _ALIASES.get(key, key)
    m = _INT_RE.match(key)
    if m:
        bits = int(m.group(2))
        if not 1 <= bits <= 16:
            raise ValueError(f"integer formats have 1 to 16 bits, got {fmt!r} ({bits} bits)")
        signed = m.group(1) == ""
        return IntFormat(name=("int" if signed else "uint") + str(bits), bits=bits, signed=signed)
    if key in _FLOATS:
        return _FLOATS[key]
    if key in _CODEBOOKS:
        return _CODEBOOKS[key]
    if key in _BLOCKS:
        return _BLOCKS[key]
    raise ValueError(
        f"unknown format {fmt!r}; known: int1..int16, uint1..uint16, " + ", ".join(FORMAT_NAMES + BLOCK_FORMAT_NAMES)
    )
