"""The examples in the core modules' docstrings run and print what they say."""

import doctest

import pytest

import quantlab.formats
import quantlab.quantize


@pytest.mark.parametrize("module", [quantlab.formats, quantlab.quantize])
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"np": __import__("numpy")})
    assert result.attempted > 0 and result.failed == 0
