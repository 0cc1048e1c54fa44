"""The TRL stand-ins' guard (tests/trl_harness.py): a TRL other than the one the stand-ins
follow fails the TRL cross-checks instead of skipping them, and so does a test extra
installed without TRL; only a plain install (no test extra) skips them."""
from __future__ import annotations

import pytest

from tests import trl_harness as H


def test_the_pin_is_the_test_extras():
    assert f"trl=={H.PIN}" in H.test_extra()


@pytest.mark.parametrize("version,installed,action", [
    (H.PIN, False, None), ("1.17.0", True, "fail"), ("1.15.2", False, "fail"),
    (None, True, "fail"), (None, False, "skip")])
def test_what_needs_trl_does(version, installed, action):
    problem = H.trl_problem(version, installed=lambda requirement: installed)
    assert (problem and problem[0]) == action


def _a_test():
    pass


_a_test.checks = (("trl", "dpo"),)


def test_a_wrong_trl_fails_the_test_and_keeps_its_declaration():
    wrapped = H.needs_trl(_a_test, problem=H.trl_problem("1.17.0"))
    assert wrapped.__name__ == "_a_test" and wrapped.checks == _a_test.checks
    with pytest.raises(pytest.fail.Exception, match="found trl 1.17.0"):
        wrapped()


def test_no_test_extra_skips():
    wrapped = H.needs_trl(_a_test, problem=H.trl_problem(None, installed=lambda requirement: False))
    assert [m.name for m in wrapped.pytestmark] == ["skip"]
