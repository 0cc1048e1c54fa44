"""Experience: the batches optimizer steps train on, made once and reused as the
spec's `update` line says (plan.Schedule).

An experience is `minibatches` global batches of examples, the same on every
process: a slice of a seeded permutation of the dataset, one permutation per
epoch, so which examples experience k holds depends only on the seed and k. It is
made once — every micro-batch built, its rollouts sampled, rewards scored and
best/worst picked — and, when it feeds more than one optimizer step, each
micro-batch's `old` outputs (and a fixed model's, plan.Query.per_experience) are
recorded by a no-grad forward before the first update. Then each of the `passes`
takes the mini-batches in the same order, one optimizer step each (as TRL's GRPO
reuses its buffered generation batch): step s trains on experience s // (P·M),
mini-batch s % M. With one pass and one mini-batch nothing is recorded: `old` is
the current policy, detached (runtime/step.py) — except with asynchronous generation
(runtime/async_gen.py), where a worker makes each experience ahead on its own copy of the
weights and always records `old` on them (`on`).

An experience in progress is saved with each checkpoint (one file per process,
plain tensors, lists and strings, loadable with `torch.load(weights_only=True)`) and
rebuilt from it on resume, so a run resumed mid-experience trains bit for bit as an
uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ptdsl.runtime import episode_rollout, generators, rollout, sharding
from ptdsl.runtime.sources import stream
from ptdsl.runtime.batch import Batch, SetRows
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.step import build_batch, pick_sets, record

FORMAT = 1  # version of the saved experience's layout


@dataclass(frozen=True)
class Reuse:
    """The spec's schedule resolved for this run's batch sizes."""

    passes: int
    minibatches: int
    grad_accum: int
    per_step: int       # examples per optimizer step, all processes
    per_epoch: int      # experiences per pass over the dataset

    @property
    def steps(self) -> int:
        """Optimizer steps each experience feeds."""
        return self.passes * self.minibatches

    @property
    def size(self) -> int:
        """Examples per experience, all processes."""
        return self.per_step * self.minibatches

    def experience(self, step: int) -> int:
        return step // self.steps

    def minibatch(self, step: int) -> int:
        return step % self.steps % self.minibatches

    def epoch(self, step: int) -> int:
        return self.experience(step) // self.per_epoch

    def default_total(self) -> int:
        """One epoch: every experience of it, each used for all its steps."""
        return self.per_epoch * self.steps


def resolve(schedule, n_examples: int, batch_size: int, grad_accum: int, world: int) -> Reuse:
    """Reuse for this run, or a RuntimeSetupError naming the numbers (before step 1)."""
    m = schedule.minibatches_for(grad_accum)
    if m is None:
        raise RuntimeSetupError(
            f"`update … micro_batches = {schedule.micro_batches}` (TRL's steps_per_generation) is not a whole number "
            f"of optimizer steps: each step takes --grad-accum {grad_accum} micro-batches",
            help=f"make micro_batches a multiple of {grad_accum} (0 means --grad-accum), or choose a --grad-accum "
                 f"that divides {schedule.micro_batches}")
    per_step = batch_size * grad_accum * world
    if n_examples < per_step * m:
        what = f"{batch_size} × {grad_accum} accumulation × {world} processes"
        raise RuntimeSetupError(
            f"the dataset has {n_examples} usable rows, fewer than one global batch ({what})" if m == 1 else
            f"the dataset has {n_examples} usable rows, fewer than one batch of experience ({what} × {m} "
            f"mini-batches = {per_step * m})")
    return Reuse(schedule.passes, m, grad_accum, per_step, n_examples // (per_step * m))


def indices(n: int, k: int, size: int, seed: int) -> list[int]:
    """The dataset rows of experience k: a slice of a seeded permutation, one per epoch (the
    last incomplete experience of an epoch is dropped), so resuming needs only k."""
    per_epoch = n // size
    epoch, i = divmod(k, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return perm[i * size:(i + 1) * size]


def split(ids: list[int], reuse: Reuse, process: int, world: int) -> list[list[list[int]]]:
    """[mini-batch][micro-batch] → this process's rows of an experience: mini-batch j is the
    j-th global batch of `ids`, of which each process takes every world-th row, split into
    --grad-accum micro-batches (with one mini-batch, exactly the step's global batch)."""
    out = []
    for j in range(reuse.minibatches):
        mine = ids[j * reuse.per_step:(j + 1) * reuse.per_step][process::world]
        out.append([mine[i::reuse.grad_accum] for i in range(reuse.grad_accum)])
    return out


@dataclass
class Experience:
    index: int
    minibatches: list[list[Batch]]   # this process's micro-batches of each mini-batch


class Experiences:
    """Makes each experience when its first step comes, and hands out its mini-batches.
    `examples` is the first data source's list, or row space → examples of every source (the
    first first); `shares` the other sources' rows per micro-batch (runtime/sources.py)."""

    def __init__(self, compiled, examples, reuse: Reuse, opts, acc, models, rewards, ctx, shares=(), envs=None,
                 generator=None):
        sources = examples if isinstance(examples, dict) else {"examples": examples}
        self.examples = next(iter(sources.values()))
        self.sources, self.shares = sources, shares
        self.compiled, self.reuse, self.opts = compiled, reuse, opts
        self.acc, self.models, self.rewards, self.ctx = acc, models, rewards, ctx
        self.by_index = {e.index: e for rows in sources.values() for e in rows}
        self.once_cache: dict = {}   # (rollout, example) → samples of a `once` rollout
        self.current: Experience | None = None
        self.sampled = {q.set for q in compiled.plan.queries if q.role_kind == "sampler"}
        self.envs = envs or {}          # environment name → factory (episode_rollout.bind)
        self.generator = generator      # the policy's sampler (runtime/generators.py); None: transformers'
        self.synced = 0                 # the step the generator's weights are from
        self.episode_stats: dict[str, list[float]] = {}  # since the last drain_means()
        self.record_always = False      # record `old` even for one step per experience (on(): sampled ahead)

    def on(self, models, ctx, generator, rewards) -> "Experiences":
        """This run's experiences made on other models (asynchronous generation's snapshot,
        runtime/async_gen.py), `old` always recorded as each is made: the steps that train on it
        run on later weights."""
        other = Experiences(self.compiled, self.sources, self.reuse, self.opts, self.acc, models, rewards, ctx,
                            self.shares, self.envs, generator)
        other.record_always = True
        return other

    def minibatch(self, step: int) -> list[Batch]:
        """The micro-batches optimizer step `step` trains on."""
        k = self.reuse.experience(step)
        if self.current is None or self.current.index != k:
            with sharding.gathered(self.models.trainable() if self.models else ()):  # FSDP2: generate on whole weights
                if self.generator is not None and step != self.synced:  # the policy moved: push its weights
                    self.generator.sync(self.models.policy)
                    self.synced = step
                self.current = self.make(k)
        return self.current.minibatches[self.reuse.minibatch(step)]

    def make(self, k: int) -> Experience:
        r, acc = self.reuse, self.acc
        rows = split(indices(len(self.examples), k, r.size, self.opts.seed), r, acc.process_index, acc.num_processes)
        others = self._other_sources(k)
        minibatches = [[self._micro_batch([self.examples[x] for x in micro], k, j * r.grad_accum + i,
                                          {name: parts[j][i] for name, parts in others.items()})
                        for i, micro in enumerate(mb)] for j, mb in enumerate(rows)]
        if r.steps > 1 or self.record_always:  # the behaviour policy's outputs, before the experience's first update
            for batch in (b for mb in minibatches for b in mb):
                with acc.autocast():
                    batch.recorded = record(self.ctx, batch)
        return Experience(k, minibatches)

    def _other_sources(self, k: int) -> dict[str, list]:
        """Row space → [mini-batch][micro-batch] → this process's examples of each source after the
        first, in experience k: the next rows of the source's endless seeded sequence, split as the
        first source's are (runtime/sources.py)."""
        r, acc, out = self.reuse, self.acc, {}
        for share in self.shares:
            per_step = share.batch * r.grad_accum * acc.num_processes
            ids = stream(share.n, k, per_step * r.minibatches, self.opts.seed, share.rows)
            parts = split(ids, replace(r, per_step=per_step), acc.process_index, acc.num_processes)
            examples = self.sources[share.rows]
            out[share.rows] = [[[examples[x] for x in micro] for micro in mb] for mb in parts]
        return out

    def _micro_batch(self, examples, k: int, micro: int, others: dict | None = None) -> Batch:
        compiled, opts, models = self.compiled, self.opts, self.models
        batch = build_batch(compiled, examples, others)
        for name, spec in compiled.plan.rollouts.items():
            if not rollout.samples_now(spec, opts.seed, k, micro):  # `on_policy = λ`: the dataset's turn
                batch.sets[name] = rollout.from_dataset(batch.examples, compiled.plan.data, models.tokenizer)
                continue
            sampler = _sampler(compiled, models, spec.model)
            keep = name in self.sampled
            if spec.kind == "episode":
                rows = episode_rollout.play(self._generator(spec, sampler), models.tokenizer, batch.examples, spec,
                                            self.envs[spec.env], opts.rollout, keep,
                                            episode_rollout.stop_ids(sampler, models.tokenizer))
                for k, v in episode_rollout.means(rows).items():
                    self.episode_stats.setdefault(k, []).extend(v)
                batch.sets[name] = rows
                continue
            if spec.model == "policy" and self.generator is not None and not spec.options.get("once"):
                batch.sets[name] = generators.sample_rows(self.generator, models.tokenizer, batch.examples, spec,
                                                          opts.rollout, keep)
                continue
            if spec.options.get("once"):  # a frozen model's samples: drawn once per prompt, then reused
                batch.sets[name] = rollout.sample_once(self.once_cache, sampler, models.tokenizer, batch.examples,
                                                       spec, self.acc.device, opts.rollout, opts.seed, keep)
                continue
            batch.sets[name] = rollout.sample(sampler, models.tokenizer, batch.examples, spec, self.acc.device,
                                              opts.rollout, keep)
        score(compiled, batch, self.rewards)
        pick_sets(compiled, batch)
        return batch

    def _generator(self, spec, sampler):
        """The policy's generator, or transformers' on another sampler (a frozen model, a mixture)."""
        if spec.model == "policy" and self.generator is not None:
            return self.generator
        return generators.HFGenerator(sampler, self.models.tokenizer, self.acc.device, self.opts.prefix_sharing)

    def drain_means(self) -> dict[str, float]:
        """Each episode number's mean over the episodes played since the last call
        (`episode/turns`, `episode/tool_calls`, `episode/tool_errors`), logged with the step that played them."""
        means = {k: sum(v) / len(v) for k, v in self.episode_stats.items() if v}
        self.episode_stats = {}
        return means

    # ---- checkpoints --------------------------------------------------------------

    def state(self) -> dict | None:
        """The experience in progress, as plain data (None before the first)."""
        return None if self.current is None else self.pack(self.current)

    def pack(self, experience: Experience) -> dict:
        """An experience as plain data: tensors, lists, strings (what a checkpoint saves and the
        asynchronous generation worker sends)."""
        made = {s for s, info in self.compiled.graph.graph["sets"].items() if info.source in ("rollout", "picked")}
        return {"format": FORMAT, "index": experience.index,
                "minibatches": [[_batch_state(b, made) for b in mb] for mb in experience.minibatches]}

    def unpack(self, state: dict) -> Experience:
        """The experience `pack` made `state` of, its batches rebuilt on this run's examples."""
        return Experience(state["index"], [[self._restored(b) for b in mb] for mb in state["minibatches"]])

    def restore(self, state: dict, step: int) -> None:
        """Continue the experience `state` holds at `step` (a checkpoint taken inside it)."""
        k = self.reuse.experience(step)
        if state.get("format") != FORMAT or state.get("index") != k:
            raise RuntimeSetupError(f"the checkpoint's saved experience is not experience {k} of this run "
                                    f"(it holds {state.get('index')!r})",
                                    help="resume with the settings the run was started with")
        self.current = self.unpack(state)

    def _restored(self, saved: dict) -> Batch:
        others = {rows: [self.by_index[i] for i in ids] for rows, ids in saved.get("sources", {}).items()}
        batch = build_batch(self.compiled, [self.by_index[i] for i in saved["examples"]], others)
        for name, rows in saved["sets"].items():
            batch.sets[name] = SetRows(**rows)
        batch.rewards = {k: list(v) for k, v in saved["rewards"].items()}
        batch.recorded = {k: v.to(self.acc.device) for k, v in saved["recorded"].items()}
        return batch


def _batch_state(batch: Batch, made: set) -> dict:
    sets = {name: {"prompt_ids": rows.prompt_ids, "completion_ids": rows.completion_ids,
                   "truncated": rows.truncated, "texts": rows.texts, "token_mask": rows.token_mask,
                   "sampler_logprobs": rows.sampler_logprobs, "episodes": rows.episodes}
            for name, rows in batch.sets.items() if name in made}
    return {"examples": [e.index for e in batch.examples], "sets": sets, "rewards": dict(batch.rewards),
            "sources": {rows: [e.index for e in ex] for rows, ex in batch.sources.items()},
            "recorded": {k: v.detach().cpu() for k, v in batch.recorded.items()}}


# ---- making one micro-batch ------------------------------------------------------------

def _sampler(compiled, models, name):
    """What a rollout samples from: a language model, or a geometric mixture of two."""
    role = compiled.graph.graph["roles"].get(name)
    if role is not None and role.kind == "mixture":
        opts = dict(role.options)
        return rollout.GeometricMixture(_sampler(compiled, models, role.of), _sampler(compiled, models, opts["with"]),
                                        opts["coef"])
    return models.policy if name == "policy" else models.frozen[name]


def score(compiled, batch, rewards):
    """Every reward the step reads, on rollout sets (those of picked sets are selected later)."""
    sets = compiled.graph.graph["sets"]
    needed = {(i.name.split("(", 1)[0], i.set) for i in compiled.inputs if i.kind == "reward"}
    needed |= {(sets[s].by, sets[s].base) for s in compiled.plan.sets if sets[s].source == "picked"}
    for reward, s in sorted(needed):
        if sets[s].source == "rollout":
            batch.rewards[f"{reward}({s})"] = score_set(batch, s, reward, rewards)


def score_set(batch, s: str, reward: str, rewards) -> list[float]:
    """Reward `reward` of each row of rollout set `s`: its completion with its prompt and columns."""
    n = len(batch.sets[s]) // len(batch.examples)  # samples per prompt, as drawn (an eval draws one)
    prompts = [e.prompt_text for e in batch.examples for _ in range(n)]
    keys = dict.fromkeys(k for e in batch.examples for k in e.columns)  # rows may differ in their columns
    columns = {k: [e.columns.get(k) for e in batch.examples for _ in range(n)] for k in keys}
    columns["completion_ids"] = [list(ids) for ids in batch.sets[s].completion_ids]  # as TRL passes them
    chats = [e.prompt_messages for e in batch.examples for _ in range(n)]
    rows = [e.where or f"example {e.index + 1}" for e in batch.examples for _ in range(n)]
    episodes = batch.sets[s].episodes
    if episodes is not None:  # as TRL passes an episode: the conversation's messages, then the environment's reward
        chats = [m if m is not None else [{"role": "user", "content": p}] for m, p in zip(chats, prompts)]
        return rewards.evaluate(reward, prompts, batch.sets[s].texts, columns, chats, rows,
                                completion_chats=[ep["messages"] for ep in episodes],
                                env_rewards=[ep["reward"] for ep in episodes])
    return rewards.evaluate(reward, prompts, batch.sets[s].texts, columns, chats, rows)
