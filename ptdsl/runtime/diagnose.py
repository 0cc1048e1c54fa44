"""Where a non-finite loss or gradient comes from, named by IR node, op and spec line
— found by re-running a micro-batch's inputs through the IR interpreter (the
reference semantics).

A value: the first node, in evaluation order, whose value is non-finite where it
counts (valid tokens only). A gradient: every node's gradient of the loss in one
backward, walked from the loss toward the inputs; the first non-finite one names
the op whose backward produced it (its consumer). Masked positions count for
gradients — a NaN there still reaches the weights (0 · NaN = NaN)."""
from __future__ import annotations

import torch

# The loss's own gradient is 1: a node gradient this much larger was amplified somewhere
# worth naming (e.g. a huge coefficient); below it, the loss's gradients are unremarkable.
AMPLIFIED = 1e3


def first_nonfinite(compiled, inputs: dict) -> str:
    from ptdsl.codegen.interpret import evaluate
    from ptdsl.inputs import float_dtype
    g = compiled.graph
    with torch.no_grad():
        _, _, values = evaluate(g, {k: v.detach() for k, v in inputs.items()}, float_dtype(g, inputs))
    masks = _masks(g, values)
    for n in _order(g):
        d, v = g.nodes[n], values[n]
        if not torch.is_tensor(v) or not v.is_floating_point():
            continue
        lvl = d["level"]
        if lvl.kind in ("token", "vocab") and lvl.set in masks:
            m = masks[lvl.set] if lvl.kind == "token" else masks[lvl.set][..., None].expand(v.shape)
            v = v[m]
        if not torch.isfinite(v).all():
            return f"first non-finite value from {describe(g, n)}"
    return "every node is finite in the interpreter (a numerical difference in generated code)"


def gradient_report(compiled, inputs: dict, norm: dict | None = None, state: dict | None = None) -> tuple[bool, str]:
    """(found, text): the first node whose gradient of the loss is non-finite and the op it
    flows back through; else (False, where the largest gradient first appears)."""
    from ptdsl.codegen.interpret import evaluate
    from ptdsl.inputs import float_dtype
    g = compiled.graph
    trainable = {i.name for i in compiled.inputs if i.trainable}
    leaves = {k: (v.detach().requires_grad_(True) if k in trainable and v.is_floating_point() else v.detach())
              for k, v in inputs.items()}
    with torch.enable_grad():
        loss, _, values = evaluate(g, leaves, float_dtype(g, inputs), norm, dict(state or {}))
        if not loss.requires_grad:
            return False, "the loss does not depend on a trainable input in the interpreter"
        nodes = [n for n in _order(g) if torch.is_tensor(values[n]) and values[n].requires_grad]
        grads = torch.autograd.grad(loss, [values[n] for n in nodes], allow_unused=True)
    grad = {n: gr.detach() for n, gr in zip(nodes, grads) if gr is not None}
    backward = [n for n in reversed(nodes) if n in grad]   # from the loss toward the inputs
    for n in backward:
        if not torch.isfinite(grad[n]).all():
            bad = "nan" if torch.isnan(grad[n]).any() else "inf"
            return True, (f"the first non-finite gradient ({bad}) flows into {describe(g, n)}"
                          + _through(g, n, grad))
    top = {n: float(grad[n].abs().max()) if grad[n].numel() else 0.0 for n in backward}
    largest = max(top.values(), default=0.0)
    text = f"every node's gradient is finite in the interpreter (at most {largest:.3g})"
    if largest < AMPLIFIED:
        return False, text
    first = next(n for n in backward if top[n] >= largest / 10)  # where it reaches (about) its largest
    return False, f"{text}; the largest first appears at {describe(g, first)}" + _through(g, first, grad)


def _through(g, n, grad: dict) -> str:
    users = [u for u in g.successors(n) if u in grad]
    return f", from the backward of {describe(g, users[-1])}" if users else ""


def describe(g, n) -> str:
    """`op` (`let name`) at file:line:col, level — how a node is named to the user."""
    d = g.nodes[n]
    sp = d["span"]
    where = f" at {sp}" if sp else ""
    name = f" (`{d['name']}`)" if d["name"] else ""
    if d["op"] == "leaf":
        name = f" `{d['attrs']['name']}`"
    return f"`{d['op']}`{name}{where}, {d['level']}"


def _masks(g, values) -> dict:
    return {d["attrs"]["set"]: values[n] for n, d in g.nodes(data=True)
            if d["op"] == "leaf" and d["attrs"]["kind"] == "mask"}


def _order(g):
    from ptdsl.ir.graph import order
    return order(g)
