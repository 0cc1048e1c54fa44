"""Errors in inherited lines also point at the child's definitions that caused them.

A child spec that redefines a parent's `let` or `param` changes expressions the
parent wrote: a level or gradient error then has its span in the parent's file —
inside site-packages for a library parent — a file the user never edited. For
each such diagnostic, every definition the failing expression depends on that
comes from a more derived file (a child overriding the parent's name) gets a
secondary label at its own line, and a note says why.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import networkx as nx

from ptdsl.diagnostics import Diagnostic, Label
from ptdsl.syntax.resolve import MethodDef

MAX_LABELS = 3


def point_at_overrides(diags: list[Diagnostic], g: nx.DiGraph, m: MethodDef) -> list[Diagnostic]:
    """`diags` (found on graph `g` of method `m`), each labelled with the overrides behind it."""
    files = list(m.sources)  # root first, the checked file last (syntax/resolve.py merges so)
    if g is None or len(files) < 2:
        return list(diags)
    nodes_at: dict = {}
    for n, data in g.nodes(data=True):
        nodes_at.setdefault(data["span"], []).append(n)
    return [_with_overrides(d, g, m, files, nodes_at.get(d.span, ())) for d in diags]


def _with_overrides(d: Diagnostic, g, m: MethodDef, files: list[str], nodes) -> Diagnostic:
    if d.span is None or not nodes or d.span.file not in files:
        return d
    depth = files.index(d.span.file)
    deps = set(nodes).union(*(nx.ancestors(g, n) for n in nodes))
    shown = {label.span for label in d.labels}
    extra: list[Label] = []
    for n in sorted(deps):
        name, decl = _definition(g.nodes[n], m)
        if decl is None or decl.span in shown or decl.span.file not in files:
            continue
        if files.index(decl.span.file) > depth:
            shown.add(decl.span)
            extra.append(Label(decl.span, f"`{name}` is redefined here", primary=False))
    if not extra:
        return d
    changed_in = ", ".join(dict.fromkeys(f"`{Path(label.span.file).name}`" for label in extra))
    note = (f"the line in error is inherited from `{Path(d.span.file).name}`; "
            f"{changed_in} redefines what it uses")
    return replace(d, labels=d.labels + tuple(extra[:MAX_LABELS]), notes=d.notes + (note,))


def _definition(data: dict, m: MethodDef):
    """(name, declaration) of the `let` a node defines or the `param` a constant is."""
    if data["name"] in m.lets:
        return data["name"], m.lets[data["name"]]
    param = data["attrs"].get("param") if data["op"] == "const" else None
    if param in m.params:
        return param, m.params[param]
    return None, None
