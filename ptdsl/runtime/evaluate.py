"""Evaluation on held-out rows (--eval-data, else a DatasetDict's `test` split): the compiled
method's loss and metrics without gradients, every --eval-steps optimizer steps and once at
the end, written as their own metrics.jsonl rows `{"step": N, "eval/loss": …, "eval/<metric>": …}`
and given to the reporters.

The held-out rows are one batch, split into micro-batches of --batch-size per process as a
training step's is: its rows and tokens are counted over all of them first and given to the
compiled loss as its normalisers, so the micro-batch losses sum to the loss of the whole eval
set whatever the batch size. The models are in eval mode meanwhile (restored after), running
statistics are read and never updated, and nothing is differentiated: evaluation moves no
weight and no optimizer state. Frozen queries run live (the precompute cache holds the
training rows only).

A method with rollouts is evaluated on greedy completions, one per prompt: `eval/reward/NAME`
is each reward's mean over them, `eval/reward` the mean of those. Its loss needs the samples
as training draws them, so it is reported only where each sampling rollout draws one per
prompt (n = 1); a group method's (GRPO's n = 8) is not. A rollout that mixes in the dataset's
completions (`on_policy = λ`) holds the held-out completions.
"""
from __future__ import annotations

import contextlib
import dataclasses

import torch

from ptdsl.ir.declare import Rollout
from ptdsl.passes.batching import split_analysis
from ptdsl.runtime import episode_rollout, experience, generators, metrics_log, reporters, rollout, samples_log
from ptdsl.runtime import sharding
from ptdsl.runtime.batch import Batch
from ptdsl.runtime.datafiles import test_split
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.experience import _sampler  # what a rollout samples from, as training resolves it
from ptdsl.runtime.sources import load_sources, shares as source_shares
from ptdsl.runtime.step import build_batch, loss_inputs, pick_sets, scoring_temperatures

GREEDY = {"greedy": True, "n": 1}


def held_out(data, eval_data, log):
    """What to evaluate on: --eval-data, else the `test` split of a DatasetDict given as the data
    (an object or a saved directory; said in the log), else None."""
    if eval_data is not None:
        return eval_data
    one = data[0] if isinstance(data, (list, tuple)) and len(data) == 1 else data
    split = test_split(one)
    if split is not None:
        log(f"evaluating on the DatasetDict's `test` split ({len(split)} rows); --eval-data chooses other rows")
    return split


def check(opts, has_data: bool) -> None:
    """--eval-steps and --log-samples: whole numbers ≥ 0 that need held-out rows (before step 1)."""
    for flag, value in (("--eval-steps", opts.eval_steps), ("--log-samples", opts.log_samples)):
        if value < 0:
            raise RuntimeSetupError(f"{flag} must be 0 or more, got {value}")
        if value and not has_data:
            raise RuntimeSetupError(f"{flag} {value} needs held-out rows to evaluate on",
                                    help="give --eval-data PATH (or data that is a DatasetDict with a `test` split)")


class Evaluator:
    """Evaluates the run's models on the held-out `sources` (row space → examples, the first first)."""

    def __init__(self, compiled, models, sources, opts, acc, rewards, out, log, counts, reduce, explicit=True,
                 envs=None):
        self.compiled, self.models, self.opts, self.acc, self.rewards = compiled, models, opts, acc, rewards
        self.envs = envs or {}  # episodes: environment name → factory
        self.out, self.log, self.counts, self.reduce = out, log, counts, reduce
        plan = compiled.plan
        self.summed = {name for name, bad in split_analysis(compiled.graph)[1].items() if not bad}
        self.sampled = {q.set for q in plan.queries if q.role_kind == "sampler"}
        group = {s: int(r.options.get("n", 1)) for s, r in plan.rollouts.items()
                 if "on_policy" not in r.options and int(r.options.get("n", 1)) > 1}
        self.with_loss = not group
        self.reward_set = next((s for s, r in plan.rollouts.items()
                                if r.model == "policy" and "on_policy" not in r.options), None)
        self.scored = rewards is not None and bool(plan.rewards) and self.reward_set is not None
        if group:
            s, n = next(iter(group.items()))
            why = f"the loss of `{compiled.name}` needs rollout `{s}`'s n = {n} samples per prompt; greedy " \
                  "evaluation decodes one"
            if not self.scored:
                if explicit:
                    raise RuntimeSetupError(f"cannot evaluate: {why}, and the method declares no reward")
                log(f"note: no evaluation: {why}, and the method declares no reward")
                self.scored = None  # nothing to report: the run does not evaluate
            else:
                log(f"note: {why}, so evaluation reports rewards (eval/reward), not the loss")
        if opts.log_samples and self.reward_set is None and _scorer(models.policy):
            raise RuntimeSetupError(f"--log-samples: `{compiled.name}` trains a sequence classifier, which "
                                    "writes no completions", help="leave out --log-samples")
        self.parts = self._parts(sources)

    @property
    def active(self) -> bool:
        return self.scored is not None

    def due(self, step: int, total: int) -> bool:
        """Evaluate after optimizer step `step` (the last one's is the final evaluation)."""
        return self.active and bool(self.opts.eval_steps) and step % self.opts.eval_steps == 0 and step < total

    def _parts(self, sources: dict) -> list[tuple[list, dict]]:
        """This process's micro-batches: (first-source examples, row space → other sources' examples).
        Global micro-batch c holds --batch-size rows per process; every process runs the same number
        (with several processes the rows past the last whole multiple of the world size are left out)."""
        acc, size = self.acc, self.opts.batch_size
        world, rank = acc.num_processes, acc.process_index
        first = next(iter(sources.values()))
        usable = len(first) - len(first) % world
        if usable < len(first):
            self.log(f"note: evaluation uses {usable} of the {len(first)} held-out rows (a multiple of the "
                     f"{world} processes)")
        if usable == 0:
            raise RuntimeSetupError(f"evaluation needs at least one held-out row per process ({world}); "
                                    f"it has {len(first)}")
        shares = source_shares(self.compiled.plan.sources, sources, size)
        parts = []
        for c, i in enumerate(range(0, usable, size * world)):
            mine = first[i:i + size * world][rank::world]
            others = {}
            for share in shares:
                start = (c * world + rank) * share.batch
                others[share.rows] = [sources[share.rows][(start + j) % share.n] for j in range(share.batch)]
            parts.append((mine, others))
        return parts

    # ---- one evaluation -----------------------------------------------------------

    def run(self, ctx, step: int, state: dict) -> dict:
        """Evaluate now (after optimizer step `step`); write and log the row; return its metrics."""
        greedy = scoring_temperatures(self.compiled.plan, {**self.opts.rollout, **GREEDY})
        ctx = dataclasses.replace(ctx, precomputed={}, positions={}, temperatures=greedy)
        with _eval_mode(self._modules()), torch.no_grad(), sharding.gathered(self.models.trainable()):
            batches = [self._batch(examples, others) for examples, others in self.parts]
            row = self._rewards(batches) if self.scored else {}
            if self.with_loss:
                row.update(self._loss(ctx, batches, state))
            samples = self._samples(batches, step) if self.opts.log_samples else []
        if self.rewards is not None:  # each reward source's mean here, not leaked into the next step's
            row.update(self.rewards.drain_means())
        row = {f"eval/{k}": v for k, v in row.items()}
        self._write(step, row, samples)
        return row

    def _modules(self) -> list[torch.nn.Module]:
        m = self.models
        return [m.policy, *m.heads.values(), *m.critics.values(), *m.frozen.values()]

    def _batch(self, examples, others) -> Batch:
        """A micro-batch as experience.py makes one, its rollouts greedy with one sample per prompt."""
        compiled, models = self.compiled, self.models
        batch = build_batch(compiled, examples, others)
        overrides = {**self.opts.rollout, **GREEDY}
        for name, spec in compiled.plan.rollouts.items():
            if "on_policy" in spec.options:  # the dataset's completions are mixed in: the held-out ones
                batch.sets[name] = rollout.from_dataset(batch.examples, compiled.plan.data, models.tokenizer)
                continue
            sampler = _sampler(compiled, models, spec.model)
            if spec.kind == "episode":  # greedy episodes against the environment, as training plays them
                gen = generators.HFGenerator(sampler, models.tokenizer, self.acc.device, self.opts.prefix_sharing)
                batch.sets[name] = episode_rollout.play(gen, models.tokenizer, batch.examples, spec,
                                                        self.envs[spec.env], overrides, name in self.sampled,
                                                        episode_rollout.stop_ids(sampler, models.tokenizer))
                continue
            batch.sets[name] = rollout.sample(sampler, models.tokenizer, batch.examples, spec, self.acc.device,
                                              overrides, name in self.sampled)
        if self.rewards is not None:
            experience.score(compiled, batch, self.rewards)
        pick_sets(compiled, batch)
        return batch

    def _loss(self, ctx, batches: list[Batch], state: dict) -> dict:
        """The compiled loss and metrics over the held-out batch (the loop's accumulation, no backward)."""
        norm = self.counts(self.compiled, batches, self.acc)
        sums: dict[str, float] = {}
        for batch in batches:
            with self.acc.autocast():
                loss, metrics = self.compiled.loss(loss_inputs(ctx, batch), normalizers=norm, state=dict(state))
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v.float().item() / (1 if k in self.summed else len(batches))
        return self.reduce(self.acc, sums, self.summed)

    def _rewards(self, batches: list[Batch]) -> dict:
        """Each declared reward's mean over the greedy completions (all processes), and their mean."""
        s, names = self.reward_set, list(self.compiled.plan.rewards)
        totals = []
        for name in names:
            values = [v for b in batches for v in self._reward_values(b, s, name)]
            totals += [sum(values), len(values)]
        t = self.acc.reduce(torch.tensor(totals, dtype=torch.float64, device=self.acc.device), "sum").tolist()
        means = {f"reward/{name}": t[2 * i] / max(t[2 * i + 1], 1.0) for i, name in enumerate(names)}
        return {"reward": sum(means.values()) / len(means), **means}

    def _reward_values(self, batch: Batch, s: str, name: str) -> list[float]:
        key = f"{name}({s})"
        if key not in batch.rewards:  # a reward the loss does not read on this set
            batch.rewards[key] = experience.score_set(batch, s, name, self.rewards)
        return batch.rewards[key]

    # ---- samples and writing --------------------------------------------------------

    def _samples(self, batches: list[Batch], step: int) -> list[dict]:
        """The first --log-samples held-out prompts with the policy's greedy completion and reward."""
        n, s = self.opts.log_samples, self.reward_set
        if s is None:  # no rollout of the policy: decode its greedy completions now
            examples = [e for b in batches for e in b.examples][:n]
            b, s = Batch(examples), "eval"
            b.sets[s] = rollout.sample(self.models.policy, self.models.tokenizer, examples,
                                       Rollout(s, "policy", {}), self.acc.device, {**self.opts.rollout, **GREEDY})
            batches = [b]
        names = list(self.compiled.plan.rewards) if self.rewards is not None else []
        rows = []
        for b in batches:
            values = {name: self._reward_values(b, s, name) for name in names}
            for i, e in enumerate(b.examples):
                rewards = {name: v[i] for name, v in values.items()}
                row = {"step": step, "prompt": e.prompt_text, "completion": b.sets[s].texts[i],
                       "reward": sum(rewards.values()) / len(rewards) if rewards else None}
                rows.append({**row, "rewards": rewards} if len(rewards) > 1 else row)
            if len(rows) >= n:
                break
        return rows[:n]

    def _write(self, step: int, row: dict, samples: list[dict]) -> None:
        acc = self.acc
        if not acc.is_main_process:
            return
        metrics_log.append(self.out, {"step": step, **row})
        if self.opts.report_to:
            reporters.log(acc, {"step": step, **row}, self.opts.metric_names)
        if samples:
            samples_log.append(self.out, samples)
            if "tensorboard" in self.opts.report_to:
                samples_log.to_tensorboard(acc, step, samples)
        if not self.opts.quiet:
            self.log(f"eval at step {step}: " + " ".join(f"{k[5:]}={v:.4g}" for k, v in row.items()))


def load(compiled, eval_data, load_one, seed: int, offset: int) -> dict[str, list]:
    """Row space → the held-out examples of every source, validated and tokenised as the training
    rows are (a bad row is named with its file), numbered after the training rows."""
    return load_sources(compiled, eval_data, load_one, seed, flag="--eval-data", offset=offset)


def _scorer(policy) -> bool:
    """A policy with no language-model head (a sequence classifier: the spec reads its score)."""
    return getattr(policy, "get_output_embeddings", lambda: None)() is None


@contextlib.contextmanager
def _eval_mode(modules):
    """Every module in eval mode (dropout off) meanwhile; each submodule's own mode restored after."""
    modes = [(m, m.training) for root in modules for m in root.modules()]
    for root in modules:
        root.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
