"""The equivalence engine: search for inputs on which two sides disagree.

Inputs are drawn once, for the union of both sides' leaves (conditions.py
shapes the draw), in float64. For each example both losses are computed by the
compiled code, with the gradient of each with respect to every trainable leaf
either side reads (a leaf a side does not read has gradient zero there). Values
agree when |a − b| ≤ atol + rtol·max(|a|, |b|); non-finite values agree only
when both are non-finite alike at the same place (NaN with NaN, +inf with +inf),
so a loss that is finite on one side and not on the other is a disagreement.

The search is hypothesis's `find`, seeded by a `random.Random(seed)`: the same
seed gives the same examples, and a disagreement is shrunk to a small one.
"""
from __future__ import annotations

import random

from ptdsl.equivalence.conditions import parse
from ptdsl.equivalence.report import MODES, Counterexample, Report
from ptdsl.equivalence.sides import compile_side, needed, side_label, side_loss, union_table


# The search runs in tiers of batch size: shrinking costs time in proportion to the values
# drawn (a GRPO batch of 3 prompts × 8 samples holds hundreds), so a disagreement that shows
# on a small batch is found there first, and shrinks in a fraction of the time.
TIERS = ((0.5, dict(max_rows=2, max_prompts=1, max_tokens=3, max_vocab=3)), (1.0, {}))


def check(a_terms, b_terms, *, examples: int = 200, seed: int = 0, mode: str = "value-and-gradient",
          rtol: float = 1e-6, atol: float = 1e-9, conditions=(), adapter: str | None = None) -> Report:
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis.errors import NoSuchExample

    from ptdsl.equivalence.strategies import table_inputs
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got `{mode}`")
    cond = parse(conditions)
    a, b = compile_side(a_terms), compile_side(b_terms)
    sides = _Sides(a, b, adapter)
    table = sides.table
    trainable = sorted(n for n, t in table.items() if t.get("trainable"))
    table_inputs(table, conditions=cond)  # checks the conditions fit the inputs before searching
    seen = {"ran": 0, "first": None, "failing": set()}

    def disagrees(x) -> bool:
        key = _key(x)
        if key in seen["failing"]:   # hypothesis replays the final example: stay consistent
            return True
        if seen["first"] is None:
            seen["ran"] += 1
        bad = _compare(sides, x, trainable, mode, rtol, atol) is not None
        if bad:
            seen["failing"].add(key)
            seen["first"] = seen["first"] or seen["ran"]
        return bad

    rng = random.Random(seed)
    found = None
    for share, sizes in TIERS:
        n = max(1, round(examples * share)) if share < 1 else examples - seen["ran"]
        if n <= 0:
            break
        config = settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck),
                          phases=[Phase.generate, Phase.shrink])
        try:
            found = find(table_inputs(table, conditions=cond, **sizes), disagrees, settings=config, random=rng)
            break
        except NoSuchExample:
            continue
    compared = (("loss",) if mode != "gradient" else ()) + \
        (tuple(f"∇ {n}" for n in trainable) if mode != "value" else ())
    reads_a, reads_b = sides.reads("a"), sides.reads("b")
    return Report(side_label(a), side_label(b), mode, rtol, atol, seed, examples,
                  seen["first"] or seen["ran"], cond.text, compared,
                  tuple(sorted(reads_a - reads_b)), tuple(sorted(reads_b - reads_a)),
                  None if found is None else _compare(sides, found, trainable, mode, rtol, atol),
                  sides.adapter_text())


class _Sides:
    """The two compiled sides and what is drawn for them: the union of their leaves, or, with an
    adapter (adapters.py), one side's leaves from which the other side's inputs are built."""

    def __init__(self, a, b, adapter: str | None):
        from ptdsl.equivalence.adapters import link
        self.a, self.b = a, b
        self.link = link(adapter, a, b, (side_label(a), side_label(b))) if adapter else None
        self.table = self.link.table if self.link else union_table(a, b)

    def inputs(self, which: str, x: dict) -> dict:
        """Side `which`'s inputs (shared names) from a draw."""
        if self.link is None or self.link.source == which:
            return x
        return self.link.build(x)

    def reads(self, which: str) -> set[str]:
        """The drawn inputs side `which` reads."""
        if self.link is None or self.link.source == which:
            return needed(self.a if which == "a" else self.b)
        return set(self.link.target_reads)

    def adapter_text(self) -> str | None:
        if self.link is None:
            return None
        drawn, built = ("A", "B") if self.link.source == "a" else ("B", "A")
        return f"{self.link.adapter.name} ({built}'s inputs built from {drawn}'s: {self.link.adapter.doc})"


def _key(x) -> tuple:
    return tuple((k, tuple(v.shape), v.detach().cpu().numpy().tobytes()) for k, v in sorted(x.items()))


def _outcome(sides, which, x, trainable):
    import torch
    xs = {n: (v.detach().clone().requires_grad_(True) if n in trainable else v) for n, v in x.items()}
    loss = side_loss(sides.a if which == "a" else sides.b, sides.inputs(which, xs))
    used = [n for n in trainable if n in sides.reads(which)]
    grads = {n: torch.zeros_like(x[n]) for n in trainable}
    if loss.requires_grad and used:
        for n, g in zip(used, torch.autograd.grad(loss, [xs[n] for n in used], allow_unused=True)):
            if g is not None:
                grads[n] = g
    return loss.detach(), grads


def _agree(x, y, rtol, atol):
    """Elementwise agreement, with non-finite values agreeing only with the same non-finite value."""
    import torch
    both_nan = torch.isnan(x) & torch.isnan(y)
    same_inf = torch.isinf(x) & torch.isinf(y) & (x == y)
    finite = torch.isfinite(x) & torch.isfinite(y)
    close = (x - y).abs() <= atol + rtol * torch.maximum(x.abs(), y.abs())
    return both_nan | same_inf | (finite & close)


def _compare(sides, x, trainable, mode, rtol, atol) -> Counterexample | None:
    import torch
    loss_a, grads_a = _outcome(sides, "a", x, trainable)
    loss_b, grads_b = _outcome(sides, "b", x, trainable)
    reasons = []
    if mode != "gradient" and not bool(_agree(loss_a, loss_b, rtol, atol)):
        finite = torch.isfinite(loss_a) != torch.isfinite(loss_b)
        reasons.append("the loss is finite on one side only" if finite else "the loss values differ")
    worst = None
    if mode != "value":
        for n in trainable:
            ok = _agree(grads_a[n], grads_b[n], rtol, atol)
            if bool(ok.all()):
                continue
            diff = torch.where(ok, torch.zeros_like(grads_a[n]),
                               torch.nan_to_num((grads_a[n] - grads_b[n]).abs(), nan=float("inf")))
            i = int(torch.argmax(diff))
            index = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), diff.shape))
            if worst is None or diff.flatten()[i] > worst[0]:
                worst = (diff.flatten()[i], n, index)
        if worst is not None:
            reasons.append("the gradients differ")
    if not reasons:
        return None
    ce = Counterexample({k: v.detach() for k, v in x.items()}, " and ".join(reasons), float(loss_a), float(loss_b))
    if worst is not None:
        _, n, index = worst
        ce = Counterexample(ce.inputs, ce.reason, ce.loss_a, ce.loss_b, n, index,
                            float(grads_a[n][index]), float(grads_b[n][index]))
    return ce
