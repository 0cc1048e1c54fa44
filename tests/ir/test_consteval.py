"""Constant arithmetic (ir/consteval.py): float semantics with bounded magnitudes.
Overflow, results with no real value and poles are errors for parameters (E0404 at
the span), computed at once however large the numbers (issue 9, items 2–4)."""
import math
import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

import ptdsl
from ptdsl.ir.consteval import MAX_EXACT_INT, NoRealValue, Overflow, Pole, apply, arith

SMALL = st.integers(-10 ** 6, 10 ** 6)


@given(a=SMALL, b=SMALL, op=st.sampled_from("+-*"))
def test_small_ints_stay_exact_ints(a, b, op):
    want = {"+": a + b, "-": a - b, "*": a * b}[op]
    got = arith(op, a, b)
    assert type(got) is int and got == want


@given(a=st.integers(-40, 40), b=st.integers(0, 60))
def test_int_powers_exact_while_small(a, b):
    want = Fraction(a) ** b
    got = arith("^", a, b)
    if abs(want) <= MAX_EXACT_INT:
        assert type(got) is int and got == want
    else:  # beyond 2**53 a power is a double: the nearest one to the exact value
        assert type(got) is float and got == pytest.approx(float(want), rel=1e-15)


@pytest.mark.parametrize("op,a,b", [("^", 9, 9 ** 9), ("^", 10, 5000), ("*", 1e300, 1e300),
                                    ("+", 1.7e308, 1.7e308), ("^", 2, 1024), ("/", 1e300, 1e-300)])
def test_overflow_is_reported_not_computed(op, a, b):
    with pytest.raises(Overflow):
        arith(op, a, b)


def test_negative_base_to_a_fractional_power_has_no_real_value():
    with pytest.raises(NoRealValue):
        arith("^", -1, 0.5)
    with pytest.raises(NoRealValue):
        apply(math.sqrt, -1.0)


def test_division_by_zero_is_a_pole():
    with pytest.raises(Pole):
        arith("/", 1, 0)
    with pytest.raises(Pole):
        arith("^", 0, -1)


def test_non_finite_operands_follow_ieee():
    assert math.isnan(apply(lambda a, b: a - b, math.inf, math.inf))
    assert apply(math.exp, math.inf) == math.inf
    assert math.isnan(apply(math.sqrt, -math.inf))


# ---- through the compiler: parameters and options --------------------------------

HEAD = 'method c "constants"\ndata sft\npolicy\n'
LOSS = "loss -mean(logp(policy, completion))\n"


def _compile(tmp_path, body, **overrides):
    f = tmp_path / "c.ptdsl"
    f.write_text(HEAD + body + LOSS)
    return ptdsl.compile(str(f), **overrides)


def _error(tmp_path, body, **overrides):
    with pytest.raises(ptdsl.SpecError) as info:
        _compile(tmp_path, body, **overrides)
    return info.value.diagnostics[0]


@pytest.mark.parametrize("default,col", [("9^9^9", 11), ("10^5000 < 0", 11), ("2^1024", 11),
                                         ("1 + 10^400", 15), ("exp(1000)", 11)])
def test_param_overflow_is_e0404_at_the_span(tmp_path, default, col):
    d = _error(tmp_path, f"param a = {default}\n")
    assert d.code == "E0404" and d.span.line == 4 and d.span.col == col, str(d)
    assert "overflows" in d.labels[0].text


def test_param_with_no_real_value_is_e0404(tmp_path):
    d = _error(tmp_path, "param a = (0 - 1) ^ 0.5\n")
    assert d.code == "E0404" and "no real value" in d.labels[0].text


def test_constraint_over_huge_values_formats(tmp_path):
    """`param a = 10^5000 < 0` used to raise ValueError while formatting the message."""
    d = _error(tmp_path, "param a = 10^300 * 10 < 0\n")
    assert d.code == "E0401" and "1e+301" in d.message


def test_int_params_stay_ints(tmp_path):
    c = _compile(tmp_path, "param k = 2 * 3 + 2 ^ 3\nparam half = k / 2\n", k=4)
    assert c.params == {"k": 4, "half": 2.0} and type(c.params["k"]) is int


@pytest.mark.parametrize("value", [10 ** 400, 2 ** 60, float("inf"), float("nan"), "1e400", "9" * 5000])
def test_overrides_must_be_finite_and_bounded(tmp_path, value):
    d = _error(tmp_path, "param k = 2\nparam x = 0.5\n", k=value)
    assert d.code == "E0403"
    d = _error(tmp_path, "param k = 2\nparam x = 0.5\n", x=value)
    assert d.code == "E0403"


def test_rollout_option_that_overflows(tmp_path):
    f = tmp_path / "c.ptdsl"
    f.write_text('method c "o"\ndata prompts\npolicy\nreward r = verifier("accuracy")\n'
                 "rollout y = sample(policy, n = 2, temperature = 10 ^ 400)\nloss -mean(logp(policy, y) * r(y))\n")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(str(f))
    d = info.value.diagnostics[0]
    assert d.code == "E0404" and d.span.line == 5 and "temperature" in d.message


def test_reward_weight_that_overflows(tmp_path):
    f = tmp_path / "c.ptdsl"
    f.write_text('method c "o"\ndata prompts\npolicy\nreward r = 1e300 * (1e300 * verifier("accuracy"))\n'
                 "rollout y = sample(policy, n = 2)\nloss -mean(logp(policy, y) * r(y))\n")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(str(f))
    assert info.value.diagnostics[0].code == "E0404"


@pytest.mark.parametrize("default", ["9^9^9", "2 * 9 ^ 99999999", "10^5000 < 0"])
def test_check_never_hangs_on_huge_powers(tmp_path, default):
    """Python big integers made `ptdsl check` run for ever; a subprocess, so a regression
    fails by its timeout instead of hanging the suite."""
    f = tmp_path / "h.ptdsl"
    f.write_text(HEAD + f"param a = {default}\n" + LOSS)
    proc = subprocess.run([sys.executable, "-m", "ptdsl", "check", str(f)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "error[E0404]" in proc.stderr, proc.stderr


@pytest.mark.parametrize("line", ["data ranked(size = 1e300)", "data ranked(size = 1152921504606846976)"])
def test_int_options_stay_exact(tmp_path, line):
    """An int option beyond 2^53 (a double that names no exact int) is rejected, not converted
    to a 300-digit group size."""
    f = tmp_path / "c.ptdsl"
    f.write_text(f'method c "o"\n{line}\npolicy\nloss -mean(logp(policy, responses))\n')
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(str(f))
    d = info.value.diagnostics[0]
    assert d.code == "E0403" and "takes an int" in d.message
