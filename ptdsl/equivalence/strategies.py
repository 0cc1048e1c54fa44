"""Hypothesis strategies for a compiled method's inputs, derived from its leaves.

Shapes follow the graph: every row space gets a row count (rollouts: prompts ×
n, contiguous groups), every sequence set a token count and a ragged mask
(each row has between 1 and T completion tokens, left-aligned), vocabulary-level
leaves a small vocabulary. Values follow the leaf kind: log-probs ≤ 0, `old`
log-probs close to the policy's (sometimes equal: on-policy), rewards with ties,
boolean labels. Masked-out positions hold garbage (huge numbers, NaN), which a
correct loss never reads.
"""
from __future__ import annotations

from hypothesis import strategies as st

_RANGES = {"logprobs": (-8.0, 0.0), "entropy": (0.0, 4.0), "logits": (-6.0, 6.0), "values": (-2.0, 2.0),
           "score": (-3.0, 3.0), "reward": (-1.0, 2.0), "field": (0.0, 2.0)}
GARBAGE = (float("nan"), 1e30, -1e30, 123.0)


def leaf_table(graphs) -> dict[str, dict]:
    """Canonical leaf name → attrs (with level), over the union of the graphs' leaves."""
    from ptdsl.ir.graph import leaves
    out: dict[str, dict] = {}
    for g in graphs:
        for n in leaves(g):
            a = dict(g.nodes[n]["attrs"])
            a["group"] = g.graph["rows"].get(a["rows"]) if a.get("rows") else None
            out.setdefault(a["name"], a)
    return out


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def inputs(draw, graphs, dtype=None, max_rows: int = 4, max_tokens: int = 6, max_vocab: int = 5):
    """A dict of input tensors for every leaf of `graphs` (a list of IR graphs)."""
    import torch
    dtype = dtype or torch.float64
    table = leaf_table(graphs)
    rows: dict[str, int] = {}
    for a in table.values():
        if a.get("rows") and a["rows"] not in rows:
            group = a["group"]
            rows[a["rows"]] = draw(st.integers(1, 3)) * group if group else draw(st.integers(1, max_rows))
    tokens: dict[str, int] = {}
    masks: dict[str, torch.Tensor] = {}
    for a in table.values():
        s = a.get("set")
        if s and s not in masks:
            tokens[s] = T = draw(st.integers(1, max_tokens))
            lengths = draw(st.lists(st.integers(1, T), min_size=rows[a["rows"]], max_size=rows[a["rows"]]))
            masks[s] = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    vocab = draw(st.integers(2, max_vocab))
    out: dict = {}
    policy_of: dict[str, torch.Tensor] = {}
    for name, a in sorted(table.items(), key=lambda kv: kv[1]["model"] == "old"):
        kind, s = a["kind"], a.get("set")
        if kind == "mask":
            out[name] = masks[s]
            continue
        shape = (rows[a["rows"]],) + ((tokens[s],) if a["level"] in ("token", "vocab") else ()) \
            + ((vocab,) if a["level"] == "vocab" else ())
        if a["dtype"] == "bool":
            out[name] = torch.tensor(draw(st.lists(st.booleans(), min_size=shape[0], max_size=shape[0])))
            continue
        if kind == "logprobs" and a["model"] == "old" and f"logprobs(policy, {s})" in policy_of:
            out[name] = _near(draw, policy_of[f"logprobs(policy, {s})"], dtype)
        elif kind == "reward":
            out[name] = _rewards(draw, shape[0], a["group"], dtype)
        else:
            lo, hi = _RANGES.get(kind, (-2.0, 2.0))
            out[name] = _tensor(draw, shape, lo, hi, dtype)
        if kind == "logprobs" and a["model"] == "policy":
            policy_of[name] = out[name]
        if a["level"] in ("token", "vocab"):
            out[name] = _garble(draw, out[name], masks[s])
    return out


def _tensor(draw, shape, lo, hi, dtype):
    import torch
    n = 1
    for d in shape:
        n *= d
    vals = draw(st.lists(_floats(lo, hi), min_size=n, max_size=n))
    return torch.tensor(vals, dtype=dtype).reshape(shape)


def _near(draw, policy, dtype):
    """Behaviour log-probs: equal to the policy's (on-policy) or a small step away."""
    import torch
    if draw(st.booleans()):
        return policy.clone()
    noise = _tensor(draw, tuple(policy.shape), -0.4, 0.4, dtype)
    return torch.clamp(policy + noise, max=0.0)


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


def trainable_names(graphs) -> list[str]:
    return sorted(n for n, a in leaf_table(graphs).items() if a.get("trainable"))
