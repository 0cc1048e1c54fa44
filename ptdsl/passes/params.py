"""Parameter binding: defaults, overrides, types and constraints.

Defaults and bounds are constant expressions over numbers, booleans and other
params, evaluated by the constant evaluator (ir/consteval.py: float semantics,
bounded magnitudes; spec text is never executed). A parameter's value is a
finite number or a boolean. Every problem is collected, then reported together.
"""
from __future__ import annotations

import math

from ptdsl.diagnostics import Label, Sink, did_you_mean, error
from ptdsl.ir.consteval import _CMP, MAX_EXACT_INT, NotConstant, const_eval
from ptdsl.syntax import ast
from ptdsl.syntax.deps import dependency_order, names_used
from ptdsl.syntax.resolve import MethodDef

__all__ = ["bind", "coerce", "parse_cli_value", "NotConstant", "const_eval"]


def _type_of(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    return "float"


_WANT = {"bool": "a bool value", "float": "a finite float value",
         "int": "an int value (at most 2^53 in magnitude)"}


def coerce(value, want: str):
    """An override converted to the param's type, or None if it cannot be."""
    if isinstance(value, str):
        value = parse_cli_value(value)
    if want == "bool":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    # magnitudes stay bounded (a finite double; an int exact as a double), so nothing
    # computed from a parameter later can hang on a huge int or overflow unnoticed
    if abs(value) > MAX_EXACT_INT if isinstance(value, int) else not math.isfinite(value):
        return None
    if want == "int":
        ok = float(value).is_integer() and abs(value) <= MAX_EXACT_INT
        return int(value) if ok else None
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
    values = _bind_defaults(m, overrides, sink)
    if not sink.has_errors:
        for name, p in m.params.items():
            _check_constraint(p, values, _lookup(values), name in overrides, sink)
    return values


def _bind_defaults(m: MethodDef, overrides: dict, sink: Sink) -> dict:
    """Each param after the params its default uses (no recursion through a chain of them)."""
    found = dependency_order(m.params, lambda name: [
        u for u in names_used(m.params[name].default) if u.id in m.params])
    for cycle, span in found.cycles:
        sink.add(error("E0403", f"bad default for parameter `{cycle[0]}`", span,
                       f"parameter `{cycle[0]}` is defined in terms of itself ({' → '.join(cycle)})"))
    values: dict = dict.fromkeys(found.failed, 0.0)
    for name in found.done:
        try:
            values[name] = _bind_one(m.params[name], overrides, _lookup(values), sink)
        except NotConstant as exc:
            sink.add(error(exc.code, f"bad default for parameter `{name}`", exc.span, exc.what))
            values[name] = 0.0
    return {name: values[name] for name in m.params}


def _lookup(values: dict):
    def value_of(name, span):
        if name in values:
            return values[name]
        raise NotConstant(span, f"unknown parameter `{name}`")
    return value_of


def _known(m: MethodDef) -> str:
    return "its parameters are: " + (", ".join(f"`{p}`" for p in m.params) or "none")


def _bind_one(p: ast.ParamDecl, overrides, value_of, sink):
    default = const_eval(p.default, value_of)
    if p.name not in overrides:
        return default
    want = _type_of(default)
    got = coerce(overrides[p.name], want)
    if got is None:
        sink.add(error("E0403", f"parameter `{p.name}` takes {_WANT[want]}, got `{overrides[p.name]!r}`",
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
        sink.add(error(exc.code, f"bad constraint for parameter `{p.name}`", exc.span, exc.what))
        return
    except TypeError:
        ok, want = False, "a number"
    if not ok:
        where = "the value given" if overridden else "its default"
        # a child overriding a parent's default: show the child's line too, not only the parent's
        elsewhere = not overridden and p.default.span.file != c.span.file
        sink.add(error("E0401", f"parameter `{p.name}` = {_fmt(v)} violates its constraint `{want}`",
                       c.span, f"{p.name} must be {want}",
                       notes=(f"the value comes from {where}",),
                       extra=(Label(p.default.span, "the default is set here", False),) if elsewhere else (),
                       help=f"choose a value of `{p.name}` {want}"))


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return repr(v) if isinstance(v, float) else str(v)
