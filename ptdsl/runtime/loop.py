"""The training loop: one readable file, the compiled method its only
method-specific input.

Each optimizer step takes one mini-batch of the current experience
(runtime/experience.py: a batch of examples made once — rollouts sampled, rewards
scored, `old` recorded — and used for the passes × mini-batches the spec's `update`
line asks; by default one step per experience). A mini-batch is one global batch,
the same on every process; this process's slice of it is split into micro-batches.
Rows and tokens are counted over the whole mini-batch (all processes) BEFORE any
backward, and given to the compiled loss as its normalisers: the micro-batch losses
then sum to the full mini-batch loss, whatever the accumulation steps or the number
of processes.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import torch

from ptdsl.api import compile as compile_method  # the API below the runtime, not the package above it
from ptdsl.diagnostics import render
from ptdsl.passes.batching import inexact_nodes, split_analysis
from ptdsl.runtime import checkpoint, embedded, evaluate, experience, metrics_log, reporters, run_record, samples_log
from ptdsl.runtime import async_gen, embedded_tools, episode_rollout, generators, sharding, weights
from ptdsl.runtime import critic as C
from ptdsl.runtime.alloc import tune_malloc
from ptdsl.runtime.callbacks import check_callbacks, notify
from ptdsl.runtime.draws import Clock, check_schedules
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.guard import Guard, check_options
from ptdsl.runtime.model_options import Loading
from ptdsl.runtime.precompute import precompute
from ptdsl.runtime.queries import Trunk
from ptdsl.runtime.rewards import RewardSources, verifier_uses
from ptdsl.runtime.setup import load_examples, load_models
from ptdsl.runtime.sources import load_sources, shares as source_shares
from ptdsl.runtime.step import StepContext, loss_inputs, masks, scoring_temperatures


@dataclass
class TrainOptions:
    output: str = "out"
    steps: int | None = None             # optimizer steps (default: `epochs` epochs × the spec's passes × mini-batches)
    epochs: float | None = None          # passes over the first source's examples (default 1); `steps` wins
    batch_size: int = 8                  # examples (prompts, for rollouts) per process per micro-step
    grad_accum: int = 1
    learning_rate: float | None = None   # default: 1e-5; the embedded models: embedded.py, embedded_tools.py
    critic_lr: float | None = None       # separate critics (default: the policy's × the spec's lr_scale)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    nonfinite_grads: str = "stop"        # stop | skip: a step whose loss or gradient is not finite
    max_skipped_steps: int = 10          # skip: at most this many steps, then stop
    max_length: int = 512
    max_prompt_length: int | None = None
    step_separator: str | None = None    # stepwise data: appended to each step (default "\n", embedded " ")
    chat_template: str | None = None     # a Jinja template file, or "plain": replaces the tokenizer's
    seed: int = 0
    max_examples: int | None = None      # use only the first N usable rows of the dataset
    skip_invalid_rows: bool = False      # drop (and count) rows that do not fit the data kind, not stop
    save_steps: int = 0                  # 0: only the final model
    log_steps: int = 10
    mixed_precision: str = "no"          # no | bf16 | fp16
    precompute: bool = True              # precompute frozen data-only queries (reference log-probs)
    prefix_sharing: bool = True          # rows with one prompt encode it once when that pays (ptdsl/sharing.py)
    report_to: tuple = ()                # tensorboard, wandb, mlflow, trackio (runtime/reporters.py)
    metric_names: str = "ptdsl"          # ptdsl | trl: the names the reporters get (metrics.jsonl keeps ptdsl's)
    lora_r: int = 0                      # > 0: train LoRA adapters (peft); a frozen(policy) reference is
    lora_alpha: int = 16                 #   then the base model with adapters disabled, not a copy
    lora_dropout: float = 0.0
    lora_target_modules: str | None = None   # comma-separated module names (default all-linear)
    lora_path: str | None = None         # a saved adapter to train further (implies LoRA)
    torch_dtype: str | None = None       # auto | float32 | bfloat16 | float16: the weights' dtype
    attn_implementation: str | None = None   # eager | sdpa | flash_attention_2 | …
    gradient_checkpointing: bool = False # recompute the policy's activations in backward
    resume: bool = False
    rollout: dict = field(default_factory=dict)   # sample option overrides (temperature, max_tokens, …)
    quiet: bool = False
    callbacks: tuple = ()                # objects with on_step_begin(step) and/or on_step_end(step, metrics)
    eval_data: object = None             # held-out rows, as `data` (default: a DatasetDict's `test` split)
    eval_steps: int = 0                  # evaluate every N steps (0: once, at the end)
    log_samples: int = 0                 # write N greedy completions per evaluation to samples.jsonl
    envs: object = ()                    # environments of episodes: NAME=module:factory strings, or {name: factory}
    generator: str = "hf"                # hf | vllm: the sampling backend (runtime/generators.py)
    async_staleness: int = 0             # K ≥ 1: a worker samples up to K versions ahead (runtime/async_gen.py)


class TrainResult(dict):
    """The last logged metrics (a dict, as before), and the trained `model` (the policy object, with
    its LoRA adapters where it has them) and its `tokenizer`."""

    def __init__(self, metrics: dict, model, tokenizer):
        super().__init__(metrics)
        self.model, self.tokenizer = model, tokenizer

    def __repr__(self) -> str:
        return f"TrainResult({dict.__repr__(self)}, model={type(self.model).__name__})"


def train(method, model=None, data=None, reward_fns=(), params: dict | None = None, tokenizer=None,
          **options) -> TrainResult:
    """Train `method` (name, path or Method) and return the last logged metrics with the trained model.
    `model`: a path or hub id, a loaded transformers model (trained in place), or None (the embedded
    default); `tokenizer` goes with a model object. `data`: a path or a datasets.Dataset /
    DatasetDict (its train split; its test split is the default `eval_data`) for the method's one
    dataset, `{source: data}` or `["NAME=PATH", …]` for named sources, or None (the embedded
    default for every source)."""
    tune_malloc()  # large step buffers reused from the heap, not re-mmapped each step (runtime/alloc.py)
    opts = _options(options)
    check_options(opts.nonfinite_grads, opts.max_skipped_steps)
    if opts.epochs is not None and not opts.epochs > 0:
        raise RuntimeSetupError(f"--epochs must be a positive number, got {opts.epochs}")
    check_callbacks(opts.callbacks)
    opts.report_to = reporters.check(opts.report_to, opts.metric_names)  # installed, before step 1
    compiled = compile_method(method, **(params or {}))
    lr = opts.learning_rate or (1e-5 if model is not None else embedded_tools.LEARNING_RATE
                                if embedded_tools.applies(compiled.plan) else embedded.LEARNING_RATE)
    critic_lrs = C.learning_rates(compiled.plan.learners, lr, opts.critic_lr, compiled.name)  # --critic-lr: checked now
    if model is None and "max_tokens" not in opts.rollout:  # the embedded tasks' answers are short
        opts.rollout = {**opts.rollout, "max_tokens": embedded_tools.MAX_EPISODE_TOKENS
                        if embedded_tools.applies(compiled.plan) else embedded.ROLLOUT_MAX_TOKENS}
    if not opts.prefix_sharing:  # --no-prefix-sharing: generation prefills every row's prompt too
        opts.rollout = {**opts.rollout, "prefix_sharing": False}
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    # accelerate keeps one state per process and refuses a second Accelerator with another
    # mixed precision (a second train() in a notebook or a test): the previous run's state is
    # dropped first, the process group (PartialState) kept, as transformers' TrainingArguments does
    AcceleratorState._reset_state()
    asked = sharding.requested()  # FSDP2 from accelerate's launch flags or config: ptdsl shards itself
    mode = sharding.resolve(asked, int(os.environ.get("WORLD_SIZE", "1")), opts.mixed_precision,
                            lora=bool(opts.lora_r or opts.lora_path))
    # cpu=True without CUDA: several processes then form a gloo group (MULTI_CPU), which
    # accelerate only does when told the run is on the CPU
    with sharding.hidden_from_accelerate(asked):
        acc = Accelerator(mixed_precision=opts.mixed_precision, log_with=list(opts.report_to) or None,
                          project_dir=opts.output, cpu=not torch.cuda.is_available())
    set_seed(opts.seed)
    generators.check(opts.generator, acc.device)  # --generator vllm without CUDA: before anything loads
    async_gen.check(opts.async_staleness, compiled, acc.num_processes, mode.fsdp, opts.generator, opts.lora_dropout)
    log = _logger(acc, opts)
    for w in startup_warnings(compiled, opts.async_staleness):
        log(render(w, compiled.method.definition.sources))
    out = Path(opts.output)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)

    # -- rewards, models, data: everything checked before step 1 (reward functions first: they are quick)
    rewards = RewardSources(compiled.plan, reward_fns, embedded_default=model is None, device=acc.device,
                            uses=verifier_uses(compiled.method.definition), log=log) \
        if compiled.plan.rewards or reward_fns else None
    loading = Loading(opts.torch_dtype, opts.attn_implementation, opts.gradient_checkpointing, opts.lora_dropout,
                      opts.lora_target_modules, opts.lora_path)
    models = load_models(compiled, model, opts.seed, opts.lora_r, opts.lora_alpha, log, tokenizer=tokenizer,
                         chat_template=opts.chat_template, loading=loading)
    envs = episode_rollout.bind(compiled.plan, opts.envs, models.tokenizer)  # environments, before step 1
    load = partial(_load_source, compiled, models.tokenizer, opts, log, rewards.columns if rewards else ())
    sources = load_sources(compiled, data, load, opts.seed)  # row space → examples; the first defines an epoch
    examples = next(iter(sources.values()))
    eval_sources = _held_out(compiled, models.tokenizer, opts, log, rewards, data, sources)
    world = acc.num_processes
    reuse = experience.resolve(compiled.plan.schedule, len(examples), opts.batch_size, opts.grad_accum, world)
    shares = source_shares(compiled.plan.sources, sources, opts.batch_size)  # the other sources' rows per micro-batch
    total = opts.steps or max(1, round((1.0 if opts.epochs is None else opts.epochs) * reuse.default_total()))
    run = run_record.record(compiled, opts, acc, models.ids, data, opts.mixed_precision,
                            mode.describe(acc.device.type))
    log(run_record.startup_line(run) + f"; {total} steps")
    if acc.is_main_process:
        run_record.write(out, {**run, "steps": total})
    check_schedules(compiled, total, reuse.default_total())  # scheduled params' constraints, every step
    if reuse.steps > 1:
        log(f"note: each batch of experience ({reuse.size} examples) feeds {reuse.steps} optimizer steps "
            f"({reuse.passes} passes × {reuse.minibatches} mini-batches); `old` outputs are recorded as it is made")
    if (opts.grad_accum > 1 or world > 1) and inexact_nodes(compiled.graph):
        spans = ", ".join(str(compiled.graph.nodes[n]["span"]) for n in inexact_nodes(compiled.graph))
        log(f"note: `{compiled.name}` uses a batch statistic non-linearly ({spans}); it is computed per "
            f"micro-batch, as TRL does, so the split is not exact for that term")

    # -- precompute frozen, data-only queries (reference log-probs) once
    pre = [q for q in compiled.plan.queries if q.precomputable] if opts.precompute else []
    for m in models.frozen.values():
        m.to(acc.device)
    positions = {e.index: i for rows in sources.values() for i, e in enumerate(rows)}
    cache = precompute(pre, models.frozen, sources, compiled.graph.graph["sets"], models.tokenizer.pad_token_id,
                       acc.device, 16, out / "cache" if acc.is_main_process else None, models.ids,
                       _progress(acc, opts), prefix_sharing=opts.prefix_sharing) if pre else {}

    # -- sharding (FSDP2: before the optimizer, which then holds the sharded parameters)
    trunk = Trunk(models.policy)
    if mode.fsdp:
        sharding.shard_models(models, trunk, mode, acc.device)

    # -- optimizer (a parameter group per learner: the policy with its heads, each critic), schedule, accelerate
    heads, critics = list(models.heads.values()), list(models.critics.values())
    params_ = [p for m in [models.policy, *heads] for p in m.parameters() if p.requires_grad]
    critic_params = [[p for p in c.parameters() if p.requires_grad] for c in critics]
    optim = _adamw([{"params": params_, "lr": lr}] + [{"params": ps, "lr": r} for ps, r in zip(critic_params, critic_lrs)],
                   lr, opts.weight_decay)
    critic_warmup = C.warmup_steps(compiled.plan.learners)
    for learner, r in zip(compiled.plan.learners, critic_lrs):
        log(f"note: critic `{learner.name}` trains in its own parameter group at lr {r:g}"
            + (f"; for the first {learner.warmup_steps} steps only it learns" if learner.warmup_steps else ""))
    warm = int(opts.warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / max(warm, 1), max(0.0, (total - s) / max(total - warm, 1))))
    if mode.fsdp:  # sharded already: accelerate would wrap the models in DDP, and save one shard of the optimizer
        models.trunk = trunk
    else:
        prepared = acc.prepare(trunk, *heads, *critics, optim)
        models.trunk, optim = prepared[0], prepared[-1]
        heads, critics = list(prepared[1:1 + len(heads)]), list(prepared[1 + len(heads):-1])
        models.heads, models.critics = dict(zip(models.heads, heads)), dict(zip(models.critics, critics))
    checkpoint.own_model_files(acc)  # the models go into checkpoints in Hugging Face's layout (weights.py)
    # the schedule counts optimizer steps; accelerate's wrapper would step it once per process
    acc.register_for_checkpointing(sched)
    ctx = StepContext(compiled, models, acc.device, cache, positions,
                      temperatures=scoring_temperatures(compiled.plan, opts.rollout), seed=opts.seed,
                      prefix_sharing=opts.prefix_sharing)
    generator = generators.make_generator(opts.generator, models.policy, models.tokenizer, acc.device,
                                          prefix_sharing=opts.prefix_sharing, seed=opts.seed + acc.process_index) \
        if compiled.plan.rollouts else None
    experiences = experience.Experiences(compiled, sources, reuse, opts, acc, models, rewards, ctx, shares, envs,
                                         generator)
    if opts.async_staleness:  # experiences made ahead, on a copy of the weights, by a worker
        experiences = async_gen.Pipeline(experiences, opts.async_staleness, total, log)
    evaluator = evaluate.Evaluator(compiled, models, eval_sources, opts, acc, rewards, out, log, _global_counts,
                                   _reduce_metrics, explicit=opts.eval_data is not None, envs=envs) \
        if eval_sources else None
    start, saved = 0, {}
    state: dict = {}  # running statistics of the loss (`running_mean`), kept across steps
    store = _Store(models, acc, mode, optim)
    if opts.resume:
        layout = checkpoint.Layout(weights.policy_marker(bool(opts.lora_r or opts.lora_path)), tuple(models.heads),
                                   tuple(models.critics), weights.OPTIMIZER if mode.fsdp else "optimizer.bin",
                                   process=acc.process_index, scaler=acc.scaler is not None,
                                   experience=reuse.steps > 1)
        start, saved = _resume(acc, out, total, layout, log, experiences, store.read)
        state = {k: tuple(v) for k, v in saved.get("state", {}).items()}
    guard = Guard(compiled, acc, params_ + [p for ps in critic_params for p in ps], opts.nonfinite_grads,
                  opts.max_skipped_steps, lr, saved.get("skipped", 0), log,
                  clip_groups=(("policy", params_), *zip(models.critics, critic_params)) if critics else ())
    if opts.report_to:
        reporters.start(acc, opts.report_to, out, _tracker_config(compiled, opts))

    # a metric whose batch means take global counts sums over micro-batches; others average
    summed = {name for name, bad in split_analysis(compiled.graph)[1].items() if not bad}
    trainable = models.trainable()
    bar = _progress(acc, opts)(range(start, total), desc=f"train {compiled.name}", initial=start, total=total)
    last: dict = {}
    for step in bar:
        notify(opts.callbacks, "on_step_begin", step)  # before the step's experience is fetched (or made)
        t0 = time.time()
        ctx.clock = Clock(step, total, reuse.default_total())  # time leaves and random draws read it
        micro = experiences.minibatch(step)  # makes the next experience when this step starts one
        norm = _global_counts(compiled, micro, acc)
        state_before = dict(state)
        # each reward source's mean over the completions this step scored (rewards/NAME/mean, as TRL)
        sums: dict[str, float] = rewards.drain_means() if rewards is not None else {}
        sums.update(experiences.drain_means())  # episodes: episode/turns, …/tool_calls, …/tool_errors
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1
            with contextlib.ExitStack() as stack:
                if not sync:
                    for m in trainable:
                        stack.enter_context(acc.no_sync(m))
                with acc.autocast():
                    inputs = loss_inputs(ctx, batch)
                    loss, metrics = compiled.loss(inputs, normalizers=norm, state=state)
                guard.watch_loss(loss, inputs, i)
                acc.backward(loss * world)  # DDP averages over processes; the counts are global
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v.float().item() / (1 if k in summed else len(micro))
        rerun = partial(_rerun, ctx, micro, norm, state_before, acc)
        grad_norm, ok = guard.step_ok(step, opts.max_grad_norm, rerun)
        if ok:
            if step < critic_warmup:  # a critic's warm-up: the policy's update is skipped, only critics learn
                C.hold_policy(params_)
            optim.step()
            guard.after_update(step)
        else:  # a skipped step leaves no trace in the running statistics either
            state = state_before
        used_lr = optim.param_groups[0]["lr"]  # the policy's rate this step used (the schedule moves on next)
        with warnings.catch_warnings():  # a skipped step still moves the schedule (the lr is a function
            warnings.simplefilter("ignore", UserWarning)  # of the step); torch warns when it is the first
            sched.step()
        optim.zero_grad(set_to_none=True)
        _sync_references(compiled, models, step + 1)
        last = _reduce_metrics(acc, sums, summed)
        last.update(step=step + 1, lr=used_lr, step_time=round(time.time() - t0, 4))
        last["grad_norm"] = grad_norm
        last.update({f"grad_norm_{name}": n for name, n in list(guard.group_norms.items())[1:]})
        if opts.nonfinite_grads == "skip":
            last["skipped_steps"] = guard.skipped
        guard.check_metrics(last, step)
        _log_step(acc, opts, out, bar, last, log)
        notify(opts.callbacks, "on_step_end", step, last)
        if evaluator is not None and evaluator.due(step + 1, total):  # eval/ rows are their own
            evaluator.run(ctx, step + 1, state)
        if opts.save_steps and (step + 1) % opts.save_steps == 0 and step + 1 < total:
            checkpoint.save(acc, out, step + 1, {"state": state, "skipped": guard.skipped},
                            experience=experiences.state() if reuse.steps > 1 else None, write=store.write)
    if evaluator is not None and evaluator.active:  # the final evaluation (final weights), in the result too
        last = {**last, **evaluator.run(ctx, total, state)}
    if generator is not None:
        generator.close()
    if opts.async_staleness:
        experiences.close()
    acc.wait_for_everyone()
    weights.write(out / "final", models, acc, mode.fsdp)
    if rewards is not None:
        rewards.report()
    if opts.report_to:
        acc.end_training()
    return TrainResult(last, models.policy, models.tokenizer)


def _options(options: dict) -> TrainOptions:
    """TrainOptions from train()'s keywords; an unknown one is a TypeError that lists the valid
    ones and the nearest (as a Python call with a wrong keyword would, more helpfully)."""
    import dataclasses
    import difflib
    valid = [f.name for f in dataclasses.fields(TrainOptions)]
    unknown = [k for k in options if k not in valid]
    if unknown:
        near = difflib.get_close_matches(unknown[0], valid + ["model", "data", "reward_fns", "params", "tokenizer"],
                                         n=2)
        hint = f"; did you mean {' or '.join(f'`{n}`' for n in near)}?" if near else ""
        raise TypeError(f"train() got an unknown option {', '.join(f'`{k}`' for k in unknown)}{hint} "
                        f"(the options: model, data, reward_fns, params, tokenizer, {', '.join(valid)})")
    return TrainOptions(**options)


def _load_source(compiled, tok, opts, log, verifier_columns, source, path, seed):
    """One data source's examples (runtime/setup.load_examples), the first --max-examples of them."""
    examples = load_examples(compiled, path, tok, opts.max_length, opts.max_prompt_length, seed, log,
                             opts.step_separator, skip_invalid_rows=opts.skip_invalid_rows,
                             require_columns=verifier_columns, source=source,  # what the verifiers read
                             limit=opts.max_examples or None)  # tokenise no further than needed
    return examples


def _held_out(compiled, tok, opts, log, rewards, data, sources) -> dict | None:
    """The held-out examples of every source (runtime/evaluate.py), all of them, checked as the
    training rows are and numbered after them; None when the run does not evaluate."""
    held_out = evaluate.held_out(data, opts.eval_data, log)
    evaluate.check(opts, held_out is not None)
    if held_out is None:
        return None
    load = partial(_load_source, compiled, tok, replace(opts, max_examples=None), log,
                   rewards.columns if rewards else ())
    after = 1 + max(e.index for rows in sources.values() for e in rows)
    return evaluate.load(compiled, held_out, load, opts.seed, after)


def _adamw(params, lr: float, weight_decay: float):
    """AdamW with the fused kernel where torch has one for the parameters' device (CPU and
    CUDA; the same update, one kernel over all tensors instead of a Python loop of small
    ops: 2.7 → 0.9 ms a step for a 1.3M-parameter model on a CPU). TRL's default too."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# ---- counts -------------------------------------------------------------------------

def _global_counts(compiled, micro, acc) -> dict:
    """Rows and completion tokens of the whole global batch, over every process (and, with
    several processes, the reduction running statistics use)."""
    keys, values = [], []
    for s in compiled.plan.sets:
        rows = compiled.graph.graph["sets"][s].rows
        if f"rows:{rows}" not in keys:
            keys.append(f"rows:{rows}")
            values.append(sum(len(b.sets[s]) for b in micro))
        keys.append(f"tokens:{s}")
        values.append(sum(int(masks(compiled, b, "cpu")[s].sum()) for b in micro))
    for rows in [s.rows for s in compiled.plan.sources] or ["examples"]:  # each data source's examples
        if f"rows:{rows}" not in keys:
            keys.append(f"rows:{rows}")
            values.append(sum(len(b.rows_of(rows)) for b in micro))
    total = acc.reduce(torch.tensor(values, dtype=torch.float64, device=acc.device), "sum")
    norm = {k: max(float(v), 1.0) for k, v in zip(keys, total.tolist())}
    if acc.num_processes > 1:  # running statistics (`running_mean`) add up every process's batch
        norm["sum_over_processes"] = lambda t: acc.reduce(t, "sum")
    return norm


# ---- checks, logging, saving -------------------------------------------------------

def _resume(acc, out: Path, total: int, layout, log, experiences, read) -> tuple[int, dict]:
    """Load the newest valid checkpoint (saying which newer ones were skipped and why), the
    experience in progress when it was taken inside one, and cut metrics.jsonl back to its step."""
    found, skipped = checkpoint.choose(out, total, layout)
    for path, reason in skipped:
        log(f"--resume: skipping {path}: {reason}")
    if found is None:
        why = "; ".join(f"{p.name}: {r}" for p, r in skipped)
        raise RuntimeSetupError(f"--resume: no usable checkpoint in `{out}`" + (f" ({why})" if why else ""),
                                help="start without --resume (or with another --output)")
    start, saved = checkpoint.load(acc, found, read)
    if start % experiences.reuse.steps:  # taken inside an experience: continue that one
        experiences.restore(checkpoint.load_experience(found, acc.process_index), start)
    if acc.is_main_process:
        metrics_log.truncate(out, start)
        metrics_log.truncate(out, start, samples_log.NAME)
    log(f"resumed from {found.path} at step {start}")
    return start, saved


def _rerun(ctx, micro, norm, state, acc):
    """This process's micro-batches again, without a graph (the weights are those the bad
    gradient was computed with): (leaf inputs, normalisers, running statistics) each.
    Every micro-batch runs on every process, so their forwards' collectives still match."""
    local = {k: v for k, v in norm.items() if k != "sum_over_processes"}
    for batch in micro:
        with torch.no_grad(), acc.autocast():
            inputs = loss_inputs(ctx, batch)
        yield inputs, local, state


def _sync_references(compiled, models, step: int):
    """A moving reference (TR-DPO): every `sync_steps`, θ_ref ← mixup·θ + (1 − mixup)·θ_ref."""
    for name, role in compiled.graph.graph["roles"].items():
        opts = dict(role.options)
        if role.kind == "frozen_copy" and name in models.frozen and opts.get("sync_steps"):
            if step % int(opts["sync_steps"]) == 0:
                alpha = float(opts.get("mixup", 1.0))
                with torch.no_grad():
                    for ref, cur in zip(models.frozen[name].parameters(), models.policy.parameters()):
                        ref.mul_(1 - alpha).add_(sharding.full(cur.detach()), alpha=alpha)


def _reduce_metrics(acc, sums: dict, summed: set) -> dict:
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=acc.device)
    t = acc.reduce(t, "sum")
    # values with global counts sum over processes; the others average
    return {k: (v if k == "loss" or k in summed else v / acc.num_processes) for k, v in zip(keys, t.tolist())}


def _log_step(acc, opts, out: Path, bar, metrics: dict, log):
    if not acc.is_main_process:
        return
    metrics_log.append(out, metrics)
    shown = {k: v for k, v in metrics.items() if k not in ("step", "lr", "step_time", "grad_norm")}
    if hasattr(bar, "set_postfix"):
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(shown.items())[:4]}, refresh=False)
    if opts.report_to:
        reporters.log(acc, metrics, opts.metric_names)
    if metrics["step"] % max(opts.log_steps, 1) == 0 and not opts.quiet:
        log(f"step {metrics['step']}: " + " ".join(f"{k}={v:.4g}" for k, v in shown.items()))


@dataclass
class _Store:
    """Writes and reads the models (and an FSDP2 run's optimizer) of a checkpoint (weights.py)."""
    models: object
    acc: object
    mode: sharding.Mode
    optim: object

    def write(self, folder: Path) -> None:
        weights.write(folder, self.models, self.acc, self.mode.fsdp)
        if self.mode.fsdp:
            weights.write_optimizer(folder, self.models.trainable(), self.optim, self.acc)

    def read(self, folder: Path) -> None:
        weights.read(folder, self.models, self.mode.fsdp)
        if self.mode.fsdp:
            weights.read_optimizer(folder, self.models.trainable(), self.optim)


def _tracker_config(compiled, opts) -> dict:
    """The run's settings as flat scalars: trackers (tensorboard's hparams) take only
    int, float, str and bool, so None, tuples and dicts are written as text."""
    # not asdict: it deep-copies every value, and callbacks are the caller's live objects
    config = {"method": compiled.name, **compiled.params,
              **{f.name: getattr(opts, f.name) for f in fields(opts) if f.name != "callbacks"}}
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}


def startup_warnings(compiled, async_staleness: int) -> list:
    """The compiler's warnings that hold for this run. W0202 (`old` is the current policy when each
    batch feeds one step) does not with K ≥ 1: the worker records `old` on the sampling version's
    weights (runtime/async_gen.py), so the ratios it says are 1 are not."""
    return [w for w in compiled.warnings if not (async_staleness and w.code == "W0202")]


def _logger(acc, opts):
    def log(msg: str):
        if acc.is_main_process and not opts.quiet:
            from tqdm.auto import tqdm
            tqdm.write(msg)
    return log


def _progress(acc, opts):
    def make(it, **kw):
        if not acc.is_main_process or opts.quiet:
            return it
        from tqdm.auto import tqdm
        return tqdm(it, dynamic_ncols=True, **kw)
    return make
