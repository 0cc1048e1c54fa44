"""The equivalence engine: do two methods (or weighted sums of methods) give the
same loss and gradients on every input? Hypothesis searches for a counterexample
and shrinks it; `Report.render()` shows it.

    ptdsl.equivalent("cdpo", "dpo", params_a={"label_smoothing": 0})   # -> Report
    assert_equivalent("cdpo", "dpo", params_a={"label_smoothing": 0})  # in pytest

Importing this package imports neither torch nor hypothesis (the CLI stays fast);
the engine loads them on first use.
"""
from __future__ import annotations

from ptdsl.equivalence.sides import Term

__all__ = ["equivalent", "assert_equivalent", "Term"]


def equivalent(a, b, *, params_a=None, params_b=None, examples: int = 200, seed: int = 0,
               mode: str = "value-and-gradient", rtol: float = 1e-6, atol: float = 1e-9, given=(),
               adapter: str | None = None):
    """Compare two sides on hypothesis-generated inputs; returns a `Report` (truthy when they agree).

    A side is a method name (or path), a `Term`, or a sequence of Terms / (weight, name[, params])
    tuples summed. `given` names conditions that shape the inputs (equivalence/conditions.py),
    e.g. ("on_policy",) or ("length=3",). `mode` is value-and-gradient, gradient or value.
    `adapter` names a layout adapter (equivalence/adapters.py) when the two sides read differently
    laid-out rows, e.g. "paired-to-unpaired": one side's inputs are drawn, the other's built from them.
    """
    from ptdsl.equivalence.engine import check
    from ptdsl.equivalence.sides import terms_of
    return check(terms_of(a, params_a), terms_of(b, params_b), examples=examples, seed=seed, mode=mode,
                 rtol=rtol, atol=atol, conditions=given, adapter=adapter)


def assert_equivalent(a, b, **kwargs):
    """`equivalent(...)` for tests: raises AssertionError with the rendered counterexample."""
    report = equivalent(a, b, **kwargs)
    if not report.passed:
        raise AssertionError("\n" + report.render())
    return report
