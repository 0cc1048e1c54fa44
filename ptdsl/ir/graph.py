"""The IR graph: a networkx DiGraph whose nodes are ops.

Node data: `op` (a name in ir/ops.OPS), `args` (ordered operand ids — networkx
edges are unordered, and `sub`, `div`, `where` care), `attrs` (a dict treated as
immutable), `span` (where in the spec it came from; rewrites inherit it), `name`
(the `let`/`metric` it defines, if any) and `level` (set by the level checker).
Edges point from operand to user and mirror `args`.

Graph data: `loss` (node id), `metrics` (name → node id), `sets` (set name →
SetInfo), `rows` (row space → group size or None), `method` and `file`.
Passes never mutate their input: they `copy()` first.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import networkx as nx

from ptdsl.diagnostics import Span


@dataclass(frozen=True)
class SetInfo:
    """A sequence set: its rows, and where its sequences come from."""

    name: str
    rows: str
    source: str          # "data" | "rollout" | "derived" (mismatched) | "picked" (best/worst)
    base: str | None = None  # the set a derived or picked set is built from
    by: str | None = None    # picked sets: the reward that ranks the samples
    pick: str | None = None  # picked sets: "best" or "worst"


def new_graph(method: str, file: str, sets: dict[str, SetInfo], rows: dict[str, int | None]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.graph.update(method=method, file=file, sets=dict(sets), rows=dict(rows), loss=None, metrics={})
    return g


def add(g: nx.DiGraph, op: str, args=(), attrs=None, span: Span | None = None,
        name: str | None = None, level=None) -> int:
    nid = max(g.nodes, default=-1) + 1
    g.add_node(nid, op=op, args=tuple(args), attrs=dict(attrs or {}), span=span, name=name, level=level)
    for a in args:
        g.add_edge(a, nid)
    return nid


def copy(g: nx.DiGraph) -> nx.DiGraph:
    h = g.copy()
    h.graph = dict(g.graph)
    h.graph["metrics"] = dict(g.graph["metrics"])
    return h


def order(g: nx.DiGraph) -> list[int]:
    """A deterministic topological order (operands before users, then by id): networkx's
    lexicographical_topological_sort, written out for int ids (every pass calls it, and the
    generic one, with its key tuples, was a large share of compile time)."""
    pending = {n: d for n, d in g.in_degree()}
    ready = [n for n, d in pending.items() if d == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        n = heapq.heappop(ready)
        out.append(n)
        for user in g.successors(n):
            pending[user] -= 1
            if pending[user] == 0:
                heapq.heappush(ready, user)
    if len(out) != len(pending):
        raise nx.NetworkXUnfeasible("the IR graph has a cycle")
    return out


def outputs(g: nx.DiGraph) -> list[int]:
    outs = [g.graph["loss"]] if g.graph.get("loss") is not None else []
    return outs + list(g.graph["metrics"].values())


def set_args(g: nx.DiGraph, nid: int, args) -> None:
    """Replace a node's operands, keeping edges in sync."""
    for a in set(g.nodes[nid]["args"]):
        if g.has_edge(a, nid):
            g.remove_edge(a, nid)
    g.nodes[nid]["args"] = tuple(args)
    for a in args:
        g.add_edge(a, nid)


def replace_uses(g: nx.DiGraph, old: int, new: int) -> None:
    """Make every user of `old` (and every output) use `new` instead."""
    for user in list(g.successors(old)):
        set_args(g, user, tuple(new if a == old else a for a in g.nodes[user]["args"]))
    if g.graph["loss"] == old:
        g.graph["loss"] = new
    g.graph["metrics"] = {k: (new if v == old else v) for k, v in g.graph["metrics"].items()}


def leaves(g: nx.DiGraph) -> list[int]:
    return [n for n in order(g) if g.nodes[n]["op"] == "leaf"]


def reachable(g: nx.DiGraph) -> set[int]:
    """Nodes the outputs depend on."""
    keep: set[int] = set()
    for out in outputs(g):
        keep.add(out)
        keep |= nx.ancestors(g, out)
    return keep
