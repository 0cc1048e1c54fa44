"""Statements → one method definition, with `extends` resolved.

A child inherits everything from its parent and overrides by name: params
(default, and constraint/doc when it gives them), lets, metrics and the loss;
header lines (title, paper, family, stability) it states replace the parent's.
Later stages see one flat MethodDef and never know a parent existed, except
through spans, which keep pointing into the file each line came from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ptdsl.diagnostics import Diagnostic, Label, Sink, Span, error
from ptdsl.syntax import ast


@dataclass(frozen=True)
class MethodDef:
    name: str
    title: str | None
    paper: str | None
    family: str | None
    stability: str
    extends: str | None
    path: str
    span: Span
    data: ast.DataDecl | None
    policy: ast.PolicyDecl | None
    roles: dict[str, ast.RoleDecl] = field(default_factory=dict)
    rewards: dict[str, ast.RewardDecl] = field(default_factory=dict)
    rollouts: dict[str, ast.RolloutDecl] = field(default_factory=dict)
    params: dict[str, ast.ParamDecl] = field(default_factory=dict)
    lets: dict[str, ast.LetDecl] = field(default_factory=dict)
    loss: ast.LossDecl | None = None
    metrics: dict[str, ast.MetricDecl] = field(default_factory=dict)
    update: ast.UpdateDecl | None = None  # how experience is used; None: one pass, one mini-batch
    datasets: dict[str, ast.DataDecl] = field(default_factory=dict)  # named sources, in order (`data`: the first)
    mix: ast.MixDecl | None = None        # the named sources' rows per micro-batch
    sources: dict[str, str] = field(default_factory=dict)  # file → text, parents included
    # file → its `requires` line. Not inherited: a version is a statement about the text of the
    # file that states it, so each file's uses are checked against its own (passes/features.py)
    requires: dict[str, ast.RequiresDecl] = field(default_factory=dict)
    stability_span: Span | None = None  # the `stable`/`experimental` line it takes its level from


def data_summary(m: MethodDef) -> str:
    """The data a method reads, as the catalogue prints it: `sft`, or `forget: sft + retain: sft`."""
    if m.datasets:
        return " + ".join(f"{name}: {d.kind}" for name, d in m.datasets.items())
    return m.data.kind if m.data else ""


_NAMED = {ast.RoleDecl: "roles", ast.RewardDecl: "rewards", ast.RolloutDecl: "rollouts",
          ast.ParamDecl: "params", ast.LetDecl: "lets", ast.MetricDecl: "metrics"}
_SINGLE = {ast.PaperDecl: "paper", ast.FamilyDecl: "family", ast.StabilityDecl: "stability",
           ast.DataDecl: "data", ast.PolicyDecl: "policy", ast.LossDecl: "loss", ast.UpdateDecl: "update",
           ast.MixDecl: "mix", ast.RequiresDecl: "requires"}


def _what(stmt) -> str:
    return {ast.PaperDecl: "`paper`", ast.FamilyDecl: "`family`", ast.StabilityDecl: "stability",
            ast.DataDecl: "`data`", ast.PolicyDecl: "`policy`", ast.LossDecl: "`loss`",
            ast.UpdateDecl: "`update`", ast.MixDecl: "`mix`", ast.RequiresDecl: "`requires`"}[type(stmt)]


def _twice_help(stmt) -> str:
    if isinstance(stmt, ast.DataDecl):
        return "to read several datasets, name each one as a source: `data forget: sft`, `data retain: sft`"
    return "remove one of them, or give it another name"


def collect(spec: ast.SpecFile, sink: Sink) -> dict:
    """Group one file's statements; report duplicates and a missing header."""
    out: dict = {k: {} for k in (*_NAMED.values(), "datasets")}
    first: dict[str, Span] = {}
    header = None
    for i, stmt in enumerate(spec.statements):
        if isinstance(stmt, ast.MethodDecl):
            if header is not None or i != 0:
                sink.add(error("E0205", "`method` must be the first line, and appear once", stmt.span,
                               "misplaced header", help="start the file with `method NAME \"Title\"`"))
            header = header or stmt
            continue
        if isinstance(stmt, ast.DataDecl) and stmt.name is not None:
            _collect_source(stmt, out["datasets"], sink)
            continue
        key = _NAMED.get(type(stmt)) or _SINGLE[type(stmt)]
        name = getattr(stmt, "name", None) if type(stmt) in _NAMED else None
        slot = f"{key}:{name}" if name else key
        # a name may be bound once across roles/rewards/rollouts/params/lets
        bind = f"bind:{name}" if name and key != "metrics" else slot
        if bind in first or slot in first:
            prev = first.get(bind) or first[slot]
            what = f"`{name}`" if name else _what(stmt)
            sink.add(error("E0202", f"{what} is defined twice", stmt.span, "defined again here",
                           extra=(Label(prev, "first defined here", primary=False),),
                           help=_twice_help(stmt)))
            continue
        first[bind] = first[slot] = stmt.span
        if name:
            out[key][name] = stmt
        else:
            out[key] = stmt
    if header is None:
        sp = spec.statements[0].span if spec.statements else Span(spec.path, 1, 1, 1, 2)
        sink.add(error("E0205", "missing `method` header", sp, "expected `method NAME \"Title\"` first",
                       help="start the file with e.g. `method my_dpo \"My DPO variant\"`"))
    unnamed, named = out.get("data"), list(out["datasets"].values())
    if unnamed is not None and named:
        later = max((unnamed, named[0]), key=lambda d: (d.span.line, d.span.col))
        sink.add(error("E0220", "a spec reads one unnamed dataset or several named sources, not both", later.span,
                       "this `data` line", extra=(Label((named[0] if later is unnamed else unnamed).span,
                                                        "and this one", primary=False),),
                       help=f"name the unnamed one too, e.g. `data main: {unnamed.kind}`"))
    out["header"] = header
    return out


def _collect_source(stmt: ast.DataDecl, sources: dict, sink: Sink) -> None:
    """A named source (`data retain: sft`): each name once."""
    name = stmt.name.id
    if name in sources:
        sink.add(error("E0202", f"data source `{name}` is defined twice", stmt.span, "defined again here",
                       extra=(Label(sources[name].span, "first defined here", primary=False),),
                       help="give each source its own name"))
        return
    sources[name] = stmt


Loader = Callable[[str, str], ast.SpecFile]  # (name, requesting file) → parsed parent

MAX_EXTENDS = 32  # ancestors a method may have; the library's longest chain has 2


def resolve(spec: ast.SpecFile, load_parent: Loader, sink: Sink) -> MethodDef | None:
    """Follow `extends` up to the root (iteratively: a chain of any length is checked without
    recursion), then merge from the root down. A cycle is found by method name and by file:
    parents are loaded by file, and a file may name its method differently."""
    chain = [(spec, collect(spec, sink))]
    files = {_identity(spec.path)}
    while True:
        spec, parts = chain[-1]
        header: ast.MethodDecl | None = parts["header"]
        if header is None:
            return None
        if not header.extends:
            break
        names = tuple(below["header"].name for _, below in chain[:-1])  # the descendants
        if header.extends in names + (header.name,):
            sink.add(_cycle(names + (header.name, header.extends), header, "extends a method that extends this one"))
            return None
        if len(chain) > MAX_EXTENDS:
            sink.add(error("E0213", f"`extends` chain too long: more than {MAX_EXTENDS} ancestors",
                           header.extends_span, f"this would be ancestor {MAX_EXTENDS + 1}",
                           notes=(" → ".join(names[:3] + ("…",) + names[-2:] + (header.name,)),),
                           help="extend a method closer to the root"))
            return None
        try:
            parent_spec = load_parent(header.extends, spec.path)
        except _ParentError as exc:
            sink.add(replace(exc.diagnostic, labels=(Label(header.extends_span, exc.label),)))
            return None
        if _identity(parent_spec.path) in files:
            sink.add(_cycle(names + (header.name, header.extends), header, "leads back to a file on the chain",
                            f"`{header.extends}` is read from `{parent_spec.path}`, a file already on this chain"))
            return None
        files.add(_identity(parent_spec.path))
        chain.append((parent_spec, collect(parent_spec, sink)))
    parent: MethodDef | None = None
    for spec, parts in reversed(chain):
        parent = _merge(parent, parts["header"], parts, spec)
    return parent


def _cycle(names: tuple[str, ...], header: ast.MethodDecl, label: str, note: str | None = None) -> Diagnostic:
    return error("E0204", f"`extends` cycle: {' → '.join(names)}", header.extends_span, label,
                 notes=(note,) if note else (),
                 help="a method cannot extend itself, directly or through others")


def _identity(path: str) -> str:
    """One name per file, however it was reached (relative, through links)."""
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return path


class _ParentError(Exception):
    def __init__(self, diagnostic: Diagnostic, label: str):
        self.diagnostic, self.label = diagnostic, label


def parent_error(code: str, message: str, label: str, help: str | None = None,
                 notes: tuple[str, ...] = ()) -> _ParentError:
    return _ParentError(Diagnostic("error", code, message, (), notes, help), label)


def _merge(parent: MethodDef | None, header: ast.MethodDecl, parts: dict, spec: ast.SpecFile) -> MethodDef:
    def pick(key, attr=None):
        stmt = parts.get(key)
        if stmt is not None and not isinstance(stmt, dict):
            return getattr(stmt, attr) if attr else stmt
        return getattr(parent, key) if parent else None

    params = dict(parent.params) if parent else {}
    for name, p in parts["params"].items():
        if name in params:  # an override keeps the parent's constraint and doc unless restated
            old = params[name]
            p = replace(p, constraint=p.constraint or old.constraint, doc=p.doc or old.doc)
        params[name] = p

    def merged(key):
        d = dict(getattr(parent, key)) if parent else {}
        d.update(parts[key])
        return d

    stability = parts.get("stability")
    # data lines and `mix` go together: a child that states any data line replaces all of its
    # parent's, and the parent's `mix` with them
    states_data = parts.get("data") is not None or bool(parts["datasets"])
    datasets = parts["datasets"] if states_data else (parent.datasets if parent else {})
    data = (parts.get("data") or next(iter(datasets.values()), None)) if states_data else pick("data")
    return MethodDef(
        name=header.name,
        title=header.title or (parent.title if parent else None),
        paper=pick("paper", "text"),
        family=pick("family", "text"),
        stability=stability.value if isinstance(stability, ast.StabilityDecl) else
        (parent.stability if parent else "experimental"),
        stability_span=stability.span if isinstance(stability, ast.StabilityDecl) else
        (parent.stability_span if parent else None),
        extends=header.extends,
        path=spec.path,
        span=header.span,
        data=data,
        policy=pick("policy"),
        roles=merged("roles"),
        rewards=merged("rewards"),
        rollouts=merged("rollouts"),
        params=params,
        lets=merged("lets"),
        loss=pick("loss"),
        metrics=merged("metrics"),
        update=pick("update"),
        datasets=dict(datasets),
        mix=parts.get("mix") or (None if states_data else (parent.mix if parent else None)),
        sources={**(parent.sources if parent else {}), spec.path: spec.text},
        requires={**(parent.requires if parent else {}),
                  **({spec.path: parts["requires"]} if parts.get("requires") else {})},
    )


def library_loader(search_dirs: list[Path], parse_file) -> Loader:
    """Find a parent by name next to the child, then in the method library."""
    def load(name: str, requester: str) -> ast.SpecFile:
        dirs = [Path(requester).parent] + list(search_dirs)
        for d in dirs:
            for cand in (d / f"{name}.ptdsl", d / "experimental" / f"{name}.ptdsl"):
                if _is_file(cand):
                    return parse_file(cand)
        from ptdsl.library import all_names
        from ptdsl.diagnostics import did_you_mean
        raise parent_error("E0203", f"cannot find method `{name}` to extend", "not found",
                           help=did_you_mean(name, all_names()) or "`ptdsl list` shows the methods available")
    return load


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):  # e.g. a name too long for the file system: no such file
        return False
