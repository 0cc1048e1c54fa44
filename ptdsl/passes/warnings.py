"""Warnings on a compiled method: specs that compile and train, but cannot do what
they say. They never stop a build; `ptdsl check` prints them and exits 0, and
`ptdsl train` prints them at start-up (W02xx: structure and names).

W0202 — `old` without an `update` line. With one optimizer step per batch of
experience, `old` is the current policy, detached: every ratio against it is 1 in
value, so clipping (PPO, GRPO and their kin) never acts. Stating any `update` line,
`update passes = 1` included, says that this is meant.
"""
from __future__ import annotations

from ptdsl.diagnostics import Diagnostic, Label
from ptdsl.ir.graph import leaves


def training_warnings(g, plan) -> list[Diagnostic]:
    """The warnings of an optimised graph and its plan."""
    return _old_without_update(g, plan)


def _old_without_update(g, plan) -> list[Diagnostic]:
    if plan.schedule.stated:
        return []
    olds = sorted(n for n in leaves(g) if g.nodes[n]["attrs"]["kind"] != "mask"
                  and str(g.nodes[n]["attrs"]["model"] or "").startswith("old"))
    spans = [g.nodes[n]["span"] for n in olds if g.nodes[n]["span"] is not None]
    if not spans:
        return []
    first = min(spans, key=lambda s: (s.file != g.graph.get("file"), s.line, s.col))
    leaf = g.nodes[olds[0]]["attrs"]["name"]
    return [Diagnostic(
        "warning", "W0202", "`old` is the current policy here, so ratios against it are 1 and clipping "
                            "cannot act",
        (Label(first, "the policy's own outputs, detached"),),
        (f"without an `update` line each batch of experience feeds one optimizer step, so `{leaf}` is "
         "never recorded",),
        "add `update passes = 2` (or `update passes = P, minibatches = M`) to reuse each batch for several "
        "optimizer steps; write `update passes = 1` if one step per batch is meant")]
