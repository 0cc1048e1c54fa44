"""When a forward encodes each shared prompt once (the rule; the mechanism is runtime/prefix.py).

Rows of one forward that continue the same prompt (a preference pair's chosen and rejected,
a group's n samples, a ranked list's responses, a set and its `mismatched` twin) can encode
it once: the prompt pass runs over the U distinct prompts, the completion pass over the R
rows. The runtime groups rows by their prompt token ids, whatever their sets; the plan only
says how many rows per prompt a forward can expect (`rows_per_prompt`), for `ptdsl show`.
Torch-free: the compiler, `show` and the runtime all read it.
"""
from __future__ import annotations

# Sharing pays when the prompt tokens it does not encode, (R − U) × P, are at least this share
# of the plain forward's R × (P + C) (P, C: the layout's padded prompt and completion widths).
# The shared forward runs the decoder twice (prompt pass, completion pass) and copies each
# layer's prompt keys/values to every row: a fixed cost per layer plus a per-row copy that the
# saved tokens must outweigh. Measured with benchmarks/prefix_crossover.py (policy forward +
# backward through run_model, 16 rows, pairs and groups of 8, fp32, one thread) on the 2-core
# reference machine, shared / plain time by saved fraction: Llama tiny (1.3M) 1.02 at 0.06,
# 0.98 at 0.10, 0.84–0.87 at 0.17, 0.76 at 0.25, 0.47 at 0.70; Llama small (20M) 0.73–0.89
# from 0.06 up (a busy machine: noisier). The break-even of the smaller model, where the fixed
# cost weighs most, is about 0.08; 0.1 is just past it.
MIN_SAVED_FRACTION = 0.1

RULE = f"(R − U)·P ≥ {MIN_SAVED_FRACTION:g}·R·(P + C)"


def saved_fraction(groups: list[int], prompt_len: int, completion_len: int) -> float:
    """The share of the plain forward's tokens, R × (P + C), that the shared one does not encode,
    (R − U) × P, for rows whose prompt indices are `groups`."""
    rows, unique = len(groups), len(set(groups))
    return (rows - unique) * prompt_len / max(rows * (prompt_len + completion_len), 1)


def pays(groups: list[int], prompt_len: int, completion_len: int) -> bool:
    """Whether the shared forward is worth its second decoder call (MIN_SAVED_FRACTION)."""
    return prompt_len > 0 and saved_fraction(groups, prompt_len, completion_len) >= MIN_SAVED_FRACTION


def rows_per_prompt(graph, sets) -> int:
    """The most rows a forward over `sets` holds per prompt, from the plan alone: each set adds its
    row space's rows per example (a group's n, a ranked list's size, else 1). Sets of another data
    source have prompts of their own and are counted apart."""
    sources = set(graph.graph.get("sources", ("examples",)))
    first = next(iter(graph.graph.get("sources", ("examples",))), "examples")
    per: dict[str, int] = {}
    for s in sets:
        rows = graph.graph["sets"][s].rows
        owner = rows if rows in sources else first  # a grouped row space holds the first source's rows
        per[owner] = per.get(owner, 0) + (graph.graph["rows"].get(rows) or 1)
    return max(per.values(), default=1)


def describe(network: str, graph, sets, separate_critic: bool) -> tuple[str, bool]:
    """`ptdsl show`'s line on whether a forward of `network` over `sets` shares prompts, and by what
    rule; and whether it can."""
    if separate_critic:
        return f"prefix sharing, {network}: no (a separate critic encodes every row)", False
    k = rows_per_prompt(graph, sets)
    if k < 2:
        return f"prefix sharing, {network}: no (one row per prompt)", False
    lists = [s for s in sets if graph.graph["sets"][s].source == "data" and graph.graph["rows"].get(graph.graph["sets"][s].rows)]
    upto = "up to " if lists else ""  # a ranked list's size varies per example
    return (f"prefix sharing, {network}: each prompt encoded once for its {upto}{k} rows, when the saved "
            f"prompt tokens pay: {RULE}"), True
