"""The block inspector: one block of a block format taken apart, scales as stored.

For the block formats of :data:`~quantlab.book.explorer.settings.BLOCK_FORMATS`
(``q4_0``, ``q4_k``, ``mxfp4``, ``nvfp4``), :func:`block_view` takes the first block of the
strip apart: its shared scales as the format stores them (code, bits, value), and every
weight's code, element value and decoded value. :meth:`BlockView.describe` is the one
description of what the inspector shows (texts and table cells); every front end renders
that description (:mod:`.markup` in Python, the page's script in the browser).

Taught in: chapters/02_explorer.ipynb, "Blocks that share a scale".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any, Optional, Union

import numpy as np
import torch

from ...core import gguf_blocks
from ...core.formats import BlockFormat
from ...core.mx import E8M0_BIAS, scale_codes
from ...core.quantize import quantize
from . import markup
from .settings import BLOCK_FORMATS, FAMILIES, GROUP_SIZE, SOURCES
from .sources import strip_location, weights

__all__ = ["BlockScale", "BlockView", "block_view", "block_quantized", "rounded", "DECIMALS"]

#: Decimals of the positions the inspector and the static page show (1e-4 is a tenth of a
#: pixel on the page's number line).
DECIMALS = 4


def rounded(a: Union[np.ndarray, torch.Tensor]) -> list[float]:
    """Values rounded to :data:`DECIMALS` decimals, as Python floats (``-0.0`` becomes 0)."""
    return [float(v) + 0.0 for v in np.round(np.asarray(a, dtype=np.float64), DECIMALS)]


@cache
def block_quantized(source: str, family: str) -> tuple[Any, torch.Tensor, float]:
    """A source in a block format: what is stored (the :class:`QTensor` of ``mxfp4`` and
    ``nvfp4``, the GGUF bytes of ``q4_0`` and ``q4_k``), the decoded weights (float32) and
    the bits per weight with every scale counted. Cached: treat the results as read-only."""
    x = weights(source)
    if family in ("q4_0", "q4_k"):
        raw = gguf_blocks.quantize_blocks(x, family)
        return raw, gguf_blocks.dequantize_blocks(raw, family), 8 * raw.numel() / x.numel()
    q = quantize(x, family)
    return q, q.dequantize(), q.bits_per_weight


@dataclass(frozen=True)
class BlockScale:
    """One scale of a block, as the format stores it.

    Attributes:
        name: its symbol in the decoding formula: ``"d"`` (q4_0); ``"X"`` (mxfp4); ``"s_b"``,
            ``"g"`` (nvfp4); ``"d"``, ``"dmin"``, ``"sc"``, ``"m"`` (q4_k) and the two products
            ``"d·sc"``, ``"dmin·m"`` that q4_k's decoder computes from them.
        value: the number it stands for.
        stored: how it is stored: ``"E8M0"``, ``"fp8 e4m3"``, ``"fp32"``, ``"fp16"``,
            ``"6-bit integer"``, or ``"computed"`` (not stored).
        code: the stored integer: the E8M0 code, the bit pattern of a float, the 6-bit
            integer; None when computed.
        bits: ``code`` in binary; for a float its sign, exponent and mantissa fields,
            separated by spaces (``"0 0101 100"``). None when computed.
        text: ``value`` as displayed: the shortest decimal that reads back to the stored
            number (for E8M0 also the power of two, ``"2^-5 = 0.03125"``).
        meaning: what it does, in words.
    """

    name: str
    value: float
    stored: str
    code: Optional[int]
    bits: Optional[str]
    text: str
    meaning: str


@dataclass(frozen=True, repr=False, eq=False)
class BlockView:
    """One block of a block format, taken apart: the block inspector (:func:`block_view`).

    Attributes:
        source, family: the weights (:data:`SOURCES`) and the format (:data:`BLOCK_FORMATS`).
        label: the format's label (:data:`FAMILIES`).
        block_size: weights in the block: 32 (q4_0, mxfp4, a q4_k sub-block) or 16 (nvfp4).
        row, start: the block is ``weights(source)[row, start : start + block_size]``.
        where: that position in words (for q4_k with its super-block).
        formula: how a weight is decoded.
        scales: the block's scales as stored (:class:`BlockScale`), in the formula's order.
        original: the block's float32 weights (as float64).
        codes: the stored 4-bit codes (int64, 0..15).
        code_bits: each code as a 4-character bit string.
        element: each code's value before the scales: the fp4 e2m1 value (mxfp4, nvfp4),
            the integer ``q`` itself (q4_k) or ``q - 8`` (q4_0).
        element_name: what ``element`` is: ``"e2m1"``, ``"q"`` or ``"q − 8"``.
        x_hat: the decoded weights, as quantlab decodes them (float32 values, as float64).
        values: every value a weight of this block can take (the 16 codes decoded with
            the block's scales), unique and ascending: the strip's grid for this format.
    """

    source: str
    family: str
    label: str
    block_size: int
    row: int
    start: int
    where: str
    formula: str
    scales: tuple[BlockScale, ...]
    original: np.ndarray
    codes: np.ndarray
    code_bits: tuple[str, ...]
    element: np.ndarray
    element_name: str
    x_hat: np.ndarray
    values: np.ndarray

    #: Column titles of the table of scales (:meth:`scale_rows`).
    SCALE_HEAD = ("scale", "stored as", "code", "bits", "value", "what it does")

    @property
    def columns(self) -> range:
        """The block's columns in its row."""
        return range(self.start, self.start + self.block_size)

    def scale(self, name: str) -> BlockScale:
        """The scale called ``name`` (see :attr:`BlockScale.name`).

        Raises:
            KeyError: the format has no scale of that name.
        """
        for s in self.scales:
            if s.name == name:
                return s
        raise KeyError(f"{self.family} has no scale {name!r}: it has {[s.name for s in self.scales]}")

    @property
    def head(self) -> tuple[str, ...]:
        """Column titles of the element table (:meth:`rows`)."""
        elem = "e2m1 value" if self.element_name == "e2m1" else self.element_name
        return ("weight", "original x", "code", "bits", elem, "decoded x̂")

    def rows(self) -> list[tuple[str, ...]]:
        """The element table as displayed: positions rounded to 1e-4, codes as integers
        and bit strings, element values exactly."""
        x, xh = rounded(self.original), rounded(self.x_hat)
        return [
            (
                str(c),
                f"{x[i]:.{DECIMALS}f}",
                str(int(self.codes[i])),
                self.code_bits[i],
                element_text(self.element[i]),
                f"{xh[i]:.{DECIMALS}f}",
            )
            for i, c in enumerate(self.columns)
        ]

    def scale_rows(self) -> list[tuple[str, ...]]:
        """The scales as displayed: name, how stored, stored integer, its bits, value, meaning."""
        return [
            (s.name, s.stored, "" if s.code is None else str(s.code), s.bits or "", s.text, s.meaning)
            for s in self.scales
        ]

    def describe(self) -> dict[str, Any]:
        """What the inspector shows, as one description every front end renders.

        Every word and number the reader sees is here, already formatted; the renderers
        (:func:`.markup.panel_html` for notebooks and the kernel widget,
        :func:`.markup.panel_text` for ``repr``, ``drawPanel`` in the static page's script)
        only lay it out, and know nothing of any format.

        Returns:
            ``{"title", "text", "tables": [{"role", "align", "head", "rows"}, ...]}``:

            * ``title``: ``"Block inspector: MXFP4 (blocks of 32)"``;
            * ``text``: the block's place and its decoding formula, a sentence
              (``"Row 3, weights 0–31. x̂ = e2m1(code) · X, with X = 2^(c − 127)"``);
            * ``tables``: two tables of strings, each with its ``data-role`` (``role``),
              the alignment of its columns (``align``: ``"left"`` or ``"right"``), its
              column titles (``head``) and its cells (``rows``, as many cells as ``head``):
              the scales (``role="block-scales"``, left-aligned, :meth:`scale_rows`) and
              one row per weight (``role="block-table"``, right-aligned, :meth:`rows`).
        """
        return {
            "title": f"Block inspector: {self.label}",
            "text": f"{self.where[:1].upper()}{self.where[1:]}. {self.formula}",
            "tables": [
                {
                    "role": "block-scales",
                    "align": "left",
                    "head": list(self.SCALE_HEAD),
                    "rows": [list(r) for r in self.scale_rows()],
                },
                {
                    "role": "block-table",
                    "align": "right",
                    "head": list(self.head),
                    "rows": [list(r) for r in self.rows()],
                },
            ],
        }

    def to_html(self) -> str:
        """The inspector as HTML with inline styles (notebooks and the kernel widget)."""
        return markup.panel_html(self.describe())

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return markup.panel_text(self.describe())


def element_text(v: float) -> str:
    """An element value as displayed: ``"1.5"``, ``"-6"``, ``"-0"`` (e2m1's negative zero)."""
    v = float(v)
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    return f"{v:g}"


def _shortest(v: Union[float, torch.Tensor, np.floating], dtype: type) -> str:
    """``v`` as ``dtype`` (numpy float32 or float16), in the shortest decimal that reads back."""
    return np.format_float_positional(dtype(float(v)), unique=True, trim="-")


def _float_bits(code: int, ebits: int, mbits: int) -> str:
    """The bit pattern of a float as ``"sign exponent mantissa"`` (``"0 0101 100"``)."""
    b = f"{code:0{1 + ebits + mbits}b}"
    return f"{b[0]} {b[1 : 1 + ebits]} {b[1 + ebits :]}"


def _fp16_scale(name: str, d: np.float16, meaning: str) -> BlockScale:
    code = int(np.float16(d).view(np.uint16))
    return BlockScale(name, float(d), "fp16", code, _float_bits(code, 5, 10), _shortest(d, np.float16), meaning)


def _view_mx(source: str, family: str, row: int, start: int) -> dict[str, Any]:
    """The fields of an mxfp4 / nvfp4 :class:`BlockView` that depend on the format."""
    q, _, _ = block_quantized(source, family)
    fmt: BlockFormat = q.format
    el = fmt.element
    k = fmt.block_size
    codes = q.codes[row, start : start + k]
    every = torch.arange(1 << el.bits).to(el.code_dtype)
    b = start // k
    sb = q.scale[row, b]  # float32
    code = int(scale_codes(q)[row, b])
    if family == "mxfp4":
        scales = (
            BlockScale(
                "X",
                float(sb),
                "E8M0",
                code,
                f"{code:08b}",
                f"2^{code - E8M0_BIAS} = {_shortest(sb, np.float32)}",
                f"the scale the {k} weights share: 2^(c − {E8M0_BIAS}) for the stored code c",
            ),
        )
        values = el.decode(every).float() * sb
        formula = "x̂ = e2m1(code) · X, with X = 2^(c − 127)"
    else:
        g = q.tensor_scale  # 0-d float32
        gcode = int(np.float32(float(g)).view(np.uint32))
        scales = (
            BlockScale(
                "s_b",
                float(sb),
                "fp8 e4m3",
                code,
                _float_bits(code, 4, 3),
                _shortest(sb, np.float32),
                f"the scale of these {k} weights",
            ),
            BlockScale(
                "g",
                float(g),
                "fp32",
                gcode,
                _float_bits(gcode, 8, 23),
                _shortest(g, np.float32),
                "one scale for the whole tensor: max|x| / (448 · 6)",
            ),
        )
        values = (el.decode(every).float() * sb) * g
        formula = "x̂ = (e2m1(code) · s_b) · g"
    return dict(
        scales=scales,
        codes=codes.long().numpy(),
        element=el.decode(codes).double().numpy(),
        element_name="e2m1",
        values=values.double().numpy(),
        formula=formula,
    )


def _view_q4_0(source: str, row: int, start: int) -> dict[str, Any]:
    """The fields of a q4_0 :class:`BlockView`: the block's fp16 ``d`` and its codes ``q``,
    read through quantlab's QTensor view of the GGUF bytes (:func:`gguf_blocks.to_qtensor`)."""
    raw, _, _ = block_quantized(source, "q4_0")
    q = gguf_blocks.to_qtensor(raw, "q4_0")  # codes q - 8 (int4), one fp16 scale per 32
    k = gguf_blocks.BLOCK_SIZE
    signed = q.codes[row, start : start + k].long()
    d = np.float16(float(q.scale[row, start // k]))
    scales = (
        _fp16_scale(
            "d",
            d,
            f"the scale the {k} weights share: max|x| / 8, with the sign that puts the largest weight on the code −8",
        ),
    )
    values = np.float32(d) * np.arange(-8, 8, dtype=np.float32)  # float32, as the decoder
    return dict(
        scales=scales,
        codes=(signed + 8).numpy(),
        element=signed.double().numpy(),
        element_name="q − 8",
        values=values.astype(np.float64),
        formula="x̂ = d · (q − 8)",
    )


def _q4_k_scale_min(packed: torch.Tensor, j: int) -> tuple[int, int]:
    """Sub-block ``j``'s 6-bit scale and min from a Q4_K super-block's 12 scale bytes
    (llama.cpp's ``get_scale_min_k4``)."""
    b = [int(v) for v in packed]
    if j < 4:
        return b[j] & 63, b[j + 4] & 63
    return (b[j + 4] & 15) | ((b[j - 4] >> 6) << 4), (b[j + 4] >> 4) | ((b[j] >> 6) << 4)


def _view_q4_k(source: str, row: int, start: int) -> dict[str, Any]:
    """The fields of a q4_k :class:`BlockView` that depend on the format: the super-block's
    bytes read as llama.cpp lays them out (d, dmin, the 6-bit scales and mins, the nibbles)."""
    raw, _, _ = block_quantized(source, "q4_k")
    size, nbytes = gguf_blocks.QK_K, gguf_blocks.BLOCK_BYTES["q4_k"]
    s, j = divmod(start, size)[0], (start % size) // 32
    blk = raw[row, s * nbytes : (s + 1) * nbytes]
    d_code, dmin_code = int(blk[0]) | int(blk[1]) << 8, int(blk[2]) | int(blk[3]) << 8
    d, dmin = (np.uint16(c).view(np.float16) for c in (d_code, dmin_code))
    sc, m = _q4_k_scale_min(blk[4:16], j)
    c, high = divmod(j, 2)  # byte 16 + 32c + l: weight 64c + l (low nibble), 64c + 32 + l (high)
    codes = (blk[16 + 32 * c : 16 + 32 * (c + 1)].long() >> (4 * high)) & 15
    step, offset = np.float32(d) * np.float32(sc), np.float32(dmin) * np.float32(m)
    first = s * size
    scales = (
        _fp16_scale("d", d, f"scale of the 8 sub-block scales of the super-block (weights {first}–{first + size - 1})"),
        _fp16_scale("dmin", dmin, "scale of the 8 sub-block mins of the super-block"),
        BlockScale(
            "sc",
            float(sc),
            "6-bit integer",
            sc,
            f"{sc:06b}",
            str(sc),
            f"this sub-block's scale, in units of d (sub-block {j} of 8)",
        ),
        BlockScale("m", float(m), "6-bit integer", m, f"{m:06b}", str(m), "this sub-block's min, in units of dmin"),
        BlockScale(
            "d·sc",
            float(step),
            "computed",
            None,
            None,
            _shortest(step, np.float32),
            "the step between neighbouring codes q",
        ),
        BlockScale(
            "dmin·m",
            float(offset),
            "computed",
            None,
            None,
            _shortest(offset, np.float32),
            "the offset subtracted from every weight of the sub-block",
        ),
    )
    values = step * np.arange(16, dtype=np.float32) - offset  # float32, as the decoder
    return dict(
        scales=scales,
        codes=codes.numpy(),
        element=codes.double().numpy(),
        element_name="q",
        values=values.astype(np.float64),
        formula="x̂ = (d · sc) · q − dmin · m",
        where_extra=f" (sub-block {j} of the super-block of weights {first}–{first + size - 1})",
    )


@cache
def _block_view(source: str, family: str) -> BlockView:
    row, group = strip_location(source)
    start, k = group * GROUP_SIZE, BLOCK_FORMATS[family]
    if family == "q4_k":
        parts = _view_q4_k(source, row, start)
    elif family == "q4_0":
        parts = _view_q4_0(source, row, start)
    else:
        parts = _view_mx(source, family, row, start)
    where = f"row {row}, weights {start}–{start + k - 1}" + parts.pop("where_extra", "")
    _, x_hat, _ = block_quantized(source, family)
    view = BlockView(
        source=source,
        family=family,
        label=FAMILIES[family],
        block_size=k,
        row=row,
        start=start,
        where=where,
        original=weights(source)[row, start : start + k].double().numpy(),
        code_bits=tuple(f"{int(c):04b}" for c in parts["codes"]),
        x_hat=x_hat[row, start : start + k].double().numpy(),
        **{**parts, "values": np.unique(parts["values"])},
    )
    for name in ("original", "codes", "element", "x_hat", "values"):
        getattr(view, name).flags.writeable = False
    return view


def block_view(source: str = "normal", family: str = "mxfp4") -> BlockView:
    """The block inspector: the first block of the strip's 64 weights in a block format.

    The strip (:func:`strip_location`) starts a block in every block format, so its
    first ``block_size`` weights are one whole block, which this takes apart with the
    scales as stored:

    * ``"q4_0"`` (llama.cpp, blocks of 32): one fp16 scale ``d`` and 4-bit codes ``q``:
      ``x_hat = d * (q - 8)``.
    * ``"q4_k"`` (llama.cpp): super-blocks of 256 weights with fp16 ``d`` and ``dmin``,
      each of their 8 sub-blocks of 32 with a 6-bit scale ``sc`` and a 6-bit min ``m``,
      and 4-bit codes ``q``: ``x_hat = (d * sc) * q - dmin * m`` in float32.
    * ``"mxfp4"`` (OCP MX, blocks of 32): one E8M0 code ``c`` per block,
      ``X = 2^(c - 127)``, and fp4 e2m1 elements: ``x_hat = e2m1(code) * X``.
    * ``"nvfp4"`` (blocks of 16): an fp8 e4m3 block scale ``s_b`` and one fp32 scale ``g``
      per tensor: ``x_hat = (e2m1(code) * s_b) * g`` in float32.

    The codes and scales come from quantlab's own quantizers (:func:`quantlab.quantize`
    with ``"mxfp4"`` / ``"nvfp4"``, :func:`quantlab.gguf_blocks.quantize_blocks` with
    ``"q4_0"`` / ``"q4_k"``) and ``x_hat`` from their decoders: it equals the explorer's
    snapped values for these weights. Results are cached; their arrays are read-only.

    Args:
        source: a key of :data:`SOURCES`.
        family: a key of :data:`BLOCK_FORMATS`.

    Returns:
        :class:`BlockView` (a table in notebooks).

    Raises:
        ValueError: an unknown source, or a family that is not a block format (the
            message names the parameter).

    Example:
        >>> v = block_view("normal", "mxfp4")
        >>> v.block_size, v.scale("X").stored, len(v.rows())
        (32, 'E8M0', 32)
    """
    if not isinstance(source, str) or source not in SOURCES:
        raise ValueError(f"source must be one of {tuple(SOURCES)}, got {source!r}")
    if not isinstance(family, str) or family not in BLOCK_FORMATS:
        raise ValueError(f"family must be a block format, one of {tuple(BLOCK_FORMATS)}, got {family!r}")
    return _block_view(source, family)


def clear_cache() -> None:
    """Forget the block formats' results (with :func:`.data.clear_cache`)."""
    block_quantized.cache_clear()
    _block_view.cache_clear()
