"""Constant folding: an elementwise op whose operands are all constants becomes
a constant. Parameters are constants by now (bound before lowering), so
`1 - label_smoothing` or `1 + eps` fold away.

Folding computes in doubles through the constant evaluator (ir/consteval.py), so
it never touches an unbounded integer and always returns quickly, and it gives
what torch gives at run time, with one exception:
  - a finite computation that overflows (`exp(1000)`, `x * 10 ^ 400`) is an error
    (E0404) at its span: a term of 1e400 cannot be meant, and an inf would only
    surface later as a non-finite loss;
  - a pole keeps torch's IEEE value where it has one (log 0 = −inf); a division by
    zero is left to torch at run time;
  - a result with no real value (`(0 - 1) ^ 0.5`, `sqrt(-1)`) folds to nan, as torch
    computes it (an optimisation must not change what the loss means).
Every folded constant is a bool or a float.
"""
from __future__ import annotations

import math

from ptdsl.diagnostics import error
from ptdsl.ir.consteval import NoRealValue, Overflow, Pole, apply
from ptdsl.ir.graph import copy, order


def _log(x):
    if x == 0:
        raise Pole(-math.inf)
    return math.log(x)


def _log1p(x):
    if x == -1:
        raise Pole(-math.inf)
    return math.log1p(x)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _nan_or(fn):
    """min/max as torch.minimum/maximum: nan if either operand is nan."""
    return lambda a, b: math.nan if math.isnan(a) or math.isnan(b) else fn(a, b)


FOLD = {
    "neg": lambda x: -x, "exp": math.exp, "log": _log, "log1p": _log1p,
    "expm1": math.expm1, "sigmoid": _sigmoid, "logsigmoid": lambda x: -_softplus(-x),
    "softplus": _softplus, "relu": lambda x: max(x, 0.0),
    "abs": abs, "sqrt": math.sqrt, "square": lambda x: x * x, "tanh": math.tanh,
    "sign": lambda x: float((x > 0) - (x < 0)),  # sign(nan) = 0, as in torch
    "stopgrad": lambda x: x,
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b,
    "minimum": _nan_or(min), "maximum": _nan_or(max),
    "clip": lambda x, lo, hi: min(max(x, lo), hi),
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "and": lambda a, b: a and b, "or": lambda a, b: a or b, "not": lambda a: not a,
    "where": lambda c, a, b: a if c else b, "to_real": float,
}


def _fold_one(op: str, values: list):
    """The folded value, or None to leave the node to torch at run time."""
    try:
        v = apply(FOLD[op], *values)
    except Pole as exc:
        return exc.value
    except NoRealValue:
        return math.nan
    return v if isinstance(v, bool) else float(v)


def fold_constants(g):
    h = copy(g)
    changed = False
    diagnostics = []
    for n in order(h):
        d = h.nodes[n]
        if d["op"] not in FOLD or not d["args"]:
            continue
        if not all(h.nodes[a]["op"] == "const" for a in d["args"]):
            continue
        try:
            v = _fold_one(d["op"], [h.nodes[a]["attrs"]["value"] for a in d["args"]])
        except Overflow as exc:
            diagnostics.append(error("E0404", "constant arithmetic overflows", d["span"], exc.what,
                                     help="check the constants and parameters here; a value beyond "
                                          "1.8e308 cannot be computed"))
            continue
        if v is None:
            continue
        for pred in list(h.predecessors(n)):
            h.remove_edge(pred, n)
        d.update(op="const", args=(), attrs={"value": v})
        changed = True
    return (h if changed else g), diagnostics, changed
