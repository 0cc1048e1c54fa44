"""Scheduled params: a param whose default reads the training time.

`param beta = 0.1 * (1 - progress)` (or a param built from such a one) has no constant
value: binding keeps it as a `Schedule` (ir/consteval.py), the lowering inlines its
expression wherever it is used, and the runtime supplies `step`, `progress` and `epoch`
at every optimizer step. `--set beta=0.2` makes it an ordinary constant again.

Its default may use what any default may (numbers, params, `+ - * / ^`, `min max exp log
sqrt abs`) plus the time names and `where(c, a, b)`, and must be a number. Its constraint
is checked where it can be: at compile time at the start of training (step = progress =
epoch = 0), since the length of the run is not known yet, and by `ptdsl train`, which
knows it, at every optimizer step before the first (`violations`).
"""
from __future__ import annotations

from ptdsl.ir.builtins import TIME
from ptdsl.ir.consteval import NotConstant, Schedule, const_eval
from ptdsl.syntax import ast
from ptdsl.syntax.deps import dependency_order, names_used

START = {"step": 0, "progress": 0.0, "epoch": 0}


def reads_time(p: ast.ParamDecl, scheduled: set[str]) -> bool:
    """Whether a default reads the training time, directly or through a scheduled param."""
    return any(u.id in TIME or u.id in scheduled for u in names_used(p.default))


def lookup_at(values: dict, time: dict):
    """Names → values at one training time: time names from `time`, params from `values`
    (which must hold plain values: see `values_at`)."""
    def value_of(name, span):
        if name in time:
            return time[name]
        if name in values:
            return values[name]
        raise NotConstant(span, f"unknown parameter `{name}`")
    return value_of


def time_at(step: int, total: int, per_epoch: int) -> dict:
    """The training time at an optimizer step (0-based) of a run of `total` steps."""
    return {"step": step, "progress": step / max(total - 1, 1), "epoch": step // max(per_epoch, 1)}


class Evaluator:
    """Every param's value at any training time, each schedule after the ones it reads."""

    def __init__(self, values: dict):
        self.values = values
        self.scheduled = {n: v for n, v in values.items() if isinstance(v, Schedule)}
        self.order = dependency_order(self.scheduled, lambda n: [
            u for u in names_used(self.scheduled[n].expr) if u.id in self.scheduled]).done

    def at(self, time: dict) -> dict:
        out = {n: v for n, v in self.values.items() if n not in self.scheduled}
        lookup = lookup_at(out, time)
        for name in self.order:
            out[name] = const_eval(self.scheduled[name].expr, lookup)
        return out


def violations(m, values: dict, total: int, per_epoch: int, holds) -> list[str]:
    """For `ptdsl train`: each scheduled param whose constraint fails at some optimizer step of
    the run, with the first such step. `holds(p, value, lookup)` → (ok, wanted) is the
    constraint test of passes/params.py. Costs a few microseconds per step and schedule."""
    ev = Evaluator(values)
    pending = [p for name, p in m.params.items() if name in ev.scheduled and p.constraint is not None]
    out = []
    for p in pending:
        for step in range(total):
            time = time_at(step, total, per_epoch)
            now = ev.at(time)
            ok, want = holds(p, now[p.name], lookup_at(now, {}))
            if not ok:
                out.append(f"parameter `{p.name}` = {now[p.name]!r} at optimizer step {step + 1} of {total} "
                           f"(step = {step}, progress = {time['progress']:.4g}, epoch = {time['epoch']}) "
                           f"violates its constraint `{want}`")
                break
    return out
