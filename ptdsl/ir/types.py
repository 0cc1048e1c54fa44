"""Levels are types.

A value lives at one level:
  scalar          one number for the whole batch                     f32[]
  seq[R]          one number per row of row space R                  f32[seq examples]
  token[S]        one number per completion token of sequence set S  f32[token chosen]
  vocab[S]        one number per token of S and vocabulary entry     f32[vocab chosen]
  pair[R]         one number per row i of grouped rows R and each    f32[pair y]
                  row j of its group (pairwise losses within a list or rollout group)
Sequence sets drawn from the same examples share the row space `examples`, so
their per-sequence values combine (chosen with rejected); a rollout `y` has its
own row space, with groups of `n` rows per prompt. Token values of different sets
never mix: their positions are unrelated.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

KINDS = ("scalar", "seq", "pair", "token", "vocab")
_RANK = {k: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True)
class Level:
    kind: str
    rows: str | None = None   # row space, for seq/token/vocab
    set: str | None = None    # sequence set, for token/vocab
    dtype: str = "real"       # "real" | "bool"

    def __str__(self) -> str:
        t = "bool" if self.dtype == "bool" else "f32"
        if self.kind == "scalar":
            return f"{t}[]"
        if self.kind in ("seq", "pair"):
            return f"{t}[{self.kind} {self.rows}]"
        return f"{t}[{self.kind} {self.set}]"

    @property
    def rank(self) -> int:
        return _RANK[self.kind]

    def with_dtype(self, dtype: str) -> "Level":
        return replace(self, dtype=dtype)

    def at(self, kind: str) -> "Level":
        """The same rows/set at another level (e.g. token → seq after a reduction)."""
        if kind == "scalar":
            return Level("scalar", dtype=self.dtype)
        if kind in ("seq", "pair"):
            return Level(kind, self.rows, None, self.dtype)
        return Level(kind, self.rows, self.set, self.dtype)


SCALAR = Level("scalar")
SCALAR_BOOL = Level("scalar", dtype="bool")


class LevelMismatch(Exception):
    def __init__(self, message: str, help: str | None = None):
        super().__init__(message)
        self.help = help


def join(a: Level, b: Level) -> Level:
    """The level two operands of an elementwise op broadcast to (dtype: real)."""
    lo, hi = sorted((a, b), key=lambda l: l.rank)
    if lo.kind == "scalar":
        return hi.with_dtype("real")
    if lo.rows != hi.rows:
        raise LevelMismatch(
            f"values from different row spaces cannot be combined: {a} and {b}",
            "rows of two rollouts, or of a rollout and of a dataset set it does not sample from, "
            "are not aligned; reduce one side first (e.g. with `mean(...)`)")
    if lo.kind == "seq":
        return hi.with_dtype("real")
    if "pair" in (lo.kind, hi.kind):
        if lo.kind != hi.kind:
            raise LevelMismatch(f"pairwise values cannot be combined with per-token values: {a} and {b}",
                                "reduce the pairs with `sum_pairs(...)` or the tokens with `sum_tokens(...)`")
        return hi.with_dtype("real")
    if lo.set != hi.set:
        raise LevelMismatch(
            f"token values of different sequence sets cannot be combined: {a} and {b}",
            "token positions of two sets are unrelated; reduce each to one value per sequence "
            "first (e.g. `sum_tokens(...)` or `logp(...)`)")
    return hi.with_dtype("real")
