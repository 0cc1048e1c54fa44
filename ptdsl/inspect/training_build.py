"""The training graph read off a compiled method: its plan (ptdsl/plan.py), the optimised
graph and the bound params. One function per stage (STAGES, in the order the trainer runs
them): a new part of the training graph (several data sources, a separate learner) is a
function there or a line in one, never a branch in the renderers. Nothing here imports
the runtime: the stages say what the plan tells the one training loop to do.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ptdsl.inspect.training import Line, Model, Run, Stage, TrainingGraph
from ptdsl.ir.consteval import Schedule as Scheduled
from ptdsl.ir.graph import leaves
from ptdsl.ir.ops import STATEFUL
from ptdsl.plan import Plan
from ptdsl.sharing import describe as describe_sharing

PER_MICRO = "per micro-batch"


@dataclass(frozen=True)
class _Facts:
    """What the stage functions read: the plan, the optimised graph and the bound params."""
    plan: Plan
    graph: nx.DiGraph
    params: dict
    reused: str | None   # Schedule.when_reused(): "" always, "when --grad-accum < K", None never

    @property
    def roles(self) -> dict:
        return self.graph.graph["roles"]

    @property
    def sets(self) -> dict:
        return self.graph.graph["sets"]

    def network(self, model: str) -> str:
        """The network a role's outputs come from: `old` and `old(value)` are the policy (and its
        heads) as the experience was made; a value head runs on its model's body."""
        if model.startswith("old"):
            model = model[4:-1] if model.startswith("old(") else "policy"
        role = self.roles.get(model)
        return self.network(role.of) if role is not None and role.kind == "value_head" else model


def build_training(compiled) -> TrainingGraph:
    """The training graph of a compiled method (ptdsl.compile's CompiledMethod)."""
    plan = compiled.plan
    f = _Facts(plan, compiled.graph, compiled.params, plan.schedule.when_reused())
    stages = tuple(s for s in (fn(f) for fn in STAGES) if s is not None)
    return TrainingGraph(compiled.name, _models(f, stages), stages, _steps_text(plan.schedule))


# ---- models ---------------------------------------------------------------------------

def _models(f: _Facts, stages) -> tuple[Model, ...]:
    """Every network some stage runs, with the value heads on the trained ones, in role order."""
    used = {r.model for s in stages for r in s.runs}
    for name in list(used):  # a mixture samples from its two parts
        role = f.roles.get(name)
        if role is not None and role.kind == "mixture":
            used |= {role.of, dict(role.options)["with"]}
    heads = {q.model for q in f.plan.queries if q.role_kind == "value_head"}
    out = []
    for name, role in f.roles.items():
        if name in used:
            opts = ", ".join(f"{k} = {_value(v)}" for k, v in role.options) if role.kind == "frozen_copy" else ""
            source = f"{role.source[:-1]}, {opts})" if opts else role.source
            on = tuple(f"{h} = {f.roles[h].source}" for h in f.roles if h in heads and f.network(h) == name)
            out.append(Model(name, source, role.trainable, on))
    return tuple(out)


# ---- stages, in the order the trainer runs them ----------------------------------------

def _precompute(f: _Facts) -> Stage | None:
    qs = [q for q in f.plan.queries if q.precomputable]
    if not qs:
        return None
    lines, runs = _forward_lines(f, qs, "once, cached; --no-precompute: per micro-batch")
    return Stage("precompute", "setup", lines, runs)


def _sources(f: _Facts) -> Stage:
    plan, sets = f.plan, f.sets
    data = [s for s in plan.sets if sets[s].source == "data"]
    text = plan.data + (f": {', '.join(data)}" if data else "")
    lines = [Line(text, f"per experience: {_count(_minibatches_text(plan.schedule), 'global batch', 'es')}")]
    derived = [s for s in plan.sets if sets[s].source == "derived"]
    if derived:
        lines.append(Line(f"{', '.join(derived)}: formed within each micro-batch", PER_MICRO))
    if plan.fields:
        lines.append(Line(f"fields {', '.join(plan.fields)}"))
    return Stage("sources", "experience", tuple(lines))


def _sample(f: _Facts) -> Stage | None:
    if not f.plan.rollouts:
        return None
    recorded = {q.set: q.leaf for q in f.plan.queries if q.role_kind == "sampler"}
    lines, runs = [], []
    for name, r in f.plan.rollouts.items():
        opts = ", ".join(f"{k} = {_value(v)}" for k, v in r.options.items())
        env = f'environment("{r.env}"), ' if r.env else ""
        text = f"{name} = {r.kind}({r.model}, {env}{opts})" + (f" → {recorded[name]}" if name in recorded else "")
        if r.options.get("once"):
            when = "once per prompt, then reused"
        elif "on_policy" in r.options:
            when = f"per micro-batch with probability {_value(r.options['on_policy'])}, else the dataset's completions"
        else:
            when = "per experience"
        lines.append(Line(text, when))
        runs.append(Run(f.network(r.model), (name,), (name,), False))
    return Stage("sample", "experience", tuple(lines), tuple(runs))


def _score(f: _Facts) -> Stage | None:
    scored = {(a["reward"], a["set"]) for _, a in _leaves(f.graph) if a["kind"] == "reward"}
    scored |= {(info.by, info.base) for s, info in f.sets.items() if s in f.plan.sets and info.source == "picked"}
    lines = []
    for name, terms in f.plan.rewards.items():
        on = [s for s in f.plan.sets if (name, s) in scored and f.sets[s].source == "rollout"]
        sum_text = " + ".join(f"{t.kind}(\"{t.name}\")" if t.weight == 1 and len(terms) == 1
                              else f"{t.weight:g} * {t.kind}(\"{t.name}\")" for t in terms)
        lines += [Line(f"{name}({s}) = {sum_text}", "per experience") for s in on]
    return Stage("score", "experience", tuple(lines)) if lines else None


def _pick(f: _Facts) -> Stage | None:
    picked = [(s, f.sets[s]) for s in f.plan.sets if f.sets[s].source == "picked"]
    lines = [Line(f"{s}: the {info.pick} of {info.base}'s samples of a prompt by {info.by}", "per experience")
             for s, info in picked]
    return Stage("pick", "experience", tuple(lines)) if lines else None


def _record(f: _Facts) -> Stage | None:
    once = [q for q in f.plan.queries if q.per_experience]
    if not once:
        return None
    if f.reused is None:
        old = [q.leaf for q in once if q.role_kind == "old"]
        if not old:
            return None
        return Stage("record", "experience", (Line(
            f"nothing: one optimizer step per experience, so {', '.join(old)} = the current policy's, detached"),))
    when = "per experience, before its first update" + (f", {f.reused}" if f.reused else "")
    lines, runs = _forward_lines(f, once, when)
    return Stage("record", "experience", lines, runs)


def _reuse(f: _Facts) -> Stage:
    s = f.plan.schedule
    return Stage("reuse", "step", (Line(s.describe() + ("" if s.stated else " (no `update` line)")),))


def _forward(f: _Facts) -> Stage | None:
    live = [q for q in f.plan.queries if q.role_kind not in ("old", "sampler") and not q.precomputable
            and not (q.per_experience and f.reused is not None)]
    if not live:
        return None
    lines, runs = _forward_lines(f, live, PER_MICRO)
    return Stage("forward", "step", lines, runs)


def _time(f: _Facts) -> Stage | None:
    """The training time the loss reads, and the scheduled params that read it."""
    loss_side = _loss_side(f.graph)
    lines = [Line(f"{a['name']}" + ("" if n in loss_side else " (metrics only)"), "per optimizer step")
             for n, a in _leaves(f.graph) if a["kind"] == "time"]
    lines += [Line(f"param {name} = {v.text}", "per optimizer step")
              for name, v in f.params.items() if isinstance(v, Scheduled)]
    return Stage("time", "step", tuple(lines)) if lines else None


def _draws(f: _Facts) -> Stage | None:
    loss_side = _loss_side(f.graph)
    lines = [Line(f"{a['name']} at {f.graph.nodes[n]['level']}" + ("" if n in loss_side else " (metrics only)"),
                  f"{PER_MICRO}, keyed by (seed, step, site, row)")
             for n, a in _leaves(f.graph) if a["kind"] == "uniform"]
    return Stage("draws", "step", tuple(lines)) if lines else None


def _state(f: _Facts) -> Stage | None:
    """Running statistics the loss keeps across steps (in `state`, saved in checkpoints)."""
    lines = []
    for n in nx.topological_sort(f.graph):
        d = f.graph.nodes[n]
        if d["op"] in STATEFUL:
            opts = ", ".join(f"{k} = {_value(v)}" for k, v in d["attrs"].items() if k != "key")
            what = f"{d['op']}({opts})" if opts else d["op"]
            lines.append(Line(f"{d.get('name') or d['attrs']['key']} = {what}",
                              f"{PER_MICRO}, in checkpoints"))
    return Stage("state", "step", tuple(lines)) if lines else None


def _optimize(f: _Facts) -> Stage:
    """One optimizer step over the trained networks (the policy, with its value heads), and a
    line per separate critic: its own parameter group, learning rate and warm-up."""
    learners = ["policy"] + [q.model for q in f.plan.queries if q.role_kind == "value_head" and not q.frozen]
    lines = [Line(f"AdamW on {', '.join(dict.fromkeys(learners))} (gradient summed over --grad-accum "
                  "micro-batches, clipped)", "per optimizer step")]
    lines += [Line(f"learner {learner.describe()}", "per optimizer step") for learner in f.plan.learners]
    return Stage("optimize", "step", tuple(lines))


def _sync(f: _Facts) -> Stage | None:
    """Moving references (TR-DPO): θ_ref ← mixup·θ + (1 − mixup)·θ_ref every `sync_steps`."""
    lines = []
    for name in f.plan.forwards:
        opts = dict(f.roles[name].options)
        if f.roles[name].kind == "frozen_copy" and opts.get("sync_steps"):
            a = float(opts.get("mixup", 1.0))
            lines.append(Line(f"{name} ← {a:g}·{f.roles[name].of} + {1 - a:g}·{name}",
                              f"every {opts['sync_steps']} optimizer steps"))
    return Stage("sync", "step", tuple(lines)) if lines else None


STAGES = (_precompute, _sources, _sample, _score, _pick, _record, _reuse, _forward, _time, _draws, _state,
          _optimize, _sync)


# ---- helpers --------------------------------------------------------------------------

def _forward_lines(f: _Facts, queries, when: str) -> tuple[tuple[Line, ...], tuple[Run, ...]]:
    """One line and one Run per network and gradient setting, as the runtime batches them, each
    followed by whether that forward encodes a shared prompt once (ptdsl/sharing.py)."""
    groups: dict[tuple[str, bool], list] = {}
    for q in queries:
        groups.setdefault((f.network(q.model), not q.frozen), []).append(q)
    lines, runs = [], []
    for (net, grad), qs in groups.items():
        sets = tuple(dict.fromkeys(q.set for q in qs))
        outputs = tuple(q.leaf for q in qs)
        lines.append(Line(f"{net} on {', '.join(sets)} → {', '.join(outputs)}",
                          f"{when}, with gradient" if grad else when))
        lines.append(_sharing_line(f, net, sets))
        runs.append(Run(net, sets, outputs, grad))
    return tuple(lines), tuple(runs)


def _sharing_line(f: _Facts, net: str, sets) -> Line:
    text, applies = describe_sharing(net, f.graph, sets, net in f.roles and f.roles[net].kind == "critic")
    return Line(text, "--no-prefix-sharing: off" if applies else "")


def _leaves(g):
    return [(n, g.nodes[n]["attrs"]) for n in leaves(g)]


def _loss_side(g) -> set:
    loss = g.graph.get("loss")
    return ({loss} | nx.ancestors(g, loss)) if loss is not None else set()


def _minibatches_text(s) -> str:
    if s.minibatches is not None:
        return str(s.minibatches)
    return f"{s.micro_batches} ÷ --grad-accum" if s.micro_batches else "1"


def _steps_text(s) -> str:
    if s.minibatches is not None:
        return str(s.passes * s.minibatches)
    return str(s.passes) if not s.micro_batches else f"{s.passes} × {s.micro_batches} ÷ --grad-accum"


def _count(n: str, noun: str, plural: str = "s") -> str:
    return f"{n} {noun}" + ("" if n == "1" else plural)


def _value(v) -> str:
    """A value as a spec writes it (`true`, not Python's `True`)."""
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)
