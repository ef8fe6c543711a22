"""The explorer's controls: what a setting is, and which quantlab call it stands for.

A setting is one position of the controls, ``(source, bits, granularity, symmetric,
family)`` (:class:`Settings`); :func:`resolve` turns it into the format and options that
:func:`quantlab.quantize` (or :mod:`quantlab.gguf_blocks`) is called with. A *preset*
(:data:`PRESETS`) is a named position of some controls: the formats people download
(``Q4_0``, ``Q4_K``, ``MXFP4``, ``NVFP4``, ``int8 per channel``).

Taught in: chapters/02_explorer.ipynb, "Try it first" and "The other controls".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Optional

import numpy as np

__all__ = [
    "BITS",
    "SOURCES",
    "GRANULARITIES",
    "FAMILIES",
    "BLOCK_FORMATS",
    "GROUP_SIZE",
    "FLOAT_FORMATS",
    "NORMAL_STD",
    "Settings",
    "Resolved",
    "resolve",
    "all_settings",
    "settings_index",
    "Preset",
    "PRESETS",
    "preset_of",
]

#: Standard deviation of the synthetic sources (the normal one first): its strip of 64
#: sample weights spans about -0.33 .. +0.33.
NORMAL_STD = 0.106
#: Slider stops: integer widths 2..16, then 32 (float32, the baseline). quantlab's integer
#: formats stop at 16 bits and nothing between 16 and 32 bits is used for weights.
BITS: tuple[int, ...] = tuple(range(2, 17)) + (32,)
#: Weight sources and their labels (:func:`quantlab.book.explorer.sources.weights` makes them).
SOURCES: dict[str, str] = {
    "normal": f"normal distribution (std {NORMAL_STD}, seeded)",
    "laplace": f"Laplace distribution (std {NORMAL_STD}): a sharper peak, longer tails",
    "uniform": f"uniform distribution (std {NORMAL_STD}): flat, no tails",
    "bimodal": "bimodal: two bumps at ±0.09 (std 0.106)",
    "outlier": "normal, with one planted outlier of 1.0",
    "minilm": "MiniLM layer 0, output.dense (real weights, with outliers)",
}
#: Granularities and their labels: one scale per tensor, per row, or per group of 64.
GRANULARITIES: dict[str, str] = {
    "tensor": "per-tensor",
    "channel": "per channel (row)",
    "group": "groups of 64",
}
#: Format families and their labels.
FAMILIES: dict[str, str] = {
    "int": "integer",
    "float": "float",
    "nf4": "NF4",
    "q4_0": "Q4_0 (llama.cpp)",
    "q4_k": "Q4_K (llama.cpp)",
    "mxfp4": "MXFP4 (blocks of 32)",
    "nvfp4": "NVFP4 (blocks of 16)",
}
#: The block-scaled families (4 bits only) and their block size: the weights of a row that
#: share one scale (for ``q4_k`` a sub-block; its super-blocks hold 256 weights).
BLOCK_FORMATS: dict[str, int] = {"q4_0": 32, "q4_k": 32, "mxfp4": 32, "nvfp4": 16}
#: Weights per group for ``granularity="group"`` (NF4's usual block size).
GROUP_SIZE = 64
#: Float formats of the ``"float"`` family by bit width (16 and 32 are plain casts).
FLOAT_FORMATS: dict[int, str] = {4: "fp4_e2m1", 6: "fp6_e2m3", 8: "fp8_e4m3", 16: "fp16", 32: "fp32"}


@dataclass(frozen=True)
class Settings:
    """One position of the explorer's controls.

    Attributes:
        source: a key of :data:`SOURCES`.
        bits: one of :data:`BITS`.
        granularity: ``"tensor"``, ``"channel"`` (one scale per row) or ``"group"``
            (groups of :data:`GROUP_SIZE`).
        symmetric: zero point 0 (True) or a zero point (False, integer formats only).
        family: a key of :data:`FAMILIES`: ``"int"``, ``"float"``, ``"nf4"``, or a block
            format of :data:`BLOCK_FORMATS`.

    Raises:
        ValueError, TypeError: a value outside its choices (the message names the field).
    """

    source: str = "normal"
    bits: int = 8
    granularity: str = "tensor"
    symmetric: bool = True
    family: str = "int"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {tuple(SOURCES)}, got {self.source!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise TypeError(f"bits must be an int, got {self.bits!r}")
        if self.bits not in BITS:
            raise ValueError(f"bits must be 2..16 or 32, got {self.bits}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {tuple(GRANULARITIES)}, got {self.granularity!r}")
        if not isinstance(self.symmetric, (bool, np.bool_)):
            raise TypeError(f"symmetric must be True or False, got {self.symmetric!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {tuple(FAMILIES)}, got {self.family!r}")

    @property
    def key(self) -> str:
        """Readable key, e.g. ``"normal|8|tensor|s|int"`` (the static page shows it as
        ``data-key`` on its root element)."""
        sym = "s" if self.symmetric else "a"
        return f"{self.source}|{self.bits}|{self.granularity}|{sym}|{self.family}"

    def controls(self) -> dict[str, Any]:
        """The five controls as keyword arguments (for :func:`explore`, :meth:`Explorer.set`)."""
        return dict(
            source=self.source,
            bits=self.bits,
            granularity=self.granularity,
            symmetric=self.symmetric,
            family=self.family,
        )


@dataclass(frozen=True)
class Resolved:
    """What a setting actually computes.

    Attributes:
        fmt: the quantlab format name (``"q4_0"`` and ``"q4_k"`` for llama.cpp's GGUF
            blocks), or None where the family has no such width.
        granularity: ``"tensor"``, ``"channel"`` or ``"group"``; ``"block"`` for the block
            formats (their blocks are fixed); None for an unscaled cast (fp16, fp32).
        symmetric: whether the grid is symmetric (always, except asymmetric integers).
        notes: how the controls were interpreted, in words.
    """

    fmt: Optional[str]
    granularity: Optional[str]
    symmetric: bool
    notes: tuple[str, ...] = ()


_BLOCK_NOTES = {
    "q4_0": "Q4_0 fixes its own blocks (32 weights of a row share one fp16 scale, and the codes "
    "0..15 stand for −8..7) and sets its own range, so the granularity and range "
    "controls do not apply",
    "q4_k": "Q4_K fixes its own blocks (32 weights share a 6-bit scale and min, 256 weights "
    "their fp16 d and dmin) and sets its own offsets, so the granularity and range "
    "controls do not apply",
    "mxfp4": "MXFP4 fixes its own blocks (32 weights of a row share one power-of-two scale) and "
    "is symmetric, so the granularity and range controls do not apply",
    "nvfp4": "NVFP4 fixes its own blocks (16 weights of a row share one fp8 scale, times one fp32 "
    "scale for the tensor) and is symmetric, so the granularity and range controls do "
    "not apply",
}


def resolve(settings: Settings) -> Resolved:
    """Map a control setting to the quantlab call it stands for.

    * 32 bits is always float32 itself (an exact cast, whatever the other controls say).
    * ``"int"``: ``int2`` .. ``int16`` with a scale (and a zero point if asymmetric).
    * ``"float"``: ``fp4_e2m1``, ``fp6_e2m3``, ``fp8_e4m3`` with a scale; ``fp16`` is a
      plain cast. Other widths have no float format (``fmt=None``).
    * ``"nf4"``: NF4 at 4 bits only.
    * the block formats (``"q4_0"``, ``"q4_k"``, ``"mxfp4"``, ``"nvfp4"``): at 4 bits only,
      with ``granularity="block"``: their blocks and scales are fixed by the format, so the
      granularity and range controls do not apply (a note says so).
    Float and NF4 formats are symmetric (a zero point needs an integer format).

    Args:
        settings: the controls.

    Returns:
        The :class:`Resolved` call.
    """
    b, fam = settings.bits, settings.family
    if b == 32:
        return Resolved("fp32", None, True, ("fp32 is stored as is: no scale, no grid to choose",))
    if fam == "int":
        return Resolved(f"int{b}", settings.granularity, bool(settings.symmetric))
    if fam in BLOCK_FORMATS:
        name = fam.upper()
        if b != 4:
            return Resolved(None, None, True, (f"{name} is a 4-bit format: no {b}-bit {name}",))
        return Resolved(fam, "block", True, (_BLOCK_NOTES[fam],))
    notes: list[str] = []
    if not settings.symmetric:
        notes.append("float and NF4 formats are symmetric (a zero point needs integers)")
    if fam == "float":
        name = FLOAT_FORMATS.get(b)
        if name is None:
            widths = ", ".join(str(k) for k in FLOAT_FORMATS)
            return Resolved(None, None, True, (f"no {b}-bit float format: floats here have {widths} bits",))
        if b == 16:
            notes.append("fp16 is a plain cast: no scale, so granularity does not apply")
            return Resolved(name, None, True, tuple(notes))
        return Resolved(name, settings.granularity, True, tuple(notes))
    if b != 4:
        return Resolved(None, None, True, (f"NF4 is a 4-bit format: no {b}-bit NF4",))
    return Resolved("nf4", settings.granularity, True, tuple(notes))


#: The order of the controls' choices in :func:`all_settings` and :func:`settings_index`.
_AXES = (tuple(SOURCES), tuple(FAMILIES), tuple(GRANULARITIES), (True, False), BITS)


def all_settings() -> Iterator[Settings]:
    """Every combination of the controls, in a fixed order: source, family, granularity,
    symmetric (True first), bits, the last changing fastest (see :func:`settings_index`)."""
    for source in SOURCES:
        for family in FAMILIES:
            for granularity in GRANULARITIES:
                for symmetric in (True, False):
                    for bits in BITS:
                        yield Settings(source, bits, granularity, symmetric, family)


def settings_index(settings: Settings) -> int:
    """The position of ``settings`` in :func:`all_settings`: a mixed-radix number whose
    digits are the positions of the source in :data:`SOURCES`, the family in
    :data:`FAMILIES`, the granularity in :data:`GRANULARITIES`, symmetric (0) or not (1)
    and the bits in :data:`BITS`. The static page computes the same number from its
    controls to find a setting's entry.

    Example:
        >>> settings_index(Settings("normal", 2, "tensor", True, "int"))
        0
        >>> settings_index(Settings("normal", 32, "tensor", False, "int"))
        31
    """
    if not isinstance(settings, Settings):
        raise TypeError(f"settings must be a Settings, got {type(settings).__name__}")
    digits = (settings.source, settings.family, settings.granularity, settings.symmetric, settings.bits)
    index = 0
    for axis, value in zip(_AXES, digits):
        index = index * len(axis) + axis.index(value)
    return index


@dataclass(frozen=True)
class Preset:
    """A named position of some controls: a format as people download it.

    Attributes:
        name: the name the format goes by (``"Q4_K"``).
        about: one sentence on where it is used and how it stores a weight.
        controls: the controls it sets (a subset of ``bits``, ``family``, ``granularity``,
            ``symmetric``); the others, the weights included, stay as they are.
    """

    name: str
    about: str
    controls: dict[str, Any] = field(default_factory=dict)

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with this preset's controls set."""
        return replace(settings, **self.controls)

    def matches(self, settings: Settings) -> bool:
        """True when every control this preset sets has its value in ``settings``."""
        return all(getattr(settings, k) == v for k, v in self.controls.items())


#: The presets, by name: the 4-bit formats of downloadable models, and int8 per channel.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "Q4_0",
            "llama.cpp's original 4-bit GGUF type: 32 weights share one fp16 scale d, "
            "and each weight is d times an integer from −8 to 7 (4.5 bits per weight).",
            {"bits": 4, "family": "q4_0"},
        ),
        Preset(
            "Q4_K",
            "the k-quant inside most 4-bit GGUF downloads (Q4_K_M, Q4_K_S): sub-blocks "
            "of 32 with a 6-bit scale and min, super-blocks of 256 with two fp16 numbers "
            "(4.5 bits per weight).",
            {"bits": 4, "family": "q4_k"},
        ),
        Preset(
            "MXFP4",
            "the OCP microscaling 4-bit float: 32 weights share one power of two, and "
            "each weight is one of 16 tiny floats (4.25 bits per weight).",
            {"bits": 4, "family": "mxfp4"},
        ),
        Preset(
            "NVFP4",
            "NVIDIA's 4-bit float for Blackwell GPUs: 16 weights share an fp8 scale, "
            "on top of one fp32 scale per tensor (4.5 bits per weight).",
            {"bits": 4, "family": "nvfp4"},
        ),
        Preset(
            "int8 per channel",
            "the usual 8-bit weight format of inference runtimes: one scale "
            "per output row, symmetric integers from −127 to 127.",
            {"bits": 8, "family": "int", "granularity": "channel", "symmetric": True},
        ),
    )
}


def preset_of(settings: Settings) -> Optional[str]:
    """The name of the first preset that ``settings`` matches, or None."""
    for name, preset in PRESETS.items():
        if preset.matches(settings):
            return name
    return None
