"""The plan: which model runs on which sequence sets, producing which outputs.

Read off the leaves of the optimised graph, so a query that folding removed
(e.g. the reference when `beta = 0`) costs nothing at train time. Each model
runs one batched forward over every set it is asked about; a frozen model's
query on dataset sets depends on data only and can be precomputed once.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.ir.graph import leaves
from ptdsl.passes.gradflow import gradient_sources

_MODEL_KINDS = ("logprobs", "entropy", "logits", "values", "score", "token_score")


@dataclass(frozen=True)
class Query:
    leaf: str          # canonical input name, e.g. "logprobs(reference, chosen)"
    model: str         # role name ("old" for behaviour log-probs)
    role_kind: str     # policy | frozen_copy | model | value_head | old
    set: str
    output: str        # logprobs | entropy | logits | values | score | token_score
    frozen: bool       # no gradient of the loss flows into this query (frozen model, or detached)
    precomputable: bool  # frozen and on dataset sets only: compute once per dataset


@dataclass(frozen=True)
class Plan:
    data: str
    queries: tuple[Query, ...]
    forwards: dict            # model → sets, one batched forward each (old is recorded, not run)
    rollouts: dict            # name → Rollout
    rewards: dict             # name → reward terms, for the rewards the loss reads
    fields: tuple[str, ...]   # per-example data fields read
    sets: tuple[str, ...]     # sequence sets whose masks/tokens are needed

    def describe(self) -> str:
        lines = [f"data {self.data}"]
        for model, sets in self.forwards.items():
            lines.append(f"forward {model} on {', '.join(sets)}")
        for q in self.queries:
            flags = ["frozen" if q.frozen else "trainable"]
            if q.precomputable:
                flags.append("precomputable")
            if q.role_kind == "old":
                flags.append("recorded at sampling")
            lines.append(f"  {q.leaf:<44} {' '.join(flags)}")
        for name, r in self.rollouts.items():
            opts = ", ".join(f"{k} = {_spec_text(v)}" for k, v in r.options.items())
            lines.append(f"rollout {name} = sample({r.model}, {opts})")
        for name, terms in self.rewards.items():
            lines.append(f"reward {name} = " + " + ".join(f"{t.weight:g} * {t.kind}(\"{t.name}\")" for t in terms))
        if self.fields:
            lines.append("fields " + ", ".join(self.fields))
        return "\n".join(lines)


def make_plan(g) -> Plan:
    roles, sets = g.graph["roles"], g.graph["sets"]
    queries, forwards, rewards, fields, used_sets = [], {}, {}, [], []
    grad = gradient_sources(g)
    for n in leaves(g):
        a = g.nodes[n]["attrs"]
        if a["set"] and a["set"] not in used_sets:
            used_sets.append(a["set"])
        if a["kind"] in _MODEL_KINDS:
            model = a["model"]
            kind = "old" if model.startswith("old") else roles[model].kind
            frozen = not (a["trainable"] and n in grad)
            # per example only: a list's rows are not what the precompute cache is keyed by
            data_only = _from_data(sets, a["set"]) and sets[a["set"]].rows == "examples"
            moving = dict(roles[model].options).get("sync_steps") if kind != "old" else None
            # per-token outputs only: a vocabulary-level leaf would cache [tokens × vocab] per example
            per_token = a["kind"] in ("logprobs", "entropy")
            precompute = not a["trainable"] and kind != "old" and data_only and not moving and per_token
            q = Query(a["name"], model, kind, a["set"], a["kind"], frozen, precompute)
            queries.append(q)
            if kind != "old":
                forwards.setdefault(model, [])
                if a["set"] not in forwards[model]:
                    forwards[model].append(a["set"])
        elif a["kind"] == "reward":
            rewards[a["reward"]] = g.graph["rewards"][a["reward"]]
        elif a["kind"] == "field":
            fields.append(a["name"])
    # a picked set (best/worst of a rollout by a reward) needs its rollout and that reward
    for s in list(used_sets):
        info = sets[s]
        if info.source == "picked":
            if info.base not in used_sets:
                used_sets.append(info.base)
            rewards.setdefault(info.by, g.graph["rewards"][info.by])
    used_rollouts = {k: v for k, v in g.graph["rollouts"].items() if k in used_sets}
    return Plan(g.graph.get("data", ""), tuple(queries), {k: tuple(v) for k, v in forwards.items()},
                used_rollouts, rewards, tuple(fields), tuple(used_sets))


def _from_data(sets, s: str) -> bool:
    """Sequences fixed by the dataset alone (mismatched pairs depend on the batch; rollouts
    and picks on sampling)."""
    return sets[s].source == "data"


def _spec_text(value) -> str:
    """An option value as a spec writes it (`true`, not Python's `True`)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
