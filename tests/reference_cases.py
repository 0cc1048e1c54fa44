"""Which library methods a loss test checks, declared on the test itself.

A test that compares a spec's loss and gradient with an independent oracle says so with
``checks``; tests/methods/test_coverage.py gathers the declarations from the test modules
of tests/methods and tests/equivalence and requires each library method to have a REFERENCE
case, and each method TRL 1.16 implements a TRL case::

    @checks(REFERENCE)                      # the methods: the values of the `method` parameter
    @pytest.mark.parametrize("method,params", CASES)
    def test_matches_reference(method, params): ...

    @checks(TRL, "gmpo")                    # or named, for a test of one method
    def test_gmpo_against_trl(): ...

The methods of a parametrized test are read from its own ``parametrize`` marks, so a case
added to (or removed from) a test's table is counted without a second list to keep in step.
"""
from __future__ import annotations

REFERENCE = "reference"  # the spec against a plain-torch reference written from the method's formula
TRL = "trl"              # the spec against TRL 1.16's own loss code (tests/trl_harness.py)
KINDS = (REFERENCE, TRL)


def _parametrized(test, arg: str) -> list[str]:
    values = []
    for mark in getattr(test, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names = mark.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if arg not in names:
            continue
        for case in mark.args[1]:
            case = getattr(case, "values", case)  # pytest.param(...)
            values.append(case[names.index(arg)] if len(names) > 1 else case)
    return values


def checks(kind: str, *methods: str, arg: str = "method"):
    """Declare that the decorated test checks ``methods`` (default: the values of its
    parametrized ``arg``) against an oracle of ``kind``. Put it above the ``parametrize``
    marks it reads and below ``needs_trl`` (which keeps the declaration)."""
    assert kind in KINDS, kind

    def declare(test):
        names = list(methods) or _parametrized(test, arg)
        if not names:
            raise TypeError(f"{test.__name__}: `checks` names no method and has no parametrized `{arg}`")
        test.checks = getattr(test, "checks", ()) + tuple((kind, name) for name in dict.fromkeys(names))
        return test
    return declare
