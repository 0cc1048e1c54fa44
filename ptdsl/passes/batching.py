"""Which losses split exactly across micro-batches and processes.

With global counts for its batch means (codegen/python.normalizer_key), a loss
that is a linear combination of batch reductions (`mean`, `sum`, `token_mean`,
`token_sum`) of per-row expressions splits exactly: the micro-batch losses sum
to the full-batch loss, so their gradients do too. Group statistics are
per-row here (groups never straddle micro-batches). Anything else that looks
across rows — a batch statistic used non-linearly (`std`, `whiten`, a mean inside
a sigmoid, KTO's detached KL estimate) — is computed per micro-batch, as TRL
does; this pass names those nodes so the runtime can say so.
"""
from __future__ import annotations

from ptdsl.ir.graph import order

LINEAR_REDUCTIONS = frozenset({"mean", "sum", "token_mean", "token_sum"})
CROSS_ROW = frozenset({"mean", "sum", "std", "max_rows", "min_rows", "token_mean", "token_sum", "whiten",
                       "sort_rows", "token_quantile", "running_mean", "running_var", "ema", "row_rank",
                       "num_rows"})
# (group ops and pairs stay within a group, and groups never straddle micro-batches)
_LINEAR = frozenset({"add", "sub", "neg"})


def _constant(g, n) -> bool:
    return g.nodes[n]["op"] == "const"


def split_analysis(g) -> tuple[set[int], dict[str, list[int]]]:
    """(reductions in linear position of an output, which take global counts;
    per output — "loss" and each metric — the nodes that make its split inexact)."""
    cross = _cross_row(g)
    linear: set[int] = set()

    def visit(root, bad):  # each node reached is in linear position above the reductions
        # iterative, and each node once: lets make linear chains of any length, and a chain
        # like `let b = a + a` would otherwise be walked once per path (2^length times)
        stack, seen = [root], set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            d = g.nodes[n]
            op = d["op"]
            if op in LINEAR_REDUCTIONS:
                linear.add(n)
                if d["args"][0] in cross:
                    bad.append(n)
            elif op in _LINEAR:
                stack += reversed(d["args"])
            elif op == "mul" and _constant(g, d["args"][0]):
                stack.append(d["args"][1])
            elif op in ("mul", "div") and _constant(g, d["args"][1]):
                stack.append(d["args"][0])
            elif op in ("to_real", "stopgrad"):
                stack.append(d["args"][0])
            elif op != "const" and n in cross:
                bad.append(n)  # constants and per-row values need no counts

    outputs = {"loss": g.graph.get("loss"), **g.graph["metrics"]}
    report = {}
    for name, node in outputs.items():
        if node is not None:
            report[name] = []
            visit(node, report[name])
    return linear, report


def inexact_nodes(g) -> list[int]:
    """Nodes that make a split of the loss's batch inexact (empty: the split is exact)."""
    return split_analysis(g)[1].get("loss", [])


def _cross_row(g) -> set[int]:
    """Nodes whose value depends on more than their own row (a batch statistic upstream)."""
    out: set[int] = set()
    for n in order(g):
        d = g.nodes[n]
        if d["op"] in CROSS_ROW or any(a in out for a in d["args"]):
            out.add(n)
    return out
