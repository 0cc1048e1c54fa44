"""Gradient flow: the loss must reach a trainable model output differentiably.

Frozen models, `old`, rewards, masks and data fields are leaves without
gradient; `stopgrad`, comparisons and `sign` cut it; `where` passes it through
its branches but not its condition (ir/ops.py says which operands each op is
differentiable in). A loss that cannot train the policy is an error, pointing at
the place where its gradient was cut, if there is one.
"""
from __future__ import annotations

import networkx as nx

from ptdsl.diagnostics import Label, Sink, error
from ptdsl.ir.graph import order
from ptdsl.ir.ops import OPS


# how ops without gradient are written in a spec
_SURFACE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "and": "and", "or": "or",
            "not": "not", "to_real": "a comparison used as a number"}


def differentiable(g: nx.DiGraph) -> set[int]:
    """Nodes whose value depends differentiably on a trainable leaf."""
    live: set[int] = set()
    for n in order(g):
        d = g.nodes[n]
        if d["op"] == "leaf":
            if d["attrs"].get("trainable"):
                live.add(n)
        elif any(d["args"][i] in live for i in OPS[d["op"]].diff if i < len(d["args"])):
            live.add(n)
    return live


def gradient_sources(g: nx.DiGraph) -> set[int]:
    """Nodes the loss's gradient actually reaches (walking back through differentiable operands).

    A trainable query outside this set (e.g. KTO's detached KL estimate) can run without
    building an autograd graph."""
    loss = g.graph.get("loss")
    seen: set[int] = set()
    stack = [loss] if loss is not None else []
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        d = g.nodes[n]
        if d["op"] != "leaf":
            stack.extend(d["args"][i] for i in OPS[d["op"]].diff if i < len(d["args"]))
    return seen


def check_gradient(g: nx.DiGraph, sink: Sink) -> None:
    loss = g.graph.get("loss")
    if loss is None:
        return
    live = differentiable(g)
    if loss in live:
        return
    upstream = nx.ancestors(g, loss)
    trainable = [n for n in upstream if g.nodes[n]["op"] == "leaf" and g.nodes[n]["attrs"].get("trainable")]
    span = g.nodes[loss]["span"]
    if not trainable:
        sink.add(error("E0501", "the loss cannot train the policy", span,
                       "this reads no trainable model output",
                       notes=("frozen models, `old`, rewards, masks and data fields carry no gradient",),
                       help="use a query on the policy, e.g. `logp(policy, chosen)`"))
        return
    cuts = [n for n in upstream if n not in live and any(a in live for a in g.nodes[n]["args"])
            and g.nodes[n]["span"] is not None]
    extra = tuple(Label(g.nodes[c]["span"], f"gradient stops at `{_SURFACE.get(g.nodes[c]['op'], g.nodes[c]['op'])}`",
                        primary=False)
                  for c in sorted(cuts)[:3])
    sink.add(error("E0501", "the loss cannot train the policy: every path from the policy is cut", span,
                   "no gradient reaches this", extra=extra,
                   help="`stopgrad`, comparisons and `sign` have no gradient; keep one differentiable "
                        "path from a policy query to the loss"))


def check_gradient_survives(optimised: nx.DiGraph, typed: nx.DiGraph, sink: Sink) -> None:
    """The optimised loss must still train the policy. A term weighted by a constant 0 (a
    parameter set to 0) folds away with its gradient; if it was the only trainable term, the
    loss that runs has no gradient at all, and backward() would fail at the first step."""
    loss = optimised.graph.get("loss")
    if loss is None or loss in differentiable(optimised):
        return
    live = differentiable(typed)
    zeros = [n for n in order(typed) if _is_zero(typed, n)
             and any(typed.nodes[u]["op"] == "mul" and any(a in live for a in typed.nodes[u]["args"])
                     for u in typed.successors(n))]
    extra = tuple(Label(typed.nodes[z]["span"], _zero_text(typed.nodes[z]), primary=False)
                  for z in zeros[:3] if typed.nodes[z]["span"] is not None)
    sink.add(error("E0501", "the loss cannot train the policy with these parameter values",
                   typed.nodes[typed.graph["loss"]]["span"], "no gradient reaches this once constants are folded",
                   extra=extra,
                   notes=("every term that reaches the policy differentiably is multiplied by 0, so it "
                          "drops out of the loss, and the policy's gradient with it",),
                   help="give such a weight a non-zero value, or train through another term"))


def _is_zero(g, n) -> bool:
    d = g.nodes[n]
    v = d["attrs"].get("value") if d["op"] == "const" else None
    return v is not None and not isinstance(v, bool) and v == 0


def _zero_text(d) -> str:
    param = d["attrs"].get("param")
    return f"`{param}` is 0" if param else "this is 0"
