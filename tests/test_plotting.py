"""quantlab.plotting.draw_bit_fields: one coloured cell per bit, in field order."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

import quantlab as ql
from quantlab import plotting


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _cells(ax):
    return sorted((p for p in ax.patches if isinstance(p, Rectangle)), key=lambda p: p.get_x())


@pytest.mark.parametrize("name", ["fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1"])
def test_one_cell_per_bit_coloured_by_field(ax, name):
    fmt = ql.get_format(name)
    fields = plotting.draw_bit_fields(ax, name, -0.1567)
    cells = _cells(ax)
    assert len(cells) == fmt.bits
    expected = ["sign"] + ["exponent"] * fmt.ebits + ["mantissa"] * fmt.mbits
    for cell, field in zip(cells, expected):
        assert cell.get_facecolor() == pytest.approx(to_rgba(plotting.FIELD_COLORS[field]))
    digits = [t.get_text() for t in ax.texts if t.get_text() in ("0", "1")]
    assert "".join(digits) == fields.sign_bits + fields.exponent_bits + fields.mantissa_bits
    assert fields == fmt.fields(-0.1567)


def test_fp16_minus_two_and_a_half_is_drawn_with_its_formula(ax):
    plotting.draw_bit_fields(ax, "fp16", -2.5)
    texts = [t.get_text() for t in ax.texts]
    assert "(-1)^1 x 2^1 x (1 + 256/1024) = -2.5" in texts
    assert "exponent (5)" in texts and "mantissa (10)" in texts
    assert ax.get_title(loc="left") == "fp16: -2.5 -> stored -2.5"


def test_title_and_formula_options(ax):
    plotting.draw_bit_fields(ax, "bf16", 0.0342, title="bf16", show_formula=False, colors={"sign": "red"})
    assert ax.get_title(loc="left") == "bf16"
    assert not any(t.get_text().startswith("(-1)") for t in ax.texts)
    assert _cells(ax)[0].get_facecolor() == pytest.approx(to_rgba("red"))


def test_describe_fields():
    assert plotting.describe_fields("fp16", -2.5) == "(-1)^1 x 2^1 x (1 + 256/1024) = -2.5"
    assert plotting.describe_fields("fp16", 2.0**-24) == "(-1)^0 x 2^-14 x (1/1024) = 5.9604645e-08"
    assert plotting.describe_fields("fp16", -0.0) == "-0"
    assert plotting.describe_fields("fp16", 1e6) == "+inf"


@pytest.mark.parametrize(
    "args, kwargs, err, match",
    [
        (("int8", 1.0), {}, TypeError, "fmt must be a floating-point format such as 'fp16', got int8"),
        (("nf4", 1.0), {}, TypeError, "fmt must be a floating-point format"),
        (("fp16", "1.0"), {}, TypeError, "value must be a real number, got str"),
        (("fp16", 1.0), {"colors": {"exp": "red"}}, ValueError, r"colors may only name .*got \['exp'\]"),
    ],
)
def test_errors(ax, args, kwargs, err, match):
    with pytest.raises(err, match=match):
        plotting.draw_bit_fields(ax, *args, **kwargs)


def test_ax_must_be_an_axes():
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes, got str"):
        plotting.draw_bit_fields("ax", "fp16", 1.0)
