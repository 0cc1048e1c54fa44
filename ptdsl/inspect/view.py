"""What a rendered method graph shows: one view of the IR, shared by every format.

Leaves (model queries, masks, data fields, rewards) and ops become nodes, each
labelled with its op, level and spec line; constants are folded into their
user's label (`mul(beta=0.1, •)`), since a node per number would drown the
structure. Every node and edge is classed by gradient flow (passes/gradflow.py):

    grad      on a differentiable path from a trainable leaf to the loss
    detached  a trainable query the loss's gradient never reaches (e.g. KTO's z0)
    frozen    everything else: frozen models, `old`, rewards, masks, metric-only math
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.ir.graph import order, reachable
from ptdsl.ir.ops import OPS
from ptdsl.passes.gradflow import differentiable, gradient_sources


@dataclass(frozen=True)
class NodeView:
    id: int
    label: str           # op with inline constants, or the leaf's canonical name
    level: str           # e.g. "f32[seq examples]"
    where: str           # spec file and line, e.g. "dpo.ptdsl:14"
    name: str | None     # the `let` or metric it defines
    is_leaf: bool
    flow: str            # grad | detached | frozen


@dataclass(frozen=True)
class EdgeView:
    src: int
    dst: int
    grad: bool           # a gradient flows back along this edge


@dataclass(frozen=True)
class OutputView:
    name: str            # "loss" or "metric NAME"
    node: int
    is_loss: bool


@dataclass(frozen=True)
class GraphView:
    method: str
    optimised: bool
    nodes: tuple[NodeView, ...]
    edges: tuple[EdgeView, ...]
    outputs: tuple[OutputView, ...]


def build_view(g, method: str, optimised: bool = True, metrics: bool = True) -> GraphView:
    loss = g.graph.get("loss")
    keep = _kept(g, loss, metrics)
    grad = differentiable(g) & gradient_sources(g)
    nodes, edges = [], []
    for n in order(g):
        d = g.nodes[n]
        if n not in keep or d["op"] == "const":
            continue
        nodes.append(NodeView(n, _label(g, n), str(d["level"]) if d.get("level") else "", _where(d["span"]),
                              d.get("name"), d["op"] == "leaf", _flow(d, n, grad)))
        diff = OPS[d["op"]].diff
        for i, a in enumerate(d["args"]):
            if g.nodes[a]["op"] != "const":
                edges.append(EdgeView(a, n, a in grad and n in grad and i in diff))
    outputs = [OutputView("loss", loss, True)] if loss is not None else []
    if metrics:
        outputs += [OutputView(f"metric {k}", v, False) for k, v in g.graph["metrics"].items()]
    return GraphView(method, optimised, tuple(nodes), tuple(edges), tuple(outputs))


def _kept(g, loss, metrics: bool) -> set[int]:
    if metrics:
        return reachable(g)
    import networkx as nx
    return ({loss} | nx.ancestors(g, loss)) if loss is not None else set()


def _flow(d, n, grad) -> str:
    if n in grad:
        return "grad"
    if d["op"] == "leaf" and d["attrs"].get("trainable"):
        return "detached"
    return "frozen"


def _where(span) -> str:
    return f"{span.file.rsplit('/', 1)[-1]}:{span.line}" if span else ""


def const_text(a) -> str:
    # The value only: CSE merges equal constants, so a `param` attribute may name another
    # parameter of the same value (cdpo's label_smoothing 0.1 shares beta's node).
    v = a["value"]
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def _label(g, n) -> str:
    d = g.nodes[n]
    if d["op"] == "leaf":
        return d["attrs"]["name"]
    args = d["args"]
    opts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in d["attrs"].items()]
    if not any(g.nodes[a]["op"] == "const" for a in args) and not opts:
        return d["op"]
    shown = [const_text(g.nodes[a]["attrs"]) if g.nodes[a]["op"] == "const" else "•" for a in args]
    return f"{d['op']}({', '.join(shown + opts)})"
