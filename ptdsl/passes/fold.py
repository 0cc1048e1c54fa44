"""Constant folding: an elementwise op whose operands are all constants becomes
a constant. Parameters are constants by now (bound before lowering), so
`1 - label_smoothing` or `1 + eps` fold away. Folding follows IEEE semantics like
torch does (log 0 = -inf); a fold Python cannot do exactly is left to run time.
"""
from __future__ import annotations

import math

from ptdsl.ir.graph import copy, order


def _log(x):
    return -math.inf if x == 0 else math.log(x)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


FOLD = {
    "neg": lambda x: -x, "exp": math.exp, "log": _log, "log1p": lambda x: _log(1 + x),
    "expm1": math.expm1, "sigmoid": _sigmoid, "logsigmoid": lambda x: _log(_sigmoid(x)),
    "softplus": lambda x: max(x, 0) + math.log1p(math.exp(-abs(x))), "relu": lambda x: max(x, 0.0),
    "abs": abs, "sqrt": math.sqrt, "square": lambda x: x * x, "tanh": math.tanh,
    "sign": lambda x: float((x > 0) - (x < 0)), "stopgrad": lambda x: x,
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b, "minimum": min, "maximum": max,
    "clip": lambda x, lo, hi: min(max(x, lo), hi),
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "and": lambda a, b: a and b, "or": lambda a, b: a or b, "not": lambda a: not a,
    "where": lambda c, a, b: a if c else b, "to_real": float,
}


def fold_constants(g):
    h = copy(g)
    changed = False
    for n in order(h):
        d = h.nodes[n]
        if d["op"] not in FOLD or not d["args"]:
            continue
        if not all(h.nodes[a]["op"] == "const" for a in d["args"]):
            continue
        values = [h.nodes[a]["attrs"]["value"] for a in d["args"]]
        try:
            v = FOLD[d["op"]](*values)
        except (ArithmeticError, ValueError, TypeError):
            continue  # e.g. 0 ** -1: leave it to torch's semantics at run time
        if isinstance(v, complex):
            continue
        if not isinstance(v, bool):
            v = float(v)
        for pred in list(h.predecessors(n)):
            h.remove_edge(pred, n)
        d.update(op="const", args=(), attrs={"value": v})
        changed = True
    return (h if changed else g), [], changed
