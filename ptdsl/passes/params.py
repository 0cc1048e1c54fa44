"""Parameter binding: defaults, overrides, types and constraints.

Defaults and bounds are constant expressions over numbers, booleans and other
params, evaluated by the constant evaluator (ir/consteval.py: float semantics,
bounded magnitudes; spec text is never executed). A parameter's value is a
finite number or a boolean, or a `Schedule` when its default reads the training
time (passes/schedules.py). Every problem is collected, then reported together.
"""
from __future__ import annotations

import math

from ptdsl.diagnostics import Label, Sink, did_you_mean, error
from ptdsl.ir.builtins import TIME
from ptdsl.ir.consteval import _CMP, MAX_EXACT_INT, NotConstant, Schedule, const_eval
from ptdsl.passes.schedules import START, lookup_at, reads_time
from ptdsl.syntax import ast
from ptdsl.syntax.deps import dependency_order, names_used
from ptdsl.syntax.unparse import expr_text
from ptdsl.syntax.resolve import MethodDef

__all__ = ["bind", "coerce", "parse_cli_value", "holds", "NotConstant", "const_eval"]


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
    for name, p in m.params.items():
        if name in TIME:
            sink.add(error("E0202", f"`{name}` is a built-in value (the training time) and cannot be rebound",
                           p.span, "a param named `{name}`".format(name=name),
                           help=f"choose another name; `{name}` itself reads the training time in any expression"))
    values, starts = _bind_defaults(m, overrides, sink)
    if not sink.has_errors:
        for name, p in m.params.items():
            _check_constraint(p, starts[name], _lookup(values), name in overrides,
                              isinstance(values[name], Schedule), sink)
    return values


def _bind_defaults(m: MethodDef, overrides: dict, sink: Sink) -> tuple[dict, dict]:
    """Each param after the params its default uses (no recursion through a chain of them):
    (the values, scheduled ones as a Schedule; every value at the start of training)."""
    found = dependency_order(m.params, lambda name: [
        u for u in names_used(m.params[name].default) if u.id in m.params])
    for cycle, span in found.cycles:
        sink.add(error("E0403", f"bad default for parameter `{cycle[0]}`", span,
                       f"parameter `{cycle[0]}` is defined in terms of itself ({' → '.join(cycle)})"))
    values: dict = dict.fromkeys(found.failed, 0.0)
    starts: dict = dict(values)  # a scheduled param's value at step 0: its type, and its constraint's check
    for name in found.done:
        p = m.params[name]
        timed = reads_time(p, {n for n, v in values.items() if isinstance(v, Schedule)})
        try:
            if timed and name not in overrides:
                starts[name] = _start(p, starts)
                values[name] = Schedule(p.default, expr_text(p.default))
            else:
                values[name] = starts[name] = _bind_one(p, overrides, lookup_at(starts, START) if timed
                                                        else _lookup(values), sink)
        except NotConstant as exc:
            sink.add(error(exc.code, f"bad default for parameter `{name}`", exc.span, exc.what))
            values[name] = starts[name] = 0.0
    return {name: values[name] for name in m.params}, {name: starts[name] for name in m.params}


def _start(p: ast.ParamDecl, starts: dict):
    """A scheduled default's value at the start of training; evaluating it checks that it reads
    only numbers, params and the time, through the functions a default may use and `where`."""
    value = const_eval(p.default, lookup_at(starts, START))
    if isinstance(value, bool):
        raise NotConstant(p.default.span, "a scheduled parameter must be a number, not a boolean")
    return value


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


def holds(p: ast.ParamDecl, v, value_of) -> tuple[bool, str]:
    """(whether value v meets p's constraint, the constraint as text); raises NotConstant for a
    bound that is not a constant (a bound may not read the training time either: E0405)."""
    c = p.constraint
    try:
        if isinstance(c, ast.Bound):
            bound = const_eval(c.value, value_of)
            return _CMP[c.op](v, bound), f"{c.op} {_fmt(bound)}"
        lo, hi = const_eval(c.low, value_of), const_eval(c.high, value_of)
        ok = (lo <= v if c.low_closed else lo < v) and (v <= hi if c.high_closed else v < hi)
        return ok, f"in {'[' if c.low_closed else '('}{_fmt(lo)}, {_fmt(hi)}{']' if c.high_closed else ')'}"
    except TypeError:
        return False, "a number"


def _check_constraint(p: ast.ParamDecl, v, value_of, overridden: bool, scheduled: bool, sink: Sink) -> None:
    c = p.constraint
    if c is None:
        return
    try:
        ok, want = holds(p, v, value_of)
    except NotConstant as exc:
        sink.add(error(exc.code, f"bad constraint for parameter `{p.name}`", exc.span, exc.what))
        return
    if not ok:
        where = "the value given" if overridden else "its default"
        if scheduled:  # checked again at every step by `ptdsl train`, which knows the run's length
            where = "its schedule at the start of training (step = progress = epoch = 0)"
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
