"""The plan: which model runs on which sequence sets, producing which outputs,
and how each batch of experience is used (the training graph's schedule).

Read off the leaves of the optimised graph, so a query that folding removed
(e.g. the reference when `beta = 0`) costs nothing at train time. Each model
runs one batched forward over every set it is asked about; a frozen model's
query on dataset sets depends on data only and can be precomputed once. When an
experience feeds several optimizer steps (`update passes = 2, …`), `old` outputs
and a fixed model's other queries are recorded once, when the experience is made.
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
    role_kind: str     # policy | frozen_copy | model | value_head | critic | old | sampler
    set: str
    output: str        # logprobs | entropy | logits | values | score | token_score
    frozen: bool       # no gradient of the loss flows into this query (frozen model, or detached)
    precomputable: bool  # frozen and on dataset sets only: compute once per dataset
    per_experience: bool = False  # when an experience is reused: computed once, as it is made (`old`, and
    #                               a model that does not move, on sets not precomputed)


@dataclass(frozen=True)
class Schedule:
    """How each batch of experience is used: `passes` over it, `minibatches` optimizer steps
    per pass, each mini-batch one optimizer step with --grad-accum micro-batches inside it.
    `micro_batches` is TRL's spelling (steps_per_generation): micro-batches per pass, divided
    by --grad-accum at run time, 0 meaning --grad-accum; `minibatches` is then None.
    `stated`: the spec has an `update` line (without one: one pass, one mini-batch)."""

    passes: int = 1
    minibatches: int | None = 1
    micro_batches: int | None = None
    stated: bool = False

    def minibatches_for(self, grad_accum: int) -> int | None:
        """Optimizer steps per pass with this --grad-accum; None when it does not divide
        `micro_batches` (an error the runtime reports with the numbers)."""
        if self.minibatches is not None:
            return self.minibatches
        k = self.micro_batches or grad_accum
        return k // grad_accum if k % grad_accum == 0 else None

    def reuses(self, grad_accum: int) -> bool:
        """Whether an experience feeds more than one optimizer step: then `old` is recorded
        when it is made; otherwise `old` is the current policy, detached, and costs nothing."""
        return self.passes * (self.minibatches_for(grad_accum) or 1) > 1

    def when_reused(self) -> str | None:
        """"" when every experience feeds several optimizer steps, None when none does, else
        the --grad-accum it takes."""
        if self.passes > 1 or (self.minibatches or 1) > 1:
            return ""
        if self.minibatches is not None or not self.micro_batches or self.micro_batches == 1:
            return None
        return f"when --grad-accum < {self.micro_batches}"

    def describe(self) -> str:
        per_pass = (f"{self.minibatches} mini-batch{'es' if self.minibatches != 1 else ''}"
                    if self.minibatches is not None else
                    "1 mini-batch (micro_batches = --grad-accum)" if not self.micro_batches else
                    f"{self.micro_batches} micro-batches ÷ --grad-accum mini-batches")
        steps = (f"{self.passes * self.minibatches} optimizer step{'s' if self.passes * self.minibatches != 1 else ''}"
                 if self.minibatches is not None else
                 f"{self.passes} optimizer step{'s' if self.passes != 1 else ''}" if not self.micro_batches else
                 f"{self.passes} × {self.micro_batches} ÷ --grad-accum optimizer steps")
        return f"{self.passes} pass{'es' if self.passes != 1 else ''} × {per_pass} → {steps} per experience"


@dataclass(frozen=True)
class Learner:
    """A model trained beside the policy with its own parameter group (a separate critic):
    its learning rate is the policy's × `lr_scale` (or --critic-lr), its gradient norm is clipped
    on its own, and for the first `warmup_steps` optimizer steps it is the only model updated."""

    name: str
    source: str        # critic(policy) | critic("path")
    lr_scale: float = 1.0
    warmup_steps: int = 0

    def describe(self) -> str:
        alone = f", alone for the first {self.warmup_steps} step{'s' if self.warmup_steps != 1 else ''}" \
            if self.warmup_steps else ""
        return f"{self.name} = {self.source}: own parameter group, lr × {self.lr_scale:g}{alone}"


@dataclass(frozen=True)
class Plan:
    data: str
    queries: tuple[Query, ...]
    forwards: dict            # model → sets, one batched forward each (old is recorded, not run)
    rollouts: dict            # name → Rollout
    rewards: dict             # name → reward terms, for the rewards the loss reads
    fields: tuple[str, ...]   # per-example data fields read
    sets: tuple[str, ...]     # sequence sets whose masks/tokens are needed
    schedule: Schedule = Schedule()
    sources: tuple = ()       # ir/sources.Source of each dataset, the first defining an epoch
    learners: tuple[Learner, ...] = ()  # separate critics trained beside the policy

    def describe(self) -> str:
        """Which model runs on which sets, and each query's flags (`ptdsl show`'s "plan"); when
        and how often they run is the training graph's (ptdsl/inspect/training.py)."""
        lines = [f"data {self.data}"] if len(self.sources) < 2 else \
            [f"data {s.describe()}" for s in self.sources] + [_mix_text(self.sources)]
        for model, sets in self.forwards.items():
            lines.append(f"forward {model} on {', '.join(sets)}")
        for q in self.queries:
            flags = ["frozen" if q.frozen else "trainable"]
            if q.precomputable:
                flags.append("precomputable")
            reused = self.schedule.when_reused() is not None
            if q.role_kind == "sampler":
                flags.append("recorded at sampling")
            elif q.role_kind == "old":
                flags.append("recorded per experience" if reused else "= the current policy, detached")
            elif q.per_experience and reused:
                flags.append("once per experience")
            lines.append(f"  {q.leaf:<44} {' '.join(flags)}")
        for name, r in self.rollouts.items():
            opts = ", ".join(f"{k} = {_spec_text(v)}" for k, v in r.options.items())
            env = f'environment("{r.env}"), ' if r.env else ""
            lines.append(f"rollout {name} = {r.kind}({r.model}, {env}{opts})")
        for name, terms in self.rewards.items():
            lines.append(f"reward {name} = " + " + ".join(f"{t.weight:g} * {t.kind}(\"{t.name}\")" for t in terms))
        if self.fields:
            lines.append("fields " + ", ".join(self.fields))
        lines += [f"learner {learner.describe()}" for learner in self.learners]
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
            kind = "old" if model.startswith("old") else roles[model].kind  # or "sampler", "policy", …
            frozen = not (a["trainable"] and n in grad)
            # per example only: a list's rows are not what the precompute cache is keyed by
            data_only = _from_data(sets, a["set"]) and sets[a["set"]].rows in g.graph.get("sources", ("examples",))
            moving = dict(roles[model].options).get("sync_steps") if kind != "old" else None
            # per-token outputs only: a vocabulary-level leaf would cache [tokens × vocab] per example
            per_token = a["kind"] in ("logprobs", "entropy")
            precompute = not a["trainable"] and kind != "old" and data_only and not moving and per_token
            # a model that does not move gives the same outputs all through an experience (not `logits`:
            # [tokens × vocab] per row is too much to keep)
            fixed = kind in ("frozen_copy", "model") and not moving and a["kind"] != "logits"
            once = kind == "old" or (fixed and not precompute)
            q = Query(a["name"], model, kind, a["set"], a["kind"], frozen, precompute, once)
            queries.append(q)
            if kind not in ("old", "sampler"):
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
                used_rollouts, rewards, tuple(fields), tuple(used_sets), schedule(g.graph.get("update")),
                tuple(g.graph.get("sources", {}).values()), learners(roles, queries))


def learners(roles, queries) -> tuple[Learner, ...]:
    """The separate critics the loss reads (directly, or through their `old` snapshot)."""
    read = {q.model for q in queries} | {q.model[4:-1] for q in queries if q.model.startswith("old(")}
    out = []
    for name, role in roles.items():
        if role.kind == "critic" and name in read:
            opts = dict(role.options)
            out.append(Learner(name, role.source, float(opts["lr_scale"]), int(opts["warmup_steps"])))
    return tuple(out)


def schedule(update) -> Schedule:
    """The plan's schedule from the declared `update` line (ir/declare.Update, or None)."""
    if update is None:
        return Schedule()
    return Schedule(update.passes, update.minibatches, update.micro_batches, update.span is not None)


def _from_data(sets, s: str) -> bool:
    """Sequences fixed by the dataset alone (mismatched pairs depend on the batch; rollouts
    and picks on sampling)."""
    return sets[s].source == "data"


def _mix_text(sources) -> str:
    """`mix` with the rows each source adds to a micro-batch (the first holds --batch-size)."""
    first = sources[0].weight
    parts = [f"{s.rows} = {s.weight:g}" for s in sources]
    rows = ", ".join(f"{s.rows} {'--batch-size' if s is sources[0] else f'{s.weight / first:g} × --batch-size'}"
                     for s in sources)
    return f"mix {', '.join(parts)}  [rows per micro-batch: {rows}; an epoch is a pass over {sources[0].rows}]"


def _spec_text(value) -> str:
    """An option value as a spec writes it (`true`, not Python's `True`)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
