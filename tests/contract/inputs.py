"""The fixed inputs the golden records (tests/contract/numbers/) are computed on.

One float64 tensor for every leaf of a compiled method, built from its leaves with the domain
rules of the equivalence strategies (ptdsl/equivalence/strategies.py) but from seeded
torch.Generators, not hypothesis draws (those change between hypothesis versions):

- every row space holds PROMPTS rows, a grouped one (rollout samples, ranked lists) PROMPTS × n;
  a ranked list of varying length has between 2 and K rows per example (`sizes(R)`);
- every sequence set is TOKENS wide with a ragged, left-aligned mask (1 … TOKENS tokens a row),
  and every token tensor holds GARBAGE outside it, which a correct loss never reads;
- log-probs in [-8, -2⁻¹⁰]; `old` ones the policy's plus noise in [-0.4, 0.4] (off-policy, so
  ratios and clipping act); rewards, scores, values, logits, entropies in the strategies' ranges,
  and on grouped rows the first group's rewards all tied (a group with no spread: std 0);
  labels fair coin flips; the training time step = 7, epoch = 1, progress = 0.35; draws in [0, 1).

A leaf's values come from its own generator, seeded by its canonical name (and what it is drawn
relative to), so that the same leaf gets the same values in every method of a given shape.

Changing anything here changes the numbers of every record: it is itself a C1 event
(docs/stability.md#c1-numbers). Regenerate all records with
`python tests/contract/regenerate_numbers.py --breaking` and say so in CHANGELOG.md; then bump
INPUTS_VERSION, which every record stores.
"""
from __future__ import annotations

import zlib

import torch

INPUTS_VERSION = 1
PROMPTS = 3
TOKENS = 5
VOCAB = 4
GARBAGE = 1e6      # finite: a gradient of garbage × 0 stays 0 and a NaN cannot hide in the summaries
LOGPROB_MAX = -(2.0 ** -10)
RANGES = {"logprobs": (-8.0, LOGPROB_MAX), "entropy": (0.0, 4.0), "logits": (-6.0, 6.0), "values": (-2.0, 2.0),
          "score": (-3.0, 3.0), "token_score": (-3.0, 3.0), "reward": (-1.0, 2.0), "field": (0.0, 2.0),
          "uniform": (0.0, 1.0)}
TIME = {"step": 7.0, "epoch": 1.0, "progress": 0.35}


def generator(name: str) -> torch.Generator:
    """A generator seeded by a name (crc32: the same in every Python and torch version)."""
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def leaf_table(g) -> dict[str, dict]:
    """Canonical leaf name → its attrs, with the group size of its row space."""
    from ptdsl.ir.graph import leaves
    out = {}
    for n in leaves(g):
        a = dict(g.nodes[n]["attrs"])
        a["group"] = g.graph["rows"].get(a["rows"]) if a.get("rows") else None
        out[a["name"]] = a
    return out


def build(compiled) -> dict[str, torch.Tensor]:
    """The inputs of a CompiledMethod (float64, CPU)."""
    table = leaf_table(compiled.graph)
    rows, sizes = row_counts(table)
    masks = {a["set"]: mask(a["set"], rows[a["rows"]]) for a in table.values() if a.get("set")}
    out: dict[str, torch.Tensor] = {}
    policy = {}
    # the policy's log-probs first: `old` ones are drawn relative to them
    for name, a in sorted(table.items(), key=lambda kv: (kv[1].get("model") == "old", kv[0])):
        if a["kind"] == "mask":
            out[name] = masks[a["set"]]
        elif a["kind"] == "sizes":
            out[name] = sizes[name[len("sizes("):-1]]
        else:
            out[name] = value(name, a, rows, masks, policy, sizes)
            if a["kind"] == "logprobs" and a.get("model") == "policy":
                policy[a["set"]] = out[name]
    return out


def row_counts(table) -> tuple[dict, dict]:
    """Rows per row space, and the list sizes of ranked lists of varying length."""
    rows, sizes = {}, {}
    for a in table.values():
        space, group = a.get("rows"), a.get("group")
        if not space or space in rows:
            continue
        rows[space] = PROMPTS * (group or 1)
        if f"sizes({space})" in table:
            k = torch.randint(min(2, group), group + 1, (PROMPTS,), generator=generator(f"sizes({space})"))
            sizes[space], rows[space] = k, int(k.sum())
    return rows, sizes


def mask(s: str, n_rows: int) -> torch.Tensor:
    lengths = torch.randint(1, TOKENS + 1, (n_rows,), generator=generator(f"mask({s})"))
    lengths[0] = TOKENS  # one full row, so the last column is read
    return torch.arange(TOKENS)[None, :] < lengths[:, None]


def value(name: str, a: dict, rows: dict, masks: dict, policy: dict, sizes: dict) -> torch.Tensor:
    kind, level, s = a["kind"], a["level"], a.get("set")
    n = rows[a["rows"]] if a.get("rows") else None
    shape = ((n,) if n else ()) + ((TOKENS,) if level in ("token", "vocab") else ()) \
        + ((VOCAB,) if level == "vocab" else ())
    g = generator(name)
    if kind == "time":
        return torch.tensor(TIME[name], dtype=torch.float64)
    if a["dtype"] == "bool":
        return torch.rand(shape, generator=g, dtype=torch.float64) < 0.5
    if kind == "logprobs" and a.get("model") == "old" and s in policy:
        noise = 0.8 * torch.rand(shape, generator=g, dtype=torch.float64) - 0.4
        x = torch.clamp(policy[s] + noise, max=LOGPROB_MAX)
    else:
        lo, hi = RANGES.get(kind, (-2.0, 2.0))
        x = lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)
    if kind == "reward" and a.get("group"):  # one group of ties: the zero-spread case of group normalisation
        first = int(sizes[a["rows"]][0]) if a["rows"] in sizes else a["group"]
        x[:first] = x[0]
    if level in ("token", "vocab") and s in masks:
        m = masks[s] if x.dim() == 2 else masks[s][..., None].expand(x.shape)
        x = torch.where(m, x, torch.full_like(x, GARBAGE))
    return x
