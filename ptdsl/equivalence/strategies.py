"""Hypothesis strategies for a compiled method's inputs, derived from its leaves.

Shapes follow the graph: every row space gets a row count (rollouts: prompts ×
n, contiguous groups), every sequence set a token count and a ragged mask
(each row has between 1 and T completion tokens, left-aligned), vocabulary-level
leaves a small vocabulary. Values follow the leaf kind: log-probs < 0, `old`
log-probs close to the policy's (sometimes equal: on-policy), rewards with ties,
boolean labels; training time as the runtime gives it (`step` and `epoch` whole numbers
≥ 0, `progress` in [0, 1]) and random draws in [0, 1). Masked-out positions hold
garbage (huge numbers, NaN), which a correct loss never reads. Conditions (conditions.py) tweak the draw so that an
identity's assumptions hold by construction.
"""
from __future__ import annotations

from hypothesis import strategies as st

from ptdsl.equivalence.conditions import ConditionError, Conditions, parse

# Log-probs stay strictly below 0: a token-mean log-prob of exactly 0 (probability 1)
# sends log(1 − p) to −inf, a boundary no trained model reaches in float64.
LOGPROB_MAX = -(2.0 ** -10)
_RANGES = {"logprobs": (-8.0, LOGPROB_MAX), "entropy": (0.0, 4.0), "logits": (-6.0, 6.0),
           "values": (-2.0, 2.0), "score": (-3.0, 3.0), "token_score": (-3.0, 3.0), "reward": (-1.0, 2.0), "field": (0.0, 2.0)}
GARBAGE = (float("nan"), 1e30, -1e30, 123.0)


def leaf_table(graphs) -> dict[str, dict]:
    """Canonical leaf name → attrs (with group size), over the union of the graphs' leaves."""
    from ptdsl.ir.graph import leaves
    out: dict[str, dict] = {}
    for g in graphs:
        for n in leaves(g):
            a = dict(g.nodes[n]["attrs"])
            a["group"] = g.graph["rows"].get(a["rows"]) if a.get("rows") else None
            out.setdefault(a["name"], a)
    return out


def trainable_names(graphs) -> list[str]:
    return sorted(n for n, a in leaf_table(graphs).items() if a.get("trainable"))


def inputs(graphs, dtype=None, max_rows: int = 4, max_tokens: int = 6, max_vocab: int = 5, conditions=None,
           max_prompts: int = 3):
    """A strategy for dicts of input tensors, one for every leaf of `graphs` (IR graphs)."""
    return table_inputs(leaf_table(graphs), dtype, max_rows, max_tokens, max_vocab, conditions, max_prompts)


def table_inputs(table: dict, dtype=None, max_rows: int = 4, max_tokens: int = 6, max_vocab: int = 5,
                 conditions=None, max_prompts: int = 3):
    """A strategy over a leaf table (see `leaf_table`); checks that the conditions fit it."""
    c = parse(conditions or ())
    for s in c.reference_equals_policy + c.reference_below_policy:
        for model in ("policy", "reference"):
            if f"logprobs({model}, {s})" not in table:
                raise ConditionError(f"a condition on set `{s}` needs the input `logprobs({model}, {s})`, "
                                     "which neither method reads")
    return _draw_inputs(table, dtype, max_rows, max_prompts, max_tokens, max_vocab, c)


@st.composite
def _draw_inputs(draw, table, dtype, max_rows, max_prompts, max_tokens, max_vocab, c: Conditions):
    import torch
    dtype = dtype or torch.float64
    rows, lists = _row_counts(draw, table, max_rows, max_prompts, c)
    masks = _masks(draw, table, rows, max_tokens, c)
    vocab = draw(st.integers(2, max_vocab))
    out: dict = {}
    policy_of: dict[str, torch.Tensor] = {}
    # the policy first: `old` and conditioned reference log-probs are drawn relative to it
    for name, a in sorted(table.items(), key=lambda kv: kv[1]["model"] in ("old", "reference")):
        kind, s = a["kind"], a.get("set")
        if kind == "mask":
            out[name] = masks[s]
            continue
        if kind == "sizes":  # a ranked list's length, one per example
            out[name] = lists[name[len("sizes("):-1]]
            continue
        n_rows = rows[a["rows"]] if a.get("rows") else None
        if a["dtype"] == "bool":  # labels: one per row, or one per token of a set (step labels)
            width = masks[s].shape[1] if a["level"] == "token" else None
            flags = st.lists(st.booleans(), min_size=width, max_size=width) if width else st.booleans()
            out[name] = torch.tensor(draw(st.lists(flags, min_size=n_rows, max_size=n_rows)))
            continue
        shape = ((n_rows,) if n_rows else ()) + ((masks[s].shape[1],) if a["level"] in ("token", "vocab") else ()) \
            + ((vocab,) if a["level"] == "vocab" else ())
        x = _value(draw, a, shape, policy_of, c, dtype)
        if kind == "logprobs" and a["model"] == "policy":
            policy_of[s] = x
        out[name] = _garble(draw, x, masks[s]) if a["level"] in ("token", "vocab") else x
    return out


def _row_counts(draw, table, max_rows, max_prompts, c: Conditions):
    """Rows per row space, and the list sizes of ragged ones. Grouped spaces (rollout samples,
    ranked lists) hold `group` rows per dataset row — a ranked list between 2 and `group`
    (K_max) rows, drawn per example, when the method reads its sizes — so when a method has
    any, every space shares one prompt count: per-example values then align with the groups
    (`r(y)` beside `r(y_ref)` of n samples)."""
    import torch
    spaces = {a["rows"]: a["group"] for a in table.values() if a.get("rows")}
    rows: dict[str, int] = {}
    lists: dict = {}
    if any(spaces.values()):
        prompts = c.rows or draw(st.integers(1, max_prompts))
        for space, group in spaces.items():
            rows[space] = prompts * (group or 1)
            if f"sizes({space})" in table:
                k = draw(st.lists(st.integers(min(2, group), group), min_size=prompts, max_size=prompts))
                lists[space], rows[space] = torch.tensor(k, dtype=torch.long), sum(k)
        return rows, lists
    for space in spaces:
        rows[space] = c.rows or draw(st.integers(1, max_rows))
    return rows, lists


def _masks(draw, table, rows, max_tokens, c: Conditions) -> dict:
    import torch
    masks: dict = {}
    shared_T = c.length or (draw(st.integers(1, max_tokens)) if c.equal_lengths else None)
    for a in table.values():
        s = a.get("set")
        if s and s not in masks:
            T = shared_T or draw(st.integers(1, max_tokens))
            n = rows[a["rows"]]
            lengths = [T] * n if c.equal_lengths else draw(st.lists(st.integers(1, T), min_size=n, max_size=n))
            masks[s] = torch.arange(T)[None, :] < torch.tensor(lengths, dtype=torch.long)[:, None]
    return masks


def _value(draw, a, shape, policy_of, c: Conditions, dtype):
    import torch
    kind, model, s = a["kind"], a.get("model"), a.get("set")
    policy = policy_of.get(s) if kind == "logprobs" else None
    if model == "old" and policy is not None:
        return _near(draw, policy, dtype, c)
    if model == "reference" and policy is not None:
        if s in c.reference_equals_policy:
            return policy.clone()
        if s in c.reference_below_policy:
            return policy - _tensor(draw, shape, 0.01, 0.5, dtype)
    if model == "reference" and kind == "logprobs" and c.reference_zero:
        return torch.zeros(shape, dtype=dtype)
    if kind == "reward":
        return _rewards(draw, shape[0], a["group"], dtype)
    if kind == "time":  # step and epoch count (whole numbers), progress runs from 0 to 1
        whole = a["name"] != "progress"
        value = draw(st.integers(0, 1000 if a["name"] == "step" else 10)) if whole else draw(_floats(0, 1))
        return torch.tensor(float(value), dtype=dtype)
    if kind == "uniform":  # a random draw: U[0, 1), so 1 itself never
        return _tensor(draw, shape, 0.0, 1.0, dtype, exclude_max=True)
    lo, hi = _RANGES.get(kind, (-2.0, 2.0))
    return _tensor(draw, shape, lo, hi, dtype)


def _floats(lo, hi, exclude_max=False):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64, exclude_max=exclude_max)


def _tensor(draw, shape, lo, hi, dtype, exclude_max=False):
    import torch
    n = 1
    for d in shape:
        n *= d
    vals = draw(st.lists(_floats(lo, hi, exclude_max), min_size=n, max_size=n))
    return torch.tensor(vals, dtype=dtype).reshape(shape)


def _near(draw, policy, dtype, c: Conditions):
    """Behaviour log-probs: equal to the policy's (on-policy) or a small step away."""
    import torch
    if c.on_policy or (not c.off_policy and draw(st.booleans())):
        return policy.clone()
    noise = _tensor(draw, tuple(policy.shape), -0.4, 0.4, dtype)
    return torch.clamp(policy + noise, max=LOGPROB_MAX)


def _rewards(draw, n, group, dtype):
    import torch
    style = draw(st.sampled_from(["real", "binary", "ties"]))
    if style == "binary":
        vals = [float(v) for v in draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))]
    elif style == "ties" and group:
        per = draw(st.lists(_floats(-1, 2), min_size=n // group, max_size=n // group))
        vals = [v for v in per for _ in range(group)]
    else:
        vals = draw(st.lists(_floats(-1, 2), min_size=n, max_size=n))
    return torch.tensor(vals, dtype=dtype)


def _garble(draw, x, mask):
    import torch
    fill = draw(st.sampled_from(GARBAGE))
    m = mask if x.dim() == mask.dim() else mask[..., None].expand(x.shape)
    return torch.where(m, x, torch.full_like(x, fill))
