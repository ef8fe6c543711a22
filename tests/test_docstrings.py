"""The examples in the core modules' docstrings run and print what they say."""

import doctest
import importlib

import numpy as np
import pytest


@pytest.mark.parametrize("name", ["quantlab.formats", "quantlab.quantize"])
def test_docstring_examples(name):
    module = importlib.import_module(name)  # quantlab.quantize the module, not the function
    result = doctest.testmod(module, extraglobs={"np": np})
    assert result.attempted > 0 and result.failed == 0
