"""Constant arithmetic: float semantics with bounded magnitudes, for parameters,
options and constant folding alike.

Numbers are IEEE doubles. Booleans stay booleans, and integers stay exact Python
ints while |n| ≤ 2**53 (so `n = 8`, `group / 2` and `--set n=4` keep their int
type); nothing here ever computes with an unbounded integer, so no constant
expression can take long: `9 ^ 9 ^ 9` overflows at once instead of building a
number with 370 million digits.

A computation on finite operands either gives a finite number or fails with
  Overflow     the result is beyond the float range (`10 ^ 400`, `exp(1000)`, `1e308 * 10`);
  NoRealValue  there is no real result (`(0 - 1) ^ 0.5`, `sqrt(-1)`, `log(-1)`);
  Pole         a division by zero or a logarithm of 0 (`1 / 0`, `0 ^ -1`, `log(0)`);
               `.value` is what torch gives, where the caller may keep it (−inf for log 0).
Callers decide what each means: a parameter or option must be a finite real number,
so all three are errors (E0404); constant folding reports overflow, keeps poles as
torch would compute them and folds a result with no real value to nan, as torch
does. An operation on a non-finite operand follows IEEE (inf − inf = nan) and
raises nothing.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from ptdsl.ir.builtins import TIME
from ptdsl.syntax import ast

MAX_EXACT_INT = 2 ** 53  # every int up to this magnitude is exactly a double
FLOAT_MAX = "±1.8e308"


class ConstError(ArithmeticError):
    """A constant computation on finite operands that has no finite real result."""

    what = "this constant computation fails"


class Overflow(ConstError):
    what = f"this overflows: the result is beyond the float range ({FLOAT_MAX})"


class NoRealValue(ConstError):
    what = "this has no real value (e.g. a negative number to a fractional power)"


class Pole(ConstError):
    what = "this is infinite: a division by zero or the logarithm of 0"

    def __init__(self, value: float | None = None):
        super().__init__(self.what)
        self.value = value


def finite(x) -> bool:
    return isinstance(x, bool) or math.isfinite(x)


def _as_float(x):
    return x if isinstance(x, (bool, float)) else float(x)


def apply(fn, *args):
    """fn on the operands as doubles (booleans stay booleans); see the module docstring."""
    args = tuple(_as_float(a) for a in args)
    finite_in = all(finite(a) for a in args)
    try:
        v = fn(*args)
    except ZeroDivisionError:
        raise Pole() from None
    except OverflowError:
        raise Overflow() from None
    except ValueError:  # a math domain error: sqrt(-1), log(-1)
        if finite_in:
            raise NoRealValue() from None
        return math.nan
    if isinstance(v, complex):
        if finite_in:
            raise NoRealValue()
        return math.nan
    if finite_in and not finite(v):
        raise Overflow()
    return v


# ---- the spec's arithmetic (`+ - * / ^`), exact on small ints -------------------

_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "^": operator.pow}


def _small_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and abs(x) <= MAX_EXACT_INT


def arith(op: str, a, b):
    """`a op b`: an exact int where both operands and the result are small ints, else a double."""
    v = apply(_ARITH[op], a, b)
    if op != "/" and _small_int(a) and _small_int(b) and abs(v) <= MAX_EXACT_INT:
        if op != "^":
            return _ARITH[op](a, b)   # both operands are at most 2**53: cheap
        if b >= 0:
            return a ** b             # |result| ≤ 2**53, so at most 53 squarings of a small base
    return v


def _log(x):
    if x == 0:
        raise Pole(-math.inf)
    return math.log(x)


# Functions a parameter default may call. min, max and abs never grow a magnitude, so
# they keep ints exact; the others compute in doubles through `apply`.
FUNCS = {"exp": math.exp, "log": _log, "sqrt": math.sqrt}
EXACT_FUNCS = {"min": min, "max": max, "abs": abs}


def call(name: str, args: list):
    if name in EXACT_FUNCS:
        return EXACT_FUNCS[name](*args)
    return apply(FUNCS[name], *args)


# ---- constant expressions over the AST --------------------------------------------

class NotConstant(Exception):
    """An expression that has no constant value; `code` is the diagnostic code to report."""

    def __init__(self, span, what, code: str = "E0403"):
        super().__init__(what)
        self.span, self.what, self.code = span, what, code


@dataclass(frozen=True)
class Schedule:
    """A scheduled parameter's value: an expression of the training time (`step`, `progress`,
    `epoch`) that the lowering inlines wherever the parameter is used (passes/params.py binds it).
    It has no constant value, so using one where a constant is needed is E0405."""

    expr: ast.Expr
    text: str          # the spec text of the expression, for listings

    def __str__(self) -> str:
        return self.text


def changes_in_training(span, name: str, scheduled: bool) -> NotConstant:
    what = (f"`{name}` is scheduled: its value changes during training" if scheduled else
            f"`{name}` changes during training")
    return NotConstant(span, what, "E0405")


_CMP = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}


def const_eval(e: ast.Expr, lookup):
    """Evaluate a constant expression; `lookup(name, span)` resolves names. Recursion is one
    frame per level, which syntax/limits.py bounds."""
    if isinstance(e, (ast.Number, ast.Bool)):
        return e.value
    if isinstance(e, ast.Name):
        return _name(e, lookup)
    if isinstance(e, ast.Unary):
        v = const_eval(e.operand, lookup)
        return (not v) if e.op == "not" else -v
    if isinstance(e, ast.Binary):
        a, b = const_eval(e.left, lookup), const_eval(e.right, lookup)
        if e.op in _ARITH:
            return _checked(e.span, arith, e.op, a, b)
        if e.op in _CMP:
            return _CMP[e.op](a, b)
        return (a and b) if e.op == "and" else (a or b)
    if isinstance(e, ast.Call) and e.func == "where" and len(e.args) == 3 and not e.kwargs:
        return _where(e, lookup)
    if isinstance(e, ast.Call) and e.func in FUNCS.keys() | EXACT_FUNCS.keys() and not e.kwargs:
        args = [const_eval(a, lookup) for a in e.args]
        variadic = e.func in ("min", "max")
        if not args or (len(args) != 1 and not variadic):
            raise NotConstant(e.span, f"`{e.func}` takes {'at least ' if variadic else ''}one argument")
        return _checked(e.span, call, e.func, args)
    raise NotConstant(e.span, "not a constant: parameters and rollout options take numbers, "
                              "booleans and other parameters")


def _where(e: ast.Call, lookup):
    """`where(c, a, b)`: a where the boolean c holds, else b (a per-epoch schedule is written so)."""
    cond = const_eval(e.args[0], lookup)
    if not isinstance(cond, bool):
        raise NotConstant(e.args[0].span, "`where` needs a boolean condition, e.g. `epoch < 1`")
    return const_eval(e.args[1] if cond else e.args[2], lookup)


def _name(e: ast.Name, lookup):
    """A name's constant value. Training time and scheduled params have none: where a constant
    is needed (options, constraints, reward weights) they are E0405, not an unknown name."""
    try:
        value = lookup(e.id, e.span)
    except NotConstant:
        if e.id in TIME:
            raise changes_in_training(e.span, e.id, False) from None
        raise
    if isinstance(value, Schedule):
        raise changes_in_training(e.span, e.id, True)
    return value


def _checked(span, fn, *args):
    try:
        return fn(*args)
    except ConstError as exc:
        raise NotConstant(span, exc.what, "E0404") from None
