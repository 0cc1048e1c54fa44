"""One micro-batch → the leaf tensors of the compiled loss, following the plan.

Each model runs one forward over all the sets it is asked about (split in two
only when some of its outputs need no gradient, e.g. KTO's detached KL
estimate). Outputs recorded when the experience was made (`old`, when an
experience feeds several optimizer steps; runtime/experience.py) are read from
the batch; otherwise `old` outputs are the detached current ones: the behaviour
policy is the current policy and costs no extra forward. Precomputed frozen
queries are read from the cache; `logprobs(sampler, y)` from the rollout's rows.
The training time and random draws come from runtime/draws.py.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ptdsl.runtime.batch import Batch, SetRows, completion_width, dataset_sets, list_sizes, set_mask
from ptdsl.runtime.draws import Clock, random_inputs, time_inputs
from ptdsl.runtime.episode_rollout import leaf as episode_leaf
from ptdsl.runtime.precompute import lookup
from ptdsl.runtime.queries import run_critic, run_model


@dataclass
class StepContext:
    compiled: object
    models: object          # setup.Models
    device: object
    precomputed: dict       # leaf → per-example tensors
    positions: dict         # example index → position in the precomputed lists
    dtype: torch.dtype = torch.float32
    temperatures: dict = field(default_factory=dict)  # set → scoring temperature (see scoring_temperatures)
    seed: int = 0           # the run's seed: random draws are keyed by it (runtime/draws.py)
    clock: Clock = field(default_factory=Clock)  # the optimizer step being made (the loop sets it)
    prefix_sharing: bool = True  # rows with one prompt may encode it once (runtime/prefix.py)


def _policy(ctx):
    """The trainable model through its distributed wrapper, when there is one."""
    return ctx.models.trunk if ctx.models.trunk is not None else ctx.models.policy


def _body(ctx, model_name):
    """The network a role's outputs come from: value heads share the policy's body; a separate
    critic is its own network (ctx.models.critics)."""
    role = ctx.compiled.graph.graph["roles"].get(model_name)
    if role is not None and role.kind == "value_head":
        return "policy", ctx.models.heads[model_name]
    return model_name, None


def masks(compiled, batch: Batch, device) -> dict:
    out = {}
    for s in compiled.plan.sets:
        rows = batch.sets[s]
        m = set_mask(rows, completion_width(rows))
        rollout = compiled.plan.rollouts.get(s)
        if rollout is not None and rollout.options.get("mask_truncated") and rows.truncated:
            m[torch.tensor(rows.truncated, dtype=torch.bool)] = False  # overlong filtering
        out[s] = m.to(device)
    return out


def loss_inputs(ctx: StepContext, batch: Batch) -> dict:
    plan = ctx.compiled.plan
    m = masks(ctx.compiled, batch, ctx.device)
    inputs = {f"mask({s})": v for s, v in m.items()}
    live = [q for q in plan.queries if q.leaf not in ctx.precomputed and q.leaf not in batch.recorded
            and q.role_kind not in ("old", "sampler")]
    inputs.update(_forwards(ctx, batch, [(q, q.model, q.frozen) for q in live], m))
    for q in plan.queries:
        if q.leaf in batch.recorded:
            inputs[q.leaf] = batch.recorded[q.leaf].to(ctx.dtype)
        elif q.leaf in ctx.precomputed:
            examples = batch.rows_of(ctx.compiled.graph.graph["sets"][q.set].rows)
            inputs[q.leaf] = lookup(ctx.precomputed, q.leaf, examples, ctx.positions, m[q.set], ctx.dtype)
        elif q.role_kind == "old":
            inputs[q.leaf] = _current(ctx, q, inputs, batch, m)
        elif q.role_kind == "sampler":
            inputs[q.leaf] = _sampled(batch.sets[q.set], m[q.set], ctx.device).to(ctx.dtype)
    for name, value in batch_fields(ctx.compiled, batch, ctx.device).items():
        inputs[name] = value
    inputs.update(time_inputs(ctx.compiled, ctx.clock, ctx.device, ctx.dtype))
    inputs.update(random_inputs(ctx.compiled, batch.examples, m, ctx.seed, ctx.clock.step, ctx.device, ctx.dtype,
                                by_rows=batch.sources))
    return inputs


def record(ctx: StepContext, batch: Batch) -> dict:
    """The plan's per-experience outputs for this micro-batch, by no-grad forwards now: `old`
    outputs from the policy (and its value heads) and from separate critics as they are, a
    fixed model's from it."""
    m = masks(ctx.compiled, batch, ctx.device)
    wanted = [(q, _snapshot_of(q), True) for q in ctx.compiled.plan.queries
              if q.per_experience and q.leaf not in ctx.precomputed]
    return {leaf: t.detach() for leaf, t in _forwards(ctx, batch, wanted, m).items()}


def _forwards(ctx, batch, wanted, m) -> dict:
    """leaf → tensor for `wanted` (query, the role whose outputs it reads, frozen): one forward
    per network and gradient setting, over every set asked of it."""
    groups: dict[tuple, list] = {}
    for q, model_name, frozen in wanted:
        body, head = _body(ctx, model_name)
        groups.setdefault((body, frozen), []).append((q, head))
    out = {}
    for (body, frozen), items in groups.items():
        sets = sorted({q.set for q, _ in items})
        outputs = {s: [] for s in sets}
        head = next((h for _, h in items if h is not None), None)
        for q, _ in items:
            outputs[q.set].append(q.output)
        res = _run(ctx, body, head, batch, sets, outputs, frozen)
        for q, _ in items:
            out[q.leaf] = _fit(res[(q.output, q.set)], m[q.set]).to(ctx.dtype)
    return out


def _run(ctx, body, head, batch, sets, outputs, frozen):
    """One forward of a network over `sets`: a separate critic, the policy (with a value head
    when one is asked for) or a frozen model."""
    pad = ctx.models.tokenizer.pad_token_id
    if body in ctx.models.critics:
        return run_critic(ctx.models.critics[body], batch.sets, sets, pad, ctx.device, frozen=frozen)
    model = _policy(ctx) if body == "policy" else ctx.models.frozen[body]
    return run_model(model, batch.sets, sets, outputs, pad, ctx.device, frozen=frozen or body != "policy",
                     temperatures=ctx.temperatures, value_head=head, prefix_sharing=ctx.prefix_sharing)


def _snapshot_of(q) -> str:
    """The role whose outputs a query reads: `old` → policy, `old(value)` → value, else its own."""
    if q.role_kind != "old":
        return q.model
    return "policy" if q.model == "old" else q.model[4:-1]


def _sampled(rows: SetRows, mask, device):
    """`logprobs(sampler, S)`: what the rollout recorded as it sampled, [rows, width], 0 outside."""
    if rows.sampler_logprobs is None:  # the plan asked the rollout to keep them (experience.py)
        raise RuntimeError("the rollout kept no sampler log-probs")
    out = torch.zeros(mask.shape, dtype=torch.float32)
    for i, lp in enumerate(rows.sampler_logprobs):
        out[i, :min(len(lp), mask.shape[1])] = torch.tensor(lp[:mask.shape[1]], dtype=torch.float32)
    return out.to(device)


def _fit(t, mask):
    """Trim or pad a per-token output to its set's mask width."""
    if t.dim() >= 2 and t.shape[1] != mask.shape[1]:
        t = t[:, : mask.shape[1]]
    return t


def scoring_temperatures(plan, overrides: dict | None = None) -> dict:
    """The temperature each set's logits are divided by: a rollout's `score_temperature`, else
    its sampling temperature, spec option or command-line override (policy-gradient methods
    score at the distribution they sampled from, as TRL's GRPO and PPO do); greedy rollouts,
    dataset sets and best/worst picks at 1. Per set, so one forward over a dataset set and a
    rollout scores each at its own."""
    out = {}
    for name, r in plan.rollouts.items():
        opts = {**r.options, **(overrides or {})}
        if "score_temperature" in opts:
            out[name] = float(opts["score_temperature"])
        elif not opts.get("greedy"):
            out[name] = float(opts.get("temperature", 1.0))
    return out


def _current(ctx, q, inputs, batch, m):
    """`old` outputs when each experience feeds one optimizer step: the current model's, detached."""
    base = _snapshot_of(q)
    current = f"{q.output}({base}, {q.set})"
    if current in inputs:
        return inputs[current].detach()
    body, head = _body(ctx, base)
    res = _run(ctx, body, head, batch, [q.set], {q.set: [q.output]}, True)
    return _fit(res[(q.output, q.set)], m[q.set]).to(ctx.dtype)


def batch_fields(compiled, batch: Batch, device) -> dict:
    """Per-example data fields and rewards (rewards were scored at rollout time)."""
    out = {}
    token_sets = {i.name: i.set for i in compiled.inputs if i.kind == "field" and i.set}
    rows = _field_rows(compiled)
    for f in compiled.plan.fields:
        vals = [e.fields[f] for e in batch.rows_of(rows[f])]  # a field belongs to its source
        if f in token_sets:  # one value per completion token of its set: [rows, width], padded
            out[f] = _token_field(vals, batch.sets[token_sets[f]], device)
            continue
        if vals and isinstance(vals[0], list):  # a per-response field of a ranked list
            vals = [v for vs in vals for v in vs]
        dtype = torch.bool if isinstance(vals[0], bool) else torch.float32
        out[f] = torch.tensor(vals, dtype=dtype, device=device)
    for i in compiled.inputs:  # `sizes(R)`: each example's number of responses of its ranked list R
        if i.kind == "sizes":
            out[i.name] = torch.tensor(list_sizes(batch.examples, i.name[len("sizes("):-1]), device=device)
        elif i.kind == "episode":  # turns(y), tool_calls(y), turn(y): what each episode did
            out[i.name] = episode_leaf(i.name, batch.sets[i.set], device)
    wanted = {i.name for i in compiled.inputs if i.kind == "reward"}
    for name, values in getattr(batch, "rewards", {}).items():
        if name in wanted:
            out[name] = torch.tensor(values, dtype=torch.float32, device=device)
    return out


@functools.lru_cache(maxsize=16)
def _field_rows(compiled) -> dict[str, str]:
    """Each data field's row space (its source's), read once per compiled method."""
    from ptdsl.ir.graph import leaves
    g = compiled.graph
    return {g.nodes[n]["attrs"]["name"]: g.nodes[n]["attrs"]["rows"] for n in leaves(g)
            if g.nodes[n]["attrs"]["kind"] == "field"}


def _token_field(vals, rows: SetRows, device):
    width = completion_width(rows)
    dtype = torch.bool if isinstance(vals[0][0], bool) else torch.float32
    out = torch.zeros((len(vals), width), dtype=dtype)
    for i, v in enumerate(vals):
        out[i, :len(v)] = torch.tensor(v, dtype=dtype)
    return out.to(device)


def build_batch(compiled, examples, others: dict | None = None) -> Batch:
    """A micro-batch of `examples` (the first source's) and `others` (row space → examples of
    each other source): every dataset set the plan reads, from its own source's examples."""
    batch = Batch(list(examples), sources=dict(others or {}))
    info = compiled.graph.graph["sets"]
    by_rows: dict[str, list[str]] = {}
    for s in compiled.plan.sets:
        if s not in compiled.plan.rollouts:
            by_rows.setdefault(info[s].rows, []).append(s)
    for rows, names in by_rows.items():
        batch.sets.update(dataset_sets(batch.rows_of(rows), names, info))
    return batch


def pick_sets(compiled, batch: Batch) -> None:
    """best(y, r) / worst(y, r): per prompt, the sample of y that r ranks highest (first on
    ties) / lowest (last on ties), so best and worst differ whenever n ≥ 2."""
    sets = compiled.graph.graph["sets"]
    for s in compiled.plan.sets:
        info = sets[s]
        if info.source != "picked":
            continue
        rows, scores = batch.sets[info.base], batch.rewards[f"{info.by}({info.base})"]
        n = len(rows) // len(batch.examples)
        chosen = []
        for g in range(len(batch.examples)):
            group = list(range(g * n, (g + 1) * n))
            if info.pick == "best":
                chosen.append(max(group, key=lambda i: (scores[i], -i)))
            else:
                chosen.append(min(group, key=lambda i: (scores[i], -i)))
        batch.sets[s] = rows.select(chosen)
        for key, values in list(batch.rewards.items()):
            if key.endswith(f"({info.base})"):
                batch.rewards[f"{key.split('(', 1)[0]}({s})"] = [values[i] for i in chosen]
