"""Common-subexpression elimination: one node per (op, operands, attributes).

Leaves merge by canonical name, so two queries of `logp(policy, chosen)` read
one input. A merged node keeps the first node's span and `let` name.
"""
from __future__ import annotations

from ptdsl.ir.graph import copy, order, replace_uses
from ptdsl.ir.ops import COMMUTATIVE


def _key(d):
    op, attrs = d["op"], d["attrs"]
    if op == "leaf":
        return ("leaf", attrs["name"])
    if op == "const":  # by repr: 0.0 and -0.0 are equal but differ as divisors; every nan is one
        v = attrs["value"]
        return ("const", type(v).__name__, repr(v))
    args = tuple(sorted(d["args"])) if op in COMMUTATIVE else d["args"]
    return (op, args, tuple(sorted((k, repr(v)) for k, v in attrs.items())))


def eliminate_common(g):
    h = copy(g)
    seen: dict = {}
    changed = False
    for n in order(h):
        if n not in h:
            continue
        k = _key(h.nodes[n])
        if k in seen:
            first = seen[k]
            if h.nodes[first]["name"] is None:
                h.nodes[first]["name"] = h.nodes[n]["name"]
            replace_uses(h, n, first)
            h.remove_node(n)
            changed = True
        else:
            seen[k] = n
    return (h if changed else g), [], changed
