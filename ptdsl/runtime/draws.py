"""The training time and the random draws a step's loss reads, as leaf tensors.

Time: `step` (optimizer steps done, 0 at the first), `progress` (step / (total − 1): 0 at
the first step, 1 at the last) and `epoch` (complete passes over the data done), from the
loop's Clock.

Random draws (`uniform(x)`, `bernoulli(p, x)`): every row of a draw has its own generator,
seeded by (run seed, step, call site, the row's dataset example, its sample within the
group). So a draw depends on nothing else: not on the micro-batch, the process, the batch
size or how the global batch is split, and a resumed run draws exactly what the
uninterrupted run drew. A token-level draw gives a row its values left to right over its
completion, the same whatever the padding. A scalar draw (one per micro-batch) is keyed by
the micro-batch's smallest example index. Draws are made on the CPU in float32, so every
device sees the same bits.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import torch

from ptdsl.runtime.batch import list_sizes


@dataclass(frozen=True)
class Clock:
    """Where the run is: `step` counts optimizer steps done, `total` the run's steps,
    `per_epoch` the optimizer steps one pass over the data takes (with experience reuse, the
    experiences of an epoch × the steps each feeds)."""

    step: int = 0
    total: int = 1
    per_epoch: int = 1

    @property
    def progress(self) -> float:
        return self.step / max(self.total - 1, 1)

    @property
    def epoch(self) -> int:
        return self.step // max(self.per_epoch, 1)


def time_inputs(compiled, clock: Clock, device, dtype) -> dict:
    """The time leaves the loss reads (`step`, `progress`, `epoch`), as scalars."""
    values = {"step": float(clock.step), "progress": clock.progress, "epoch": float(clock.epoch)}
    return {i.name: torch.tensor(values[i.name], dtype=dtype, device=device)
            for i in compiled.inputs if i.kind == "time"}


def check_schedules(compiled, total: int, per_epoch: int) -> None:
    """Before step 1: every scheduled param meets its constraint at every step of this run (the
    compiler could check only step 0: it does not know the run's length)."""
    from ptdsl.passes.params import holds
    from ptdsl.passes.schedules import violations
    from ptdsl.runtime.errors import RuntimeSetupError
    bad = violations(compiled.method.definition, compiled.params, total, per_epoch, holds)
    if bad:
        raise RuntimeSetupError("; ".join(bad), help="change the schedule, its constraint, or the number of "
                                                    "steps; `--set NAME=VALUE` makes a param a constant")


def seed_of(*key) -> int:
    """A 63-bit generator seed from a key (a stable hash: the same on every process and run)."""
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


def _rand(n: int, *key) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed_of(*key)), dtype=torch.float32)


def row_ids(examples, rows: int, sizes: list[int] | None = None) -> list[tuple[int, int]]:
    """(dataset example, sample within its group) of each row: a grouped row space (a rollout's
    n samples) holds rows/len(examples) consecutive rows per example; a ranked list, `sizes`."""
    if sizes is not None:
        return [(e.index, j) for e, k in zip(examples, sizes) for j in range(k)]
    n = rows // max(len(examples), 1)
    return [(examples[r // n].index, r % n) for r in range(rows)]


def draw(a: dict, rows: int | None, examples, masks: dict, seed: int, step: int,
         sizes: list[int] | None = None) -> torch.Tensor:
    """One `uniform` leaf (graph attrs `a`) for one micro-batch of `examples`: `rows` rows of its
    row space, each from its own generator (see the module docstring)."""
    if a["level"] == "scalar":
        return _rand(1, seed, step, a["name"], "batch", min(e.index for e in examples))[0]
    width = masks[a["set"]].shape[1] if a["level"] == "token" else 1
    values = [_rand(width, seed, step, a["name"], *key) for key in row_ids(examples, rows, sizes)]
    out = torch.stack(values)
    return out if a["level"] == "token" else out[:, 0]


@functools.lru_cache(maxsize=16)
def _draw_leaves(compiled) -> tuple[tuple[dict, int], ...]:
    """(attrs, group size) of each random leaf of a compiled method: read once, not per micro-batch."""
    from ptdsl.ir.graph import leaves
    g = compiled.graph
    return tuple((g.nodes[n]["attrs"], compiled.group_size(g.nodes[n]["attrs"]["rows"]) or 1)
                 for n in leaves(g) if g.nodes[n]["attrs"]["kind"] == "uniform")


def random_inputs(compiled, examples, masks: dict, seed: int, step: int, device, dtype,
                  by_rows: dict | None = None) -> dict:
    """Every random draw the loss reads, for one micro-batch of `examples` (and `by_rows`: the
    examples of other data sources, by row space; a draw on a source's rows is keyed by its rows)."""
    out = {}
    for a, group in _draw_leaves(compiled):
        own = (by_rows or {}).get(a["rows"], examples)
        rows = len(own) * group if a["rows"] else None
        sizes = list_sizes(own, a["rows"]) if a["rows"] else None
        if sizes is not None:  # ranked lists: K per example
            rows = sum(sizes)
        # at least float32: a bfloat16 draw just below 1 would round to 1, outside U[0, 1)
        out[a["name"]] = draw(a, rows, own if a["rows"] else examples, masks, seed, step, sizes).to(
            device, torch.promote_types(dtype, torch.float32))
    return out
