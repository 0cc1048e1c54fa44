"""Parameter binding: defaults, overrides, types and constraints.

Defaults and bounds are constant expressions over numbers, booleans and other
params, evaluated here by a small evaluator over the AST (spec text is never
executed). Every problem is collected, then reported together.
"""
from __future__ import annotations

import math
import operator

from ptdsl.diagnostics import Label, Sink, did_you_mean, error
from ptdsl.syntax import ast
from ptdsl.syntax.resolve import MethodDef

_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "^": operator.pow}
_CMP = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}
_FUNCS = {"min": min, "max": max, "exp": math.exp, "log": math.log, "sqrt": math.sqrt, "abs": abs}


class NotConstant(Exception):
    def __init__(self, span, what):
        self.span, self.what = span, what


def const_eval(e: ast.Expr, lookup):
    """Evaluate a constant expression; `lookup(name, span)` resolves names."""
    if isinstance(e, (ast.Number, ast.Bool)):
        return e.value
    if isinstance(e, ast.Name):
        return lookup(e.id, e.span)
    if isinstance(e, ast.Unary):
        v = const_eval(e.operand, lookup)
        return (not v) if e.op == "not" else -v
    if isinstance(e, ast.Binary):
        a, b = const_eval(e.left, lookup), const_eval(e.right, lookup)
        if e.op in _ARITH:
            try:
                return _ARITH[e.op](a, b)
            except (ZeroDivisionError, OverflowError, ValueError) as exc:
                raise NotConstant(e.span, f"this constant expression fails: {exc}") from None
        if e.op in _CMP:
            return _CMP[e.op](a, b)
        return (a and b) if e.op == "and" else (a or b)
    if isinstance(e, ast.Call) and e.func in _FUNCS and not e.kwargs:
        args = [const_eval(a, lookup) for a in e.args]
        try:
            return _FUNCS[e.func](*args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise NotConstant(e.span, f"this constant expression fails: {exc}") from None
    raise NotConstant(e.span, "not a constant: parameters and rollout options take numbers, "
                              "booleans and other parameters")


def _type_of(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    return "float"


def coerce(value, want: str):
    """An override converted to the param's type, or None if it cannot be."""
    if isinstance(value, str):
        value = parse_cli_value(value)
    if want == "bool":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if want == "int":
        return int(value) if float(value).is_integer() else None
    return float(value)


def parse_cli_value(text: str):
    t = text.strip()
    if t in ("true", "True"):
        return True
    if t in ("false", "False"):
        return False
    try:
        return int(t)
    except ValueError:
        try:
            return float(t)
        except ValueError:
            return t


def bind(m: MethodDef, overrides: dict, sink: Sink) -> dict:
    """Param name → value, after defaults, overrides and constraint checks."""
    for name in overrides:
        if name not in m.params:
            sink.add(error("E0402", f"`{m.name}` has no parameter `{name}`",
                           help=did_you_mean(name, m.params) or _known(m),
                           notes=(_known(m),) if did_you_mean(name, m.params) else ()))
    values: dict = {}
    busy: set[str] = set()

    def value_of(name, span):
        if name in values:
            return values[name]
        if name not in m.params:
            raise NotConstant(span, f"unknown parameter `{name}`")
        if name in busy:
            raise NotConstant(span, f"parameter `{name}` is defined in terms of itself")
        busy.add(name)
        values[name] = _bind_one(m.params[name], overrides, value_of, sink)
        return values[name]

    for name, p in m.params.items():
        try:
            value_of(name, p.span)
        except NotConstant as exc:
            sink.add(error("E0403", f"bad default for parameter `{name}`", exc.span, exc.what))
            values[name] = 0.0
    if not sink.has_errors:
        for name, p in m.params.items():
            _check_constraint(p, values, value_of, name in overrides, sink)
    return values


def _known(m: MethodDef) -> str:
    return "its parameters are: " + (", ".join(f"`{p}`" for p in m.params) or "none")


def _bind_one(p: ast.ParamDecl, overrides, value_of, sink):
    default = const_eval(p.default, value_of)
    if p.name not in overrides:
        return default
    want = _type_of(default)
    got = coerce(overrides[p.name], want)
    if got is None:
        sink.add(error("E0403", f"parameter `{p.name}` takes a {want} value, got `{overrides[p.name]!r}`",
                       help=f"its default is `{default}`", extra=(Label(p.span, "declared here", False),)))
        return default
    return got


def _check_constraint(p: ast.ParamDecl, values, value_of, overridden: bool, sink: Sink) -> None:
    c = p.constraint
    if c is None:
        return
    v = values[p.name]
    try:
        if isinstance(c, ast.Bound):
            ok = _CMP[c.op](v, const_eval(c.value, value_of))
            want = f"{c.op} {_fmt(const_eval(c.value, value_of))}"
        else:
            lo, hi = const_eval(c.low, value_of), const_eval(c.high, value_of)
            ok = (lo <= v if c.low_closed else lo < v) and (v <= hi if c.high_closed else v < hi)
            want = f"in {'[' if c.low_closed else '('}{_fmt(lo)}, {_fmt(hi)}{']' if c.high_closed else ')'}"
    except NotConstant as exc:
        sink.add(error("E0403", f"bad constraint for parameter `{p.name}`", exc.span, exc.what))
        return
    except TypeError:
        ok, want = False, "a number"
    if not ok:
        where = "the value given" if overridden else "its default"
        sink.add(error("E0401", f"parameter `{p.name}` = {_fmt(v)} violates its constraint `{want}`",
                       c.span, f"{p.name} must be {want}",
                       notes=(f"the value comes from {where}",),
                       help=f"choose a value of `{p.name}` {want}"))


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return repr(v) if isinstance(v, float) else str(v)
