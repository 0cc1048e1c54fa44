"""The two sides of an equivalence: each a method, or a weighted sum of methods.

A term is one compiled method with a weight and an optional renaming of its
sequence sets (`{"completion": "chosen"}` feeds an SFT term the chosen
completions of a preference batch). A side's loss is the weighted sum of its
terms' losses, all reading one shared dict of inputs keyed by canonical leaf
names after renaming, so `cal_dpo` can be compared with `dpo(β=1) + ½·sppo_hard(β)`
and `orpo(β=0)` with `sft` on the chosen completions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


class SideError(ValueError):
    """Two sides whose inputs cannot be shared (e.g. a set with different group sizes)."""


@dataclass(frozen=True)
class Term:
    method: str
    params: dict = field(default_factory=dict)
    weight: float = 1.0
    sets: dict = field(default_factory=dict)   # this method's set name → the shared input's set name

    def label(self, name: str | None = None) -> str:
        """`0.5·sppo_hard(beta=0.002)`; `name` replaces a path by the method's own name."""
        name = name or self.method
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        text = f"{name}({args})" if args else name
        if self.sets:
            text += "[" + ", ".join(f"{k}:={v}" for k, v in self.sets.items()) + "]"
        return text if self.weight == 1 else f"{_fmt(self.weight)}·{text}"


def _fmt(v) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def terms_of(side, params=None) -> tuple[Term, ...]:
    """Normalise a side: a method name, a Term, or a sequence of Terms / (weight, name[, params]) tuples."""
    if isinstance(side, str):
        return (Term(side, dict(params or {})),)
    if isinstance(side, Term):
        return (Term(side.method, {**side.params, **(params or {})}, side.weight, side.sets),)
    out = []
    for t in side:
        if isinstance(t, Term):
            out.append(t)
        else:
            weight, name, *rest = t
            out.append(Term(name, dict(rest[0]) if rest else {}, float(weight)))
    if params:
        raise SideError("params apply to a single method; give each term its own params")
    return tuple(out)


def side_label(side) -> str:
    """A compiled side as text, each term named by its method (not the path it came from)."""
    return " + ".join(c.term.label(c.method.name) for c in side)


@dataclass(frozen=True)
class Compiled:
    term: Term
    method: object       # CompiledMethod
    table: dict          # shared leaf name → attrs (renamed)
    rename: dict         # shared leaf name → this method's own leaf name


def compile_side(terms: tuple[Term, ...]) -> tuple[Compiled, ...]:
    from ptdsl.api import compile as compile_method
    from ptdsl.equivalence.strategies import leaf_table
    out = []
    for t in terms:
        c = compile_method(t.method, **t.params)
        table, rename = {}, {}
        for own, a in leaf_table([c.graph]).items():
            shared = _renamed(own, t.sets)
            a = dict(a, name=shared, set=t.sets.get(a.get("set"), a.get("set")))
            table[shared], rename[shared] = a, own
        out.append(Compiled(t, c, table, rename))
    return tuple(out)


def _renamed(name: str, sets: dict) -> str:
    for old, new in sets.items():
        name = re.sub(rf"(?<=[(, ]){re.escape(old)}(?=\))", new, name)
    return name


def union_table(*sides) -> dict:
    """The shared leaf table of every term of every side; conflicting leaves are an error."""
    table: dict = {}
    for side in sides:
        for c in side:
            for name, a in c.table.items():
                prev = table.setdefault(name, a)
                for key in ("kind", "level", "rows", "dtype", "group"):
                    if prev.get(key) != a.get(key):
                        raise SideError(f"input `{name}` means different things to the two sides "
                                        f"({key}: {prev.get(key)!r} vs {a.get(key)!r})"
                                        + ("; give both methods the same group size n" if key == "group" else ""))
    return table


def needed(side) -> set[str]:
    return {name for c in side for name in c.table}


def side_loss(side, x: dict):
    """The weighted sum of the side's losses on the shared inputs `x`."""
    total = None
    for c in side:
        own = {c.rename[name]: x[name] for name in c.table}
        loss = c.method.loss(own)[0] * c.term.weight
        total = loss if total is None else total + loss
    return total
