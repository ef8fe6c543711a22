"""quantlab.core.validate: the argument checks every module shares, and the rule they keep
(TypeError for a value of the wrong kind, ValueError for a bad value of the right kind,
messages that name the parameter and the value)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import quantlab as ql
from quantlab.core import validate
from quantlab.nn import pack_codes, unpack_codes


@pytest.mark.parametrize(
    "check, good, expected",
    [
        (validate.check_positive_int, np.int64(3), 3),
        (validate.check_nonnegative_int, 0, 0),
        (validate.check_positive, 2, 2.0),
        (validate.check_positive, np.float32(0.5), 0.5),
    ],
)
def test_a_good_value_comes_back_as_a_plain_python_number(check, good, expected):
    out = check(good, "v")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "check, value, error, message",
    [
        (validate.check_positive_int, 1.0, TypeError, "v must be a positive int, got float 1.0"),
        (validate.check_positive_int, True, TypeError, "v must be a positive int, got bool True"),
        (validate.check_positive_int, 0, ValueError, "v must be positive, got 0"),
        (validate.check_nonnegative_int, "3", TypeError, "v must be a non-negative int, got str '3'"),
        (validate.check_nonnegative_int, -2, ValueError, "v must be a non-negative int, got -2"),
        (validate.check_positive, "0.1", TypeError, "v must be a real number, got str '0.1'"),
        (validate.check_positive, 0.0, ValueError, "v must be a finite number > 0, got 0.0"),
        (validate.check_positive, float("nan"), ValueError, "v must be a finite number > 0, got nan"),
        (validate.check_positive, float("inf"), ValueError, "v must be a finite number > 0, got inf"),
    ],
)
def test_wrong_kind_is_a_type_error_bad_value_a_value_error(check, value, error, message):
    with pytest.raises(error) as info:
        check(value, "v")
    assert str(info.value) == message


def test_none_passes_only_where_allowed():
    assert validate.check_positive_int(None, "group_size", allow_none=True) is None
    with pytest.raises(TypeError, match="^group_size must be a positive int, got NoneType None$"):
        validate.check_positive_int(None, "group_size")
    with pytest.raises(TypeError, match="^group_size must be a positive int or None, got str '4'$"):
        validate.check_positive_int("4", "group_size", allow_none=True)


@pytest.mark.parametrize("n, error", [(2.0, TypeError), ("2", TypeError), (True, TypeError), (-1, ValueError)])
def test_both_unpackers_refuse_the_same_n_the_same_way(n, error):
    """``n`` (how many codes) is checked by the one validator in core.packing.unpack and in
    nn.unpack_codes: same exception type, same message."""
    packed = ql.pack(torch.tensor([1, 2], dtype=torch.int8), 4)
    stored = pack_codes(torch.tensor([1, 2], dtype=torch.int8), 4)
    with pytest.raises(error) as core_err:
        ql.unpack(packed, 4, n, signed=True)
    with pytest.raises(error) as nn_err:
        unpack_codes(stored, 4, n, True)
    assert str(core_err.value) == str(nn_err.value)
    assert str(core_err.value).startswith("n must be a non-negative int, got ")


def test_the_former_module_name_still_imports():
    from quantlab.core import _validate

    assert _validate.check_int is validate.check_int and set(_validate.__all__) == set(validate.__all__)
