"""Near ties: where generated code and the interpreter may rightly disagree.

Both evaluate the same graph, but in different operation orders, so their values differ in
the last bits. A comparison (`a > b`, …) of two values that are equal up to rounding can then
come out differently, and a metric or loss built on it (`clip_ratio`, a `where`) jumps.
Hypothesis finds such inputs: symmetric 0/1 rewards make group-normalised advantages cancel
to ~1e-17, whose sign is rounding. A disagreement is excused only where a comparison's result
itself differs between the two, at a valid element whose operands are within tolerance.
"""
from __future__ import annotations

import re
import sys

import torch

from ptdsl.codegen.interpret import evaluate
from ptdsl.inputs import float_dtype

COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne"}


def generated_values(c, inputs: dict) -> dict:
    """node id → value, as the generated code computed it: its locals when `loss_fn` returns
    (each node's statement assigns `v<id>` or `<let name>_<id>`)."""
    seen: dict = {}

    def tracer(frame, event, arg):
        if frame.f_code.co_name != "loss_fn":
            return None
        def on_return(frame, event, arg):
            if event == "return":
                seen.update(frame.f_locals)
            return on_return
        return on_return

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        with torch.no_grad():
            c.loss(inputs)
    finally:
        sys.settrace(old)
    out = {}
    for name, value in seen.items():
        m = re.fullmatch(r"(?:v|\w+_)(\d+)", name)
        if m and isinstance(value, torch.Tensor):
            out[int(m.group(1))] = value
    return out


def flipped_near_tie(c, inputs: dict, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    """Whether some comparison of the optimised graph came out differently in generated code
    and in the interpreter, at a valid element (a token in its set's mask) where the
    interpreter's operands are within (rtol, atol) of each other."""
    g = c.graph
    values = evaluate(g, inputs, float_dtype(g, inputs))[2]
    generated = generated_values(c, inputs)
    for n, d in g.nodes(data=True):
        if d["op"] not in COMPARISONS or n not in generated:
            continue
        a, b = torch.broadcast_tensors(*(values[x].detach().double() for x in d["args"]))
        valid = torch.isfinite(a) & torch.isfinite(b)
        if d["level"].kind == "token":
            valid = valid & inputs[f"mask({d['level'].set})"].bool()
        close = (a - b).abs() <= atol + rtol * b.abs()
        flipped = generated[n].bool() != values[n].bool()
        if bool((flipped & close & valid).any()):
            return True
    return False
