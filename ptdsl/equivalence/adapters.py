"""Adapters: relate two methods whose rows are laid out differently.

Paired APO-zero reads N (chosen, rejected) pairs; unpaired APO-zero reads 2N labelled
completions. Their identity (METHODS.md I12) holds on the *same* data in two layouts,
so the engine draws one side's inputs (the *source*, always a preference pair) and an
adapter builds the other side's inputs (the *target*) from them, with torch ops that
keep the gradient: both sides are then differentiated with respect to the same drawn
tensors. An adapter is data — a name, the target layout it builds, and a map from each
target set to the source rows it holds — applied by one function, `link`.

    paired-to-unpaired  unpaired data: the chosen rows, then the rejected rows (2N rows),
                        `label` true for the first N and false for the rest
    paired-to-ranked    ranked lists of 2, best first: row 2i is pair i's chosen, row 2i+1
                        its rejected; `rating` 1 for the chosen and 0 for the rejected
    paired-to-picks     a rollout group's `best(Y, R)` pick is the chosen completion and its
                        `worst(Y, R)` pick the rejected one (online preference methods)
    paired-to-sample    the dataset `completion` (sft data) is the chosen completion and a
                        one-sample rollout the rejected one (self-play against a sampler)

A target input with no source counterpart (a metric's reward of the whole rollout group,
say) is drawn for the target as it is, like an input only one side reads.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.equivalence.sides import SideError
from ptdsl.ir.datakinds import EXAMPLES

SOURCE = "preference"  # every adapter draws preference pairs: chosen, rejected on `examples`


class AdapterError(SideError):
    """An unknown adapter, or one whose layouts do not match the two methods."""


@dataclass(frozen=True)
class Adapter:
    name: str
    target: str      # what the other method must read: a data kind, or "picks" / "sample" (below)
    doc: str

    def sets(self, target_side) -> dict[str, tuple[str, ...]]:
        """Each target set → the source sets whose rows it holds, in order (row by row when
        one; stacked when several, or interleaved for lists)."""
        if self.target == "unpaired":
            return {"completion": ("chosen", "rejected")}
        if self.target == "ranked":
            return {"responses": ("chosen", "rejected")}
        infos = [i for c in target_side for i in c.method.graph.graph["sets"].values()]
        if self.target == "picks":
            return {i.name: ("chosen",) if i.pick == "best" else ("rejected",)
                    for i in infos if i.source == "picked"}
        samples = {i.name for i in infos if i.source == "rollout" and i.rows == EXAMPLES}
        return {"completion": ("chosen",), **{s: ("rejected",) for s in samples}}


ADAPTERS = {a.name: a for a in [
    Adapter("paired-to-unpaired", "unpaired",
            "N preference pairs ↔ 2N unpaired completions: the chosen ones desirable, the rejected ones not"),
    Adapter("paired-to-ranked", "ranked",
            "N preference pairs ↔ N ranked lists of 2, best first, rated 1 and 0"),
    Adapter("paired-to-picks", "picks",
            "a preference pair ↔ the best/worst picks of a rollout group (online preference methods)"),
    Adapter("paired-to-sample", "sample",
            "a preference pair ↔ a dataset completion (chosen) and a one-sample rollout (rejected)"),
]}


def get(name: str) -> Adapter:
    if name not in ADAPTERS:
        from ptdsl.diagnostics import did_you_mean
        hint = did_you_mean(name, ADAPTERS) or f"adapters: {', '.join(ADAPTERS)}"
        raise AdapterError(f"unknown adapter `{name}` ({hint})")
    return ADAPTERS[name]


def _kinds(side) -> set[str]:
    return {c.method.method.data for c in side}


def _layout(adapter: Adapter, side) -> bool:
    """Whether every term of `side` has the adapter's target layout."""
    if adapter.target in ("unpaired", "ranked"):
        return _kinds(side) == {adapter.target}
    sets = adapter.sets(side)
    if adapter.target == "picks":
        picks = {src for srcs in sets.values() for src in srcs}
        return _kinds(side) == {"prompts"} and picks == {"chosen", "rejected"}
    return _kinds(side) == {"sft"} and len(sets) == 2


@dataclass(frozen=True)
class Link:
    """An adapter applied to two compiled sides: which is drawn, what is drawn, and how the
    target's inputs are built from a draw."""
    adapter: Adapter
    source: str                 # "a" or "b": the side whose inputs are drawn
    table: dict                 # the drawn leaf table (source leaves, plus unmapped target leaves)
    recipes: dict               # target leaf name → (how, source leaf names), or None: drawn as is
    target_reads: frozenset     # drawn names the target's inputs are built from

    def build(self, x: dict) -> dict:
        """The target side's inputs (shared names) from a draw `x` (tensors, maybe requiring grad)."""
        return {name: x[name] if r is None else _BUILD[r[0]](self, name, [x[s] for s in r[1]])
                for name, r in self.recipes.items()}


def link(name: str, a, b, labels: tuple[str, str]) -> Link:
    """Apply adapter `name` to compiled sides `a` and `b` (either order)."""
    adapter = get(name)
    if _kinds(a) == {SOURCE} and _layout(adapter, b):
        source, src, tgt = "a", a, b
    elif _kinds(b) == {SOURCE} and _layout(adapter, a):
        source, src, tgt = "b", b, a
    else:
        want = "ranked lists" if adapter.target == "ranked" else \
            "a rollout group's best and worst picks on `prompts`" if adapter.target == "picks" else \
            "`sft` data and a one-sample rollout" if adapter.target == "sample" else f"`{adapter.target}` data"
        raise AdapterError(f"adapter `{name}` relates `{SOURCE}` data with {want}, but `{labels[0]}` reads "
                           f"`{'`, `'.join(sorted(_kinds(a)))}` data and `{labels[1]}` reads "
                           f"`{'`, `'.join(sorted(_kinds(b)))}` data")
    table = {n: dict(t) for c in src for n, t in c.table.items()}
    sets = adapter.sets(tgt)
    recipes: dict = {}
    for c in tgt:
        for n, t in c.table.items():
            recipes[n] = _recipe(adapter, n, t, sets, table)
    reads = frozenset(s for r in recipes.values() if r for s in r[1]) | \
        frozenset(n for n, r in recipes.items() if r is None)
    return Link(adapter, source, table, recipes, reads)


def _recipe(adapter, name, attrs, sets, table):
    """How a target leaf is built: (how, source leaves), adding the source leaves it needs to the
    drawn table; None when it is drawn as it is. `how` names a function of `_BUILD`."""
    s, kind = attrs.get("set"), attrs["kind"]
    if (kind == "field" and name == _LAYOUT_FIELD.get(adapter.target)) or kind == "sizes":
        _need(table, "mask(chosen)", attrs, "chosen")  # label / rating / list sizes: the layout's own
        return name if kind == "field" else "sizes", ("mask(chosen)",)
    if kind == "field" and attrs.get("rows") == EXAMPLES:  # a per-example field (`margin`): each pair's
        table.setdefault(name, dict(attrs))
        return ("stack", (name, name)) if adapter.target == "unpaired" else ("rows", (name,))
    if s not in sets or kind == "reward":
        table.setdefault(name, dict(attrs))
        return None
    names = tuple(_on(name, s, src) for src in sets[s])
    for n, src in zip(names, sets[s]):
        _need(table, n, attrs, src)
    how = "rows" if len(names) == 1 else "stack" if adapter.target == "unpaired" else "interleave"
    return how, names


_LAYOUT_FIELD = {"unpaired": "label", "ranked": "rating"}


def _on(name: str, old: str, new: str) -> str:
    """A leaf's name with its set `old` replaced by `new` (`logprobs(policy, best(y, r))` →
    `logprobs(policy, chosen)`; `mask(completion)` → `mask(chosen)`)."""
    if name == f"mask({old})":
        return f"mask({new})"
    assert name.endswith(f", {old})"), name
    return name[: -len(old) - 1] + new + ")"


def _need(table, name, attrs, src) -> None:
    """Add the source leaf `name` (on set `src`) to the drawn table, shaped like the target's."""
    if name not in table:
        kind = "mask" if name.startswith("mask(") else attrs["kind"]
        a = dict(attrs, name=name, kind=kind, set=src, rows=EXAMPLES, group=None)
        if kind == "mask":
            a.update(level="token", model=None, dtype="bool", trainable=False)
        table[name] = a


# ---- building a target tensor from source tensors ------------------------------------

def _pad(x, width):
    """Token (or vocabulary) tensors padded to `width` columns; masks pad with False."""
    import torch
    if x.dim() < 2 or x.shape[1] == width:
        return x
    pad = torch.zeros((x.shape[0], width - x.shape[1]) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], 1)


def _width(xs):
    return max(x.shape[1] for x in xs) if xs[0].dim() >= 2 else None


def _stack(link, name, xs):
    import torch
    w = _width(xs)
    return torch.cat([_pad(x, w) for x in xs], 0)


def _interleave(link, name, xs):
    import torch
    w = _width(xs)
    return torch.stack([_pad(x, w) for x in xs], 1).reshape((-1,) + tuple(_pad(xs[0], w).shape[1:]))


def _label(link, name, xs):
    import torch
    n = xs[0].shape[0]
    return torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])


def _rating(link, name, xs):
    import torch
    return torch.tensor([1.0, 0.0], dtype=torch.float64).repeat(xs[0].shape[0])


def _sizes(link, name, xs):
    import torch
    return torch.full((xs[0].shape[0],), 2, dtype=torch.long)


_BUILD = {"rows": lambda link, name, xs: xs[0], "stack": _stack, "interleave": _interleave,
          "label": _label, "rating": _rating, "sizes": _sizes}
