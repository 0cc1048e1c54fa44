"""Canonical forms of IR nodes: a structural hash, and spec-like text.

The hash of a node is that of its whole subexpression: op, attributes and the
hashes of its operands (sorted for commutative ops), leaves by their canonical
name and constants by value. Two methods that compute the same thing the same
way share hashes whatever their node ids, which is how diffs match nodes.

The text reads like the spec (`logp(policy, chosen)`, `a - b`, `min(x, y)`),
naming `let`s by their names instead of expanding them, and eliding depth with
`…` to stay on one line.
"""
from __future__ import annotations

import hashlib

from ptdsl.ir.graph import order
from ptdsl.ir.ops import COMMUTATIVE, GROUPED


def structural_hashes(g) -> dict[int, str]:
    out: dict[int, str] = {}
    for n in order(g):
        d = g.nodes[n]
        if d["op"] == "leaf":
            key = ("leaf", d["attrs"]["name"])
        elif d["op"] == "const":
            key = ("const", _value(d["attrs"]["value"]))
        else:
            args = [out[a] for a in d["args"]]
            if d["op"] in COMMUTATIVE:
                args.sort()
            key = (d["op"], tuple(sorted((k, repr(v)) for k, v in d["attrs"].items())), tuple(args))
        out[n] = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
    return out


def _value(v):
    return ("bool", v) if isinstance(v, bool) else ("num", float(v) + 0.0)  # -0.0 and 0.0 alike


_INFIX = {"add": ("+", 5), "sub": ("-", 5), "mul": ("*", 6), "div": ("/", 6), "pow": ("^", 8),
          "lt": ("<", 4), "le": ("<=", 4), "gt": (">", 4), "ge": (">=", 4), "eq": ("==", 4), "ne": ("!=", 4),
          "and": ("and", 2), "or": ("or", 1)}
_FUNC = {"minimum": "min", "maximum": "max"}
SILENT = ("to_real", "expand")  # conversions the level checker inserted: invisible in the spec


def expr_text(g, n: int, width: int = 90) -> str:
    """The node as spec-like text on one line, eliding depth until it fits `width`."""
    for depth in (8, 6, 5, 4, 3, 2, 1):
        text = _text(g, n, depth, 0, root=True)
        if len(text) <= width:
            return text
    return text


def _text(g, n: int, depth: int, parent: int, root: bool = False) -> str:
    d = g.nodes[n]
    op, a = d["op"], d["attrs"]
    if op == "leaf":
        return a["name"]
    if op == "const":
        v = a["value"]
        text = str(v).lower() if isinstance(v, bool) else f"{v:g}"
        return f"({text})" if parent >= 7 and text.startswith("-") else text
    if d.get("name") and not root:
        return d["name"]
    if depth <= 0:
        return "…"
    args = d["args"]
    sub = lambda i, p=0: _text(g, args[i], depth - 1, p)  # noqa: E731
    if op in SILENT:
        return _text(g, args[0], depth, parent)
    if op in _INFIX:
        sym, p = _INFIX[op]
        text = f"{sub(0, p)} {sym} {sub(1, p + 1)}"
        return f"({text})" if p < parent else text
    if op == "neg":
        text = f"-{sub(0, 7)}"
        return f"({text})" if parent > 7 else text
    if op == "not":
        return f"not {sub(0, 3)}"
    if op in ("sum_tokens", "mean_tokens") and g.nodes[args[0]]["op"] == "leaf" \
            and g.nodes[args[0]]["attrs"]["kind"] == "logprobs":
        return ("logp" if op == "sum_tokens" else "mean_logp") + g.nodes[args[0]]["attrs"]["name"][8:]
    if op == "length":
        return f"length({g.nodes[args[0]]['attrs']['set']})"
    # the operands the level checker adds (a set's mask, a ranked list's sizes) are implicit in the spec
    shown = args[:1] if op in ("sum_tokens", "mean_tokens", "token_mean", "token_sum", "whiten") or op in GROUPED \
        else args
    opts = [f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in a.items()]
    inner = [sub(i) for i in range(len(shown))] + opts
    return f"{_FUNC.get(op, op)}({', '.join(inner)})"
