"""Asynchronous generation (`--async-staleness K`): the experience of the next steps is made
by a worker, on its own copy of the policy's weights, while the trainer trains.

What runs where. The trainer (runtime/loop.py) trains on experience k; meanwhile a worker
thread makes experience k + 1, … — rollouts sampled (policy samples and episodes), rewards
scored, best/worst picked and `old` recorded by a no-grad forward: experience.Experiences.make,
on a snapshot (`Snapshot`: its own copies of the policy, value heads and critics, and its own
tokenizer; frozen models and verifiers are shared, nothing moves them). The two sides exchange
plain data only: the trainer posts (version, the trainable parameters' state dicts), the worker
posts back each experience as a checkpoint saves it (experience.pack: token ids, floats,
recorded tensors, example indices) with the version that sampled it. Nothing else crosses, so
the worker could run in another process or host with the same two messages (docs/scaling.md).
torch releases the GIL inside its ops, so sampling overlaps the trainer's step where ops, not
Python, fill it (benchmarks/async_gen.py).

Versions. Version v is the policy after v optimizer steps. Experience k, first trained at step
s_k = k × (steps per experience), is sampled on version max(start, s_k − K) (start: the step the
run started or resumed at). The worker waits for exactly that version, never a later one, so
which weights sample which experience depends on K and the steps only, not on timing. Its `old`
outputs are recorded on the same weights: the loss's exp(logprobs(policy, y) − logprobs(old, y))
is the exact importance ratio of the current policy to the one that sampled (as TRL's async GRPO
and verl's one-step off-policy trainer correct stale samples, but with `old` from a forward of the
sampling weights, as ptdsl records it when an experience is reused, not from the sampler's
processed log-probs: those stay `logprobs(sampler, y)`). Each step logs `async/staleness`, its
version minus the version that sampled its experience. K = 0 does not use this module.

Randomness. The hf generator draws from torch's global generator; the worker seeds it before
each experience from (seed, process, k), its own stream, so with a fixed seed the samples are
the same in every run (not K = 0's samples, which come from one stream for the whole run). This
needs the trainer to draw nothing from that generator meanwhile: dropout is off in training
(--lora-dropout > 0 is refused with K ≥ 1).

Resume. A checkpoint holds the trained weights, not those of the versions in flight: a resumed
run samples its next experiences on the resumed weights (staleness 0, growing back to K), and
the experiences in flight are dropped; it is not bit for bit an uninterrupted run. An experience
a checkpoint was taken inside (several steps per experience) is saved with its version and
continued."""
from __future__ import annotations

import copy
import queue
import threading
import weakref
from dataclasses import replace

import torch

from ptdsl.runtime import generators
from ptdsl.runtime.draws import seed_of
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.queries import Trunk
from ptdsl.runtime.setup import AdapterDisabled

METRIC = "async/staleness"


def check(staleness, compiled, world: int, fsdp: bool, generator: str, lora_dropout: float) -> None:
    """Refuse, before anything loads, a staleness that is not a whole number ≥ 0 or a run the
    worker cannot serve."""
    if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
        raise RuntimeSetupError(f"--async-staleness must be a whole number ≥ 0, got {staleness!r}",
                                help="0 (the default) generates synchronously; K ≥ 1 lets generation run "
                                     "up to K policy versions ahead of training")
    if staleness == 0:
        return
    problems = []
    if not compiled.plan.rollouts:
        problems.append(f"`{compiled.name}` samples nothing (it has no rollout)")
    if world > 1 or fsdp:
        problems.append(f"this run has {world} processes{' (FSDP2)' if fsdp else ''}; the generation worker "
                        "runs in one process only, for now")
    if generator != "hf":
        problems.append(f"`--generator {generator}` is not supported by the generation worker (it samples with "
                        "transformers' generate on its own copy of the weights)")
    if lora_dropout > 0:
        problems.append(f"--lora-dropout {lora_dropout:g} draws from torch's global generator during training, "
                        "which the worker samples from: the samples would depend on thread timing")
    if problems:
        raise RuntimeSetupError(f"--async-staleness {staleness} cannot run here: " + "; ".join(problems),
                                help="leave out --async-staleness (0: synchronous generation)")


# ---- the weights that cross: state dicts of what training moves ----------------------

def _trainable(models) -> dict[str, torch.nn.Module]:
    return {"policy": models.policy, **{f"head {k}": m for k, m in models.heads.items()},
            **{f"critic {k}": m for k, m in models.critics.items()}}


def trainable_state(models) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of the parameters the optimizer moves (policy, value heads, critics), by module
    and name: the message that brings the worker to a version."""
    return {name: {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
            for name, m in _trainable(models).items()}


class Snapshot:
    """The worker's models: its own copies of the trainable ones, loaded with each version's
    state; the frozen ones shared (a LoRA policy's adapter-disabled base is rebuilt on the copy:
    running it toggles the adapters, which must not happen to the trainer's policy)."""

    def __init__(self, models):
        self.own = {name: _private(m) for name, m in _trainable(models).items()}
        policy = self.own["policy"]
        frozen = {k: AdapterDisabled(policy) if isinstance(m, AdapterDisabled) else m for k, m in models.frozen.items()}
        self.models = replace(models, policy=policy, trunk=Trunk(policy), frozen=frozen,
                              heads={k: self.own[f"head {k}"] for k in models.heads},
                              critics={k: self.own[f"critic {k}"] for k in models.critics},
                              tokenizer=copy.deepcopy(models.tokenizer))

    def load(self, state: dict) -> None:
        with torch.no_grad():
            for name, tensors in state.items():
                params = dict(self.own[name].named_parameters())
                for n, t in tensors.items():
                    params[n].copy_(t)


def _private(module: torch.nn.Module) -> torch.nn.Module:
    own = copy.deepcopy(module)
    own.requires_grad_(False)
    return own.eval()


# ---- the trainer's side ---------------------------------------------------------------

class Pipeline:
    """experience.Experiences' interface to the loop (minibatch, drain_means, state, restore,
    reuse), with each experience made ahead by the worker. `experiences` is the trainer's own
    (it rebuilds the batches from the worker's plain data); `total` the run's steps."""

    def __init__(self, experiences, staleness: int, total: int, log=print):
        self.base, self.reuse, self.staleness, self.total = experiences, experiences.reuse, staleness, total
        self.worker: _Worker | None = None
        self.current = None          # the experience in training (experience.Experience)
        self.sampled_by = 0          # the version that sampled it
        self.version = 0             # the trainer's: optimizer steps taken
        self.step = 0
        self.means: dict[str, float] = {}
        if not any(q.role_kind == "old" for q in experiences.compiled.plan.queries):
            log(f"note: `{experiences.compiled.name}` reads no `old` outputs: its samples, up to {staleness} "
                f"policy versions old, train without an importance correction")

    def version_of(self, k: int) -> int:
        """The version experience k is sampled on."""
        return max(self.start, k * self.reuse.steps - self.staleness)

    def minibatch(self, step: int):
        if self.worker is None:
            self._start(step)
        elif step != self.version:
            self.sync(self.base.models)
        self.step, k = step, self.reuse.experience(step)
        if self.current is None or self.current.index != k:
            msg = self.worker.take(k)
            self.current = self.base.unpack(msg["experience"])
            self.sampled_by, self.means = msg["version"], msg["means"]
            for batch in (b for mb in self.current.minibatches for b in mb):
                batch.version = self.sampled_by
        return self.current.minibatches[self.reuse.minibatch(step)]

    def sync(self, models) -> int:
        """The Generator hook (runtime/generators.py): the policy moved one optimizer step; post
        its weights to the worker when an experience is to be sampled on this version."""
        self.version += 1
        if self._needed(self.version):
            self.worker.post(self.version, trainable_state(models))
        return self.version

    def _needed(self, v: int) -> bool:
        near = (v + self.staleness) // self.reuse.steps
        candidates = {self.first, near - 1, near, near + 1}  # the experiences that can map to v
        return any(self.first <= k < self.last and self.version_of(k) == v for k in candidates)

    def _start(self, step: int) -> None:
        """The worker, from the experience after the one restored (if any), on the weights of now."""
        base, k = self.base, self.reuse.experience(step)
        self.start = self.version = step
        self.first = k + 1 if self.current is not None and self.current.index == k else k
        self.last = -(-self.total // self.reuse.steps)  # experiences the run trains on
        snapshot = Snapshot(base.models)
        gen = generators.HFGenerator(snapshot.models.policy, snapshot.models.tokenizer, base.acc.device,
                                     prefix_sharing=base.opts.prefix_sharing)
        rewards = copy.copy(base.rewards)  # the same verifiers, its own running means (the trainer's evaluation
        if rewards is not None:            # drains the trainer's, concurrently)
            rewards.scored = {}
        maker = base.on(snapshot.models, replace(base.ctx, models=snapshot.models), gen, rewards)
        self.worker = _Worker(maker, snapshot, [(j, self.version_of(j)) for j in range(self.first, self.last)],
                              seed_of(base.opts.seed, "async generation", base.acc.process_index))
        weakref.finalize(self, self.worker.stop)  # a run that raised stops its worker when it is collected
        if self._needed(step):
            self.worker.post(step, trainable_state(base.models))
        self.worker.thread.start()

    def drain_means(self) -> dict[str, float]:
        """The experience's reward and episode means (at its first step), and this step's staleness."""
        out, self.means = {**self.means, METRIC: float(self.step - self.sampled_by)}, {}
        return out

    def state(self) -> dict | None:
        if self.current is None:
            return None
        return {**self.base.pack(self.current), "version": self.sampled_by}

    def restore(self, state: dict, step: int) -> None:
        self.base.restore(state, step)
        self.current, self.sampled_by = self.base.current, int(state.get("version", step))
        for batch in (b for mb in self.current.minibatches for b in mb):
            batch.version = self.sampled_by

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker.thread.join(timeout=60)


# ---- the worker's side ------------------------------------------------------------------

class _Worker:
    """Makes experiences [(k, version), …] in order, each once its version's weights are posted."""

    def __init__(self, maker, snapshot: Snapshot, plan: list[tuple[int, int]], seed: int):
        self.maker, self.snapshot, self.plan, self.seed = maker, snapshot, plan, seed
        self.posted: dict[int, dict] = {}
        self.cond = threading.Condition()
        self.stopped = False
        self.done: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="ptdsl-async-generation", daemon=True)

    def post(self, version: int, state: dict) -> None:
        with self.cond:
            self.posted[version] = state
            self.cond.notify_all()

    def take(self, k: int) -> dict:
        """Experience k's message (waiting for it); the worker's error, raised here."""
        while True:
            try:
                msg = self.done.get(timeout=1.0)
            except queue.Empty:
                if not self.thread.is_alive():
                    raise RuntimeError(f"the generation worker stopped before experience {k}") from None
                continue
            if isinstance(msg, BaseException):
                raise msg
            if msg["index"] != k:
                raise RuntimeError(f"the generation worker made experience {msg['index']}, expected {k}")
            return msg

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def _run(self) -> None:
        try:
            for k, version in self.plan:
                state = self._wait(version)
                if state is None:
                    return
                self.snapshot.load(state)
                self.maker.generator.version = version
                self.done.put(self._make(k, version))
        except BaseException as exc:  # noqa: BLE001 — handed to the trainer, which raises it
            self.done.put(exc)

    def _wait(self, version: int) -> dict | None:
        with self.cond:
            self.cond.wait_for(lambda: self.stopped or version in self.posted)
            if self.stopped:
                return None
            for v in [v for v in self.posted if v < version]:  # never needed again (the next experiences'
                del self.posted[v]                             # may still be sampled on this one)
            return self.posted[version]

    def _make(self, k: int, version: int) -> dict:
        torch.manual_seed(seed_of(self.seed, k))  # this experience's own stream (module docstring)
        exp = self.maker.make(k)
        means = self.maker.rewards.drain_means() if self.maker.rewards is not None else {}
        means.update(self.maker.drain_means())
        return {"index": k, "version": version, "experience": self.maker.pack(exp), "means": means}
