"""Where a non-finite loss comes from: the first IR node, in evaluation order,
whose value is non-finite where it counts (valid tokens only), named by its op and
spec line — found by re-running the step's inputs through the IR interpreter."""
from __future__ import annotations

import torch


def first_nonfinite(compiled, inputs: dict) -> str:
    from ptdsl.codegen.interpret import evaluate
    from ptdsl.ir.graph import order
    from ptdsl.inputs import float_dtype
    g = compiled.graph
    with torch.no_grad():
        _, _, values = evaluate(g, {k: v.detach() for k, v in inputs.items()}, float_dtype(g, inputs))
    masks = {d["attrs"]["set"]: values[n] for n, d in g.nodes(data=True)
             if d["op"] == "leaf" and d["attrs"]["kind"] == "mask"}
    for n in order(g):
        d, v = g.nodes[n], values[n]
        if not torch.is_tensor(v) or not v.is_floating_point():
            continue
        lvl = d["level"]
        if lvl.kind in ("token", "vocab") and lvl.set in masks:
            m = masks[lvl.set] if lvl.kind == "token" else masks[lvl.set][..., None].expand(v.shape)
            v = v[m]
        if not torch.isfinite(v).all():
            sp = d["span"]
            where = f" at {sp}" if sp else ""
            name = f" (`{d['name']}`)" if d["name"] else ""
            return f"first non-finite value from `{d['op']}`{name}{where}, {lvl}"
    return "every node is finite in the interpreter (a numerical difference in generated code)"
