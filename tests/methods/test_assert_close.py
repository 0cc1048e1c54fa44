"""tests/helpers.py's `assert_close`, which every loss test compares through: a NaN or an
infinity on both sides is two broken losses, not an agreement, unless a test says that
non-finite values are what it checks."""
from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import assert_close

NAN, INF = math.nan, math.inf


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("a,b", [(_t(NAN), _t(NAN)), (_t(1.0, NAN), _t(1.0, NAN)), (_t(INF), _t(INF)),
                                 (_t(-INF, 2.0), _t(-INF, 2.0)), (_t(NAN), _t(1.0)), (_t(1.0), _t(INF))])
def test_a_non_finite_value_fails(a, b):
    with pytest.raises(AssertionError, match="not finite"):
        assert_close(a, b, what="loss")


def test_finite_values_compare_within_tolerance():
    assert_close(_t(1.0, -2.0), _t(1.0 + 1e-9, -2.0), rtol=1e-6)
    with pytest.raises(AssertionError, match="loss"):
        assert_close(_t(1.0), _t(1.001), rtol=1e-6, what="loss")


def test_opting_out_still_requires_the_same_non_finite_values():
    assert_close(_t(NAN, INF, -INF, 1.0), _t(NAN, INF, -INF, 1.0), nonfinite_agree=True)
    for a, b in [(_t(NAN), _t(1.0)), (_t(INF), _t(-INF)), (_t(INF), _t(NAN))]:
        with pytest.raises(AssertionError):
            assert_close(a, b, nonfinite_agree=True)
