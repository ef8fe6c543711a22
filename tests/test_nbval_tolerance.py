"""The notebook comparison rules (tests/nbval_tolerance.py): what passes, what fails."""

import pytest
from nbval_tolerance import mismatch, split_numbers, tolerance_of


def test_tolerance_tags():
    assert tolerance_of(["hide-input"]) is None
    assert tolerance_of([]) is None
    assert tolerance_of(["rtol=0.01"]) == (0.01, 0.0)
    assert tolerance_of(["atol=0.5", "rtol=1e-3", "remove-cell"]) == (1e-3, 0.5)
    for bad in ["rtol=abc", "rtol=-1", "atol=nan", "rtol=inf"]:
        with pytest.raises(ValueError, match="tolerance"):
            tolerance_of([bad])


def test_numbers_are_split_from_text_and_names_stay_text():
    text, nums = split_numbers("int4 g64 RTN  4.25 bits/weight  ppl    27.56, fp16 1,234 (3.5%) 1e-05")
    assert nums == ["4.25", "27.56", "1,234", "3.5%", "1e-05"]
    assert "int4 g64 RTN" in text[0] and text[-1] == ""


def test_last_printed_digit_is_allowed_and_no_more():
    assert mismatch("ppl 21.83", "ppl 21.84", 0, 0) is None
    assert mismatch("ppl 21.83", "ppl 21.85", 0, 0) is not None
    assert mismatch("ppl 21.83", "ppl 21.85", 1e-3, 0) is None  # 0.02 <= 0.0218 + 0.01
    assert mismatch("ppl 21.83", "ppl 22.30", 1e-2, 0) is not None


def test_relative_and_absolute_tolerance():
    assert mismatch("0.9996280982", "0.9996280977", 1e-6, 0) is None
    assert mismatch("0.9996280982", "0.9986280977", 1e-6, 0) is not None
    assert mismatch("return 221.6", "return 271.9", 0, 60) is None
    assert mismatch("return 221.6", "return 371.9", 0, 60) is not None


def test_text_and_number_count_must_match():
    assert "text differs" in mismatch("Paris. 1.0", "Lyon. 1.0", 1, 1)
    assert "numbers" in mismatch("a 1.0 b", "a 1.0 b 2.0", 1, 1)
    # a number cannot turn into a format name or back
    assert mismatch("int4 0.5", "int8 0.5", 1, 1) is not None


def test_nan_matches_only_nan():
    assert mismatch("x nan", "x nan", 0, 0) is None  # "nan" is text, compared exactly
    assert mismatch("x 1.0", "x nan", 1, 1) is not None
