"""GRPO step time: ptdsl's training loop vs TRL 1.16's GRPOTrainer vs a minimal
hand-written torch step, side by side; then ptdsl vs TRL with num_iterations = 2, and
with n = 8 completions per prompt and prompts 4× the completion.

    python benchmarks/grpo.py [--quick | --smoke] [--multi-turn] [--json PATH]

Setup (the same for every contender): the tiny Llama-style model (hidden 128, 4 layers,
vocab 1024, random weights from a config, saved once to a temporary directory and
loaded by every contender), a local word-level tokenizer, 2 prompts × 4 completions =
8 completions per step, prompts of exactly 32 tokens (BOS + 31 words), exactly 32 new
tokens (`min_new_tokens = 32` disables EOS stopping), sampling at temperature 1.0,
top_p 1.0, top_k 0 with transformers `generate`, β = 0, one optimizer step per batch
(AdamW, lr 1e-6, gradient clipping at 1.0), and the same constant reward function.

How each contender runs: every contender lives in its own worker subprocess (so its
peak RSS, `ru_maxrss`, is its own), and the parent alternates them in rounds of a few
steps (A, B, C, C, B, A, …) while the others wait idle on a pipe, so drift in machine
load hits all of them alike.

- ptdsl: `ptdsl.train("grpo", model=DIR, data=FILE, …)`, the loop users run
  (accelerate, rollout, reward scoring, compiled loss, clipping, AdamW). A step is timed
  through the public step callbacks (`callbacks=`), from `on_step_begin` (before the step's
  experience is fetched: sampling and scoring when it starts a new one) to `on_step_end`
  (after its metrics are logged, so the ~0.1 ms append to metrics.jsonl is now inside;
  before issue 14 the end was the loop's call to its private `_log_step`).
- TRL: `GRPOTrainer` with the model object and tokenizer passed in (HF_HUB_OFFLINE=1),
  `loss_type="grpo"`, `beta=0`. A step is timed by a `TrainerCallback` from
  `on_step_begin` to `on_step_end` (generation, scoring, loss, backward, clipping,
  optimizer step, scheduler, zero_grad; the dataloader fetch and logging are outside).
  Otherwise TRL's defaults: gradient checkpointing on, fused AdamW, entropy metrics.
- hand-written: `generate`, one forward with `logits_to_keep` (completion positions only),
  log-softmax + gather, the clipped GRPO loss, backward, clipping, AdamW.

Experience reuse (second table): ptdsl (`--set num_iterations=2`: `update passes = 2`)
and TRL (`GRPOConfig(num_iterations=2)`) sample once every two optimizer steps and record
the old log-probs with a no-grad forward after sampling (TRL: `old_per_token_logps`);
the same settings otherwise. A step's time alternates (a sampling step, a reusing one),
so this table summarises the mean of each consecutive pair of steps, per step.

Groups of eight (third table): ptdsl and TRL with `num_generations = 8` and prompts of
128 tokens (4× the 32 new tokens), where encoding a prompt once per group instead of once
per completion pays most: ptdsl prefills each prompt once for its 8 samples (issue 14).

Multi-turn (fourth table, issue 11; `--multi-turn` runs it alone): ptdsl's `grpo_tools`
step vs TRL's GRPOTrainer with `environment_factory`, both playing the built-in calculator
environment on the embedded tool task with the same warm-started model (multiturn.py).

Phases, measured the same way for all three: generation = time inside
`GenerationMixin.generate` (patched in each worker), plus for ptdsl its shared prompt
prefill (`ptdsl.runtime.prefill.shared_prefill`, which runs just before `generate`);
reward = time inside the reward function; train = the rest of the step (forward,
backward, optimizer, and the contender's bookkeeping: tokenising, padding, advantages,
metrics).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # this checkout's ptdsl, not an installed copy
import common  # noqa: E402
import multiturn  # noqa: E402

BENCHMARK = True
SECTION = "GRPO step: ptdsl vs TRL GRPOTrainer vs hand-written torch"
PROMPTS, GROUP, PROMPT_LEN, NEW_TOKENS, LR = 2, 4, 32, 32, 1e-6
BIG_GROUP, LONG_PROMPT_LEN = 8, 4 * NEW_TOKENS   # the third table's groups and prompts
CONTENDERS = ("ptdsl", "trl", "hand")
REUSE = ("ptdsl_mu2", "trl_mu2")   # num_iterations = 2: each generation feeds two optimizer steps
GROUPED = ("ptdsl_n8", "trl_n8")   # n = 8 completions of 128-token prompts
LABELS = {"ptdsl": "ptdsl (`ptdsl.train`)", "trl": "TRL 1.16 GRPOTrainer", "hand": "hand-written torch",
          "ptdsl_mu2": "ptdsl, num_iterations = 2", "trl_mu2": "TRL 1.16 GRPOTrainer, num_iterations = 2",
          "ptdsl_n8": "ptdsl, n = 8, long prompts", "trl_n8": "TRL 1.16 GRPOTrainer, n = 8, long prompts",
          **multiturn.LABELS}
TOOLS = multiturn.NAMES            # multi-turn episodes with a tool (issue 11)


# ---- what every worker shares --------------------------------------------------------

class Clock:
    """Per-step records; the worker pauses (waiting for the parent's `go`) after warmup
    and after every `chunk` steps."""

    def __init__(self, warmup: int, chunk: int):
        self.warmup, self.chunk = warmup, chunk
        self.gen = self.reward = 0.0
        self.tools = 0  # tool calls (the multi-turn workers' environment counts them)
        self.t0 = None
        self.records: list[dict] = []
        self.pending: list[dict] = []

    def start(self):
        self.gen = self.reward = 0.0
        self.tools = 0
        self.t0 = time.perf_counter()

    def stop(self):
        step = (time.perf_counter() - self.t0) * 1000
        rec = {"step": step, "gen": self.gen, "reward": self.reward, "tools": self.tools,
               "warmup": len(self.records) < self.warmup}
        self.records.append(rec)
        self.pending.append(rec)
        n = len(self.records)
        if n == self.warmup or (n > self.warmup and (n - self.warmup) % self.chunk == 0):
            self.pause()

    def pause(self):
        _send("chunk", self.pending)
        self.pending = []
        _wait_go()


def _send(kind: str, payload):
    sys.__stdout__.write(f"@@{kind} {json.dumps(payload)}\n")
    sys.__stdout__.flush()


def _wait_go():
    line = sys.stdin.readline()
    if line.strip() != "go":
        sys.exit(0)


def _patch_generate(clock: Clock):
    def add(ms: float) -> None:
        clock.gen += ms
    common.time_generate(add)


def _patch_shared_prefill(clock: Clock):
    """ptdsl prefills each distinct prompt once just before `generate` (which then runs the
    last prompt token and the new ones): that prefill is generation time too."""
    from ptdsl.runtime import prefill
    original = prefill.shared_prefill

    def shared_prefill(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            clock.gen += (time.perf_counter() - t0) * 1000

    prefill.shared_prefill = shared_prefill


def _reward_fn(clock: Clock):
    def constant_reward(prompts, completions, **_):
        t0 = time.perf_counter()
        out = [1.0] * len(completions)
        clock.reward += (time.perf_counter() - t0) * 1000
        return out
    return constant_reward


def _prompt_ids(i: int, length: int = PROMPT_LEN) -> list[int]:
    """Prompt i: BOS + length − 1 words, the same ids for every contender."""
    import random
    rng = random.Random(1000 + i)
    return [common.BOS] + [rng.randrange(common.FIRST, common.SIZES["tiny"]["vocab_size"])
                           for _ in range(length - 1)]


def prepare(workdir: Path, n_prompts: int):
    """The model + tokenizer directory and the prompt files the workers load (32-token
    prompts; 128-token ones for the n = 8 workers)."""
    common.setup_env()
    tok = common.word_tokenizer(common.SIZES["tiny"]["vocab_size"])
    model = common.make_model("tiny", seed=0)
    # the model's default: never stop before 32 new tokens (ptdsl and the hand-written step read
    # it from the model; TRL gets the same through generation_kwargs)
    model.generation_config.min_new_tokens = NEW_TOKENS
    model.generation_config.pad_token_id = common.PAD
    model.generation_config.eos_token_id = common.EOS
    model.save_pretrained(workdir / "model")
    tok.save_pretrained(workdir / "model")
    for name, length in (("prompts", PROMPT_LEN), ("prompts_long", LONG_PROMPT_LEN)):
        with open(workdir / f"{name}.jsonl", "w") as f:
            for i in range(n_prompts):
                # ptdsl prepends BOS itself; TRL tokenises the text as given (so it carries `<s>`)
                words = common.text(_prompt_ids(i, length)[1:])
                f.write(json.dumps({"prompt": words, "prompt_bos": "<s> " + words}) + "\n")


def _load_prompts(workdir: Path, group: int = GROUP) -> list[dict]:
    """The prompts of a worker with this group size: the long ones go with the big groups."""
    name = "prompts_long" if group == BIG_GROUP else "prompts"
    return [json.loads(line) for line in open(workdir / f"{name}.jsonl")]


# ---- the contenders (each runs in its own worker process) -----------------------------

class StepTimer:
    """ptdsl.train's public step callbacks, the counterpart of TRL's TrainerCallback below."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def on_step_begin(self, step):
        self.clock.start()

    def on_step_end(self, step, metrics):
        self.clock.stop()


def run_ptdsl(workdir: Path, steps: int, clock: Clock, iterations: int = 1, group: int = GROUP):
    import ptdsl
    ptdsl.rewards.register("accuracy")(_reward_fn(clock))
    data = workdir / f"ptdsl_prompts_{group}.jsonl"
    with open(data, "w") as f:
        for row in _load_prompts(workdir, group):
            f.write(json.dumps({"prompt": row["prompt"]}) + "\n")
    ptdsl.train("grpo", model=str(workdir / "model"), data=str(data), output=str(workdir / "out_ptdsl"),
                params={"num_generations": group, "max_completion_length": NEW_TOKENS, "temperature": 1.0,
                        "num_iterations": iterations},
                steps=steps, batch_size=PROMPTS, learning_rate=LR, warmup_ratio=0.0, max_grad_norm=1.0,
                log_steps=10 ** 9, quiet=True, callbacks=[StepTimer(clock)])


def run_trl(workdir: Path, steps: int, clock: Clock, iterations: int = 1, group: int = GROUP):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(workdir / "model")
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(workdir / "model")
    rows = _load_prompts(workdir, group)
    ds = Dataset.from_dict({"prompt": [r["prompt_bos"] for r in rows]})

    cfg = GRPOConfig(output_dir=str(workdir / "out_trl"), per_device_train_batch_size=PROMPTS * group,
                     num_generations=group, max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0,
                     top_k=0, beta=0.0, loss_type="grpo", learning_rate=LR, lr_scheduler_type="constant",
                     num_iterations=iterations,
                     max_grad_norm=1.0, max_steps=steps, logging_steps=10 ** 6, save_strategy="no",
                     report_to="none", disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0,
                     generation_kwargs={"min_new_tokens": NEW_TOKENS})
    trainer = GRPOTrainer(model=model, reward_funcs=_reward_fn(clock), args=cfg, train_dataset=ds,
                          processing_class=tok, callbacks=[trl_timer(clock)])
    trainer.train()


def trl_timer(clock: Clock):
    """A TrainerCallback timing TRL's steps, the counterpart of StepTimer."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            clock.start()

        def on_step_end(self, args, state, control, **kw):
            clock.stop()
    return Timer()


def run_hand(workdir: Path, steps: int, clock: Clock):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(workdir / "model")
    model = AutoModelForCausalLM.from_pretrained(workdir / "model")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=True)  # as TRL and ptdsl
    reward = _reward_fn(clock)
    prompts = [_prompt_ids(i) for i in range(len(_load_prompts(workdir)))]
    eps = 0.2
    for step in range(steps):
        clock.start()
        batch = [prompts[(step * PROMPTS + j) % len(prompts)] for j in range(PROMPTS)]
        ids = torch.tensor([p for p in batch for _ in range(GROUP)])   # equal lengths: no padding
        with torch.no_grad():
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=NEW_TOKENS,
                                 pad_token_id=common.PAD, eos_token_id=common.EOS)
        completion = seq[:, ids.shape[1]:]
        texts = tok.batch_decode(completion, skip_special_tokens=True)
        r = torch.tensor(reward([common.text(p) for p in batch for _ in range(GROUP)], texts))
        g = r.view(PROMPTS, GROUP)
        adv = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).view(-1, 1)
        C = completion.shape[1]
        logits = model(input_ids=seq, logits_to_keep=C + 1).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, completion[..., None])[..., 0]
        ratio = torch.exp(lp - lp.detach())
        per_token = -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
        loss = per_token.mean(1).mean()       # no EOS stop: every completion has C tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        clock.stop()


def worker(name: str, workdir: Path, warmup: int, chunk: int, steps: int):
    common.setup_env()
    clock = Clock(warmup, chunk)
    _patch_generate(clock)
    base, options = _variant(name)
    if base == "ptdsl":
        _patch_shared_prefill(clock)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # libraries' prints must not mix with the protocol lines
    _send("ready", None)
    _wait_go()
    if name == "ptdsl_tools":
        multiturn.run_ptdsl(workdir, steps, clock, StepTimer(clock))
    elif name in ("trl_tools", "trl_tools_nockpt"):
        multiturn.run_trl(workdir, steps, clock, trl_timer(clock), checkpointing=name == "trl_tools")
    else:
        run = {"ptdsl": run_ptdsl, "trl": run_trl, "hand": run_hand}[base]
        run(workdir, steps, clock, **options)
    sys.stdout = real_stdout
    if clock.pending:
        _send("chunk", clock.pending)
    _send("done", {"peak_rss_mb": common.peak_rss_mb()})


def _variant(name: str) -> tuple[str, dict]:
    """A worker's contender and options: `ptdsl_mu2` is ptdsl with num_iterations = 2,
    `trl_n8` TRL with groups of 8 (and long prompts)."""
    base, _, tail = name.partition("_")
    if tail.startswith("mu"):
        return base, {"iterations": int(tail[2:])}
    if tail.startswith("n"):
        return base, {"group": int(tail[1:])}
    return base, {}


# ---- the parent: alternate the workers, summarise -----------------------------------

class Worker:
    def __init__(self, name, workdir, warmup, chunk, steps):
        self.name = name
        self.err = open(workdir / f"{name}.stderr", "w")
        self.p = subprocess.Popen([sys.executable, __file__, "--worker", name, "--workdir", str(workdir),
                                   "--warmup", str(warmup), "--chunk", str(chunk), "--steps", str(steps)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
        self.records: list[dict] = []
        self.done: dict = {}
        self.workdir = workdir

    def expect(self, kinds: tuple[str, ...]):
        for line in self.p.stdout:
            if not line.startswith("@@"):
                continue
            kind, _, payload = line[2:].partition(" ")
            value = json.loads(payload)
            if kind == "chunk":
                self.records += value
            elif kind == "done":
                self.done = value
            if kind in kinds:
                return kind
        err = (self.workdir / f"{self.name}.stderr").read_text()[-4000:]
        raise RuntimeError(f"worker {self.name} ended early (exit {self.p.wait()}):\n{err}")

    def go(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()


# (warmup, chunk, rounds): one optimizer step per generation, then two (an even warmup and
# chunk, so that every chunk holds whole generations), then groups of eight, then multi-turn
# episodes (three contenders, six rounds)
PLANS = {"full": ((5, 10, 8), (6, 10, 8), (5, 10, 8), (3, 10, 6)),
         "quick": ((2, 3, 2), (2, 4, 2), (2, 3, 2), (1, 3, 2))}
SMOKE = (0, 2, 1)  # two steps each, all seven workers at once: the start-ups (imports) overlap
WORKERS = CONTENDERS + REUSE + GROUPED   # the default smoke run's
ALL_WORKERS = WORKERS + TOOLS


def measure(mode: str, multi_turn: bool = False) -> dict:
    """The four configurations: one optimizer step per generation (three contenders), two
    (ptdsl and TRL), groups of eight with long prompts (ptdsl and TRL), and multi-turn episodes
    (ptdsl and TRL); `multi_turn`: only the last. The default smoke run leaves the last out
    (tests/benchmarks runs it with `--multi-turn --smoke`)."""
    if multi_turn:
        return _measure(TOOLS, *(SMOKE if mode == "smoke" else PLANS[mode][3]))
    if mode == "smoke":
        return _measure(WORKERS, *SMOKE)
    one, two, grouped, tools = PLANS[mode]
    raw = _measure(CONTENDERS, *one)
    raw.update(_measure(REUSE, *two))
    raw.update(_measure(GROUPED, *grouped))
    raw.update(_measure(TOOLS, *tools))
    return raw


def _measure(names, warmup: int, chunk: int, rounds: int) -> dict:
    steps = warmup + chunk * rounds
    with tempfile.TemporaryDirectory(prefix="ptdsl-grpo-bench-") as tmp:
        workdir = Path(tmp)
        if set(names) - set(TOOLS):
            prepare(workdir, n_prompts=PROMPTS * steps + 8)
        else:  # the multi-turn workers only: they need the tool model, and the thread settings
            common.setup_env()
        if set(names) & set(TOOLS):
            multiturn.prepare(workdir, n_prompts=multiturn.PROMPTS * steps + 8)
        workers = [Worker(n, workdir, warmup, chunk, steps) for n in names]
        for w in workers:
            w.expect(("ready",))
        for w in workers:  # set-up and warmup, one at a time
            w.go()
            w.expect(("chunk",))
        for r in range(rounds):
            for w in (workers if r % 2 == 0 else workers[::-1]):
                w.go()
                w.expect(("chunk", "done"))
        for w in workers:
            if not w.done:
                w.go()
                w.expect(("done",))
            w.p.stdin.close()
            w.p.wait()
        return {w.name: {"records": [r for r in w.records if not r["warmup"]], "chunk": chunk, **w.done}
                for w in workers}


def summarise(raw: dict) -> dict:
    out = {}
    for name, d in raw.items():
        recs = d["records"] if name not in REUSE else _pairs(d["records"])
        out[name] = {
            "step": common.summarise([r["step"] for r in recs]),
            "generation": common.summarise([r["gen"] for r in recs]),
            "reward": common.summarise([r["reward"] for r in recs]),
            "train": common.summarise([r["step"] - r["gen"] - r["reward"] for r in recs]),
            "peak_rss_mb": d.get("peak_rss_mb"),
        }
        if name in TOOLS:  # what the episodes did: tool calls per episode, over the measured steps
            episodes = len(recs) * multiturn.PROMPTS * multiturn.GROUP
            out[name]["tool_calls"] = sum(r["tools"] for r in recs)
            out[name]["tool_calls_per_episode"] = out[name]["tool_calls"] / max(episodes, 1)
            out[name]["round_medians"] = [common.summarise([r["step"] for r in recs[i:i + d["chunk"]]])["median"]
                                          for i in range(0, len(recs), d["chunk"])]
    return out


def _pairs(records: list[dict]) -> list[dict]:
    """With num_iterations = 2 a generation serves two steps: the mean of each (sampling,
    reusing) pair of steps, per step, so that every summarised value covers one generation."""
    return [{k: (a[k] + b[k]) / 2 for k in ("step", "gen", "reward")} for a, b in zip(records[::2], records[1::2])]


PHASES = ("step", "generation", "reward", "train")


def markdown(s: dict, mode: str) -> str:
    lines = [f"## {SECTION}", "",
             f"Tiny Llama-style model (hidden 128, 4 layers, vocab 1024, random weights), {PROMPTS} prompts × "
             f"{GROUP} completions = {PROMPTS * GROUP} completions per step, prompts {PROMPT_LEN} tokens, exactly "
             f"{NEW_TOKENS} new tokens (EOS stopping disabled with `min_new_tokens`), temperature 1.0, top_p 1.0, "
             "top_k 0, transformers `generate`, β = 0, constant reward, AdamW + clipping. Each contender in its own "
             "process, alternated in rounds; milliseconds per optimizer step, median [quartiles] over "
             f"{s['trl']['step']['n']} steps each" + common.mode_note(mode == "quick", mode == "smoke") + ".",
             ""]
    rows = []
    for name in CONTENDERS:
        d = s[name]
        rows.append([LABELS[name]] + [f"{d[p]['median']:.1f} [{d[p]['q1']:.1f}–{d[p]['q3']:.1f}]" for p in PHASES]
                    + [f"{d['peak_rss_mb']:.0f}" if d["peak_rss_mb"] else "?"])
    lines.append(common.table(["contender", "step", "generation", "reward", "train (fwd/bwd/opt + rest)",
                               "peak RSS MiB"], rows))
    lines += ["", common.table(["ratio (median / median)"] + list(PHASES),
                               [[f"{a} / {b}"] + [f"{s[a][p]['median'] / max(s[b][p]['median'], 1e-9):.2f}"
                                                  for p in PHASES]
                                for a, b in (("ptdsl", "trl"), ("hand", "trl"), ("ptdsl", "hand"))]), ""]
    r = s["ptdsl"]["step"]["median"] / s["trl"]["step"]["median"]
    g = s["ptdsl"]["generation"]["median"] / s["trl"]["generation"]["median"]
    t = s["ptdsl"]["train"]["median"] / s["trl"]["train"]["median"]
    th = s["ptdsl"]["train"]["median"] / s["hand"]["train"]["median"]
    gen_share = s["ptdsl"]["generation"]["median"] / s["ptdsl"]["step"]["median"]
    lines += ["What the numbers say:",
              f"- ptdsl's whole GRPO step is {r:.2f}× TRL's (target ≤ 0.8×: {'met' if r <= 0.8 else 'missed'}); "
              f"generation {g:.2f}×, the training half {t:.2f}×.",
              f"- Generation is {gen_share:.0%} of ptdsl's step. All three call the same `generate` with the same "
              "settings and a KV cache; TRL's call runs with the model in train mode, under `no_grad` rather than "
              "`inference_mode`, and through accelerate's forward wrapper (together ~10% in isolation); any larger "
              "gap is measured in TRL's process, not explained by those.",
              f"- The training half: ptdsl is {th:.2f}× the hand-written step. TRL's is slower: it scores every "
              "prompt+completion position, computes entropy and metrics, and (its default) uses gradient "
              "checkpointing; ptdsl and the hand-written step score completion positions only.",
              "- The reward is a constant function: its phase only shows each contender's call overhead.",
              "- Peak RSS includes each framework's imports (TRL pulls in more modules).",
              "- Tiny-model steps are dominated by per-op overhead, so they are very sensitive to other load on the "
              "machine (with 2 OpenMP threads on a busy 2-core machine, steps ran up to 6× slower): quote only runs "
              "made on an idle machine."]
    return "\n".join(lines + _reuse_markdown(s) + _grouped_markdown(s))


def _reuse_markdown(s: dict) -> list[str]:
    rows = [[LABELS[name]] + [f"{s[name][p]['median']:.1f} [{s[name][p]['q1']:.1f}–{s[name][p]['q3']:.1f}]"
                              for p in PHASES] + [f"{s[name]['peak_rss_mb']:.0f}" if s[name]["peak_rss_mb"] else "?"]
            for name in REUSE]
    r = s["ptdsl_mu2"]["step"]["median"] / s["trl_mu2"]["step"]["median"]
    return ["", "### num_iterations = 2: each generation feeds two optimizer steps", "",
            "The same setup with `num_iterations = 2` on both sides (ptdsl: `update passes = 2`, old log-probs "
            "recorded after sampling; TRL: `GRPOConfig(num_iterations=2)`, `old_per_token_logps`). Milliseconds per "
            f"optimizer step: median [quartiles] of the mean of each (sampling, reusing) pair of steps, over "
            f"{s['trl_mu2']['step']['n']} pairs each.", "",
            common.table(["contender", "step", "generation", "reward", "train (fwd/bwd/opt + rest)", "peak RSS MiB"],
                         rows), "",
            f"- ptdsl's step is {r:.2f}× TRL's with num_iterations = 2 (target ≤ 0.7×: "
            f"{'met' if r <= 0.7 else 'missed'})."]


def _grouped_markdown(s: dict) -> list[str]:
    rows = [[LABELS[name]] + [f"{s[name][p]['median']:.1f} [{s[name][p]['q1']:.1f}–{s[name][p]['q3']:.1f}]"
                              for p in PHASES] + [f"{s[name]['peak_rss_mb']:.0f}" if s[name]["peak_rss_mb"] else "?"]
            for name in GROUPED]
    ratio = {p: s["ptdsl_n8"][p]["median"] / max(s["trl_n8"][p]["median"], 1e-9) for p in PHASES}
    return ["", f"### n = {BIG_GROUP}, prompts {LONG_PROMPT_LEN} tokens (4× the completion)", "",
            f"The same setup with {PROMPTS} prompts × {BIG_GROUP} completions = {PROMPTS * BIG_GROUP} completions "
            f"per step and {LONG_PROMPT_LEN}-token prompts; ptdsl's generation includes its shared prompt prefill. "
            f"Milliseconds per optimizer step, median [quartiles] over {s['trl_n8']['step']['n']} steps each.", "",
            common.table(["contender", "step", "generation", "reward", "train (fwd/bwd/opt + rest)", "peak RSS MiB"],
                         rows), "",
            common.table(["ratio (median / median)"] + list(PHASES),
                         [["ptdsl_n8 / trl_n8"] + [f"{ratio[p]:.2f}" for p in PHASES]]), "",
            f"- Generation {ratio['generation']:.2f}× TRL's (target ≤ 0.7×: "
            f"{'met' if ratio['generation'] <= 0.7 else 'missed'}); the training half {ratio['train']:.2f}× "
            f"(target ≤ 0.5×: {'met' if ratio['train'] <= 0.5 else 'missed'}); "
            f"the whole step {ratio['step']:.2f}×."]


def multi_turn_markdown(s: dict, mode: str) -> str:
    """The multi-turn table (empty when the run left it out: the default smoke run)."""
    if not set(TOOLS) <= set(s):
        return ""
    p, t, tn = (s[n] for n in TOOLS)
    rows = [[LABELS[n]] + [f"{s[n][k]['median']:.1f} [{s[n][k]['q1']:.1f}–{s[n][k]['q3']:.1f}]" for k in PHASES]
            + [f"{s[n]['tool_calls_per_episode']:.2f} ({s[n]['tool_calls']})",
               f"{s[n]['peak_rss_mb']:.0f}" if s[n]["peak_rss_mb"] else "?"] for n in TOOLS]
    ratios = {b: {k: p[k]["median"] / max(s[b][k]["median"], 1e-9) for k in PHASES} for b in TOOLS[1:]}
    per_round = {b: [x / y for x, y in zip(p["round_medians"], s[b]["round_medians"])] for b in TOOLS[1:]}
    said = [f"{ratios[b]['step']:.2f}× {what} (target ≤ 0.8×: {'met' if ratios[b]['step'] <= 0.8 else 'missed'}; "
            f"per round of alternation, the sides' medians over the same stretch of time: "
            f"{min(per_round[b]):.2f}–{max(per_round[b]):.2f} over {len(per_round[b])} rounds)"
            for b, what in zip(TOOLS[1:], ("TRL's with its defaults", "TRL's without gradient checkpointing"))]
    note = common.mode_note(mode == "quick", mode == "smoke")
    return "\n".join([
        "", "### Multi-turn episodes with a tool: `grpo_tools` vs GRPOTrainer(environment_factory=…)", "",
        multiturn.settings_line() + " Each side in its own process, alternated in rounds; milliseconds per "
        f"optimizer step, median [quartiles] over {t['step']['n']} steps each{note}.", "",
        common.table(["contender", "step", "generation", "reward", "train (fwd/bwd/opt + rest)",
                      "tool calls / episode (calls)", "peak RSS MiB"], rows), "",
        common.table(["ratio (median / median)"] + list(PHASES),
                     [[f"ptdsl_tools / {b}"] + [f"{ratios[b][k]:.2f}" for k in PHASES] for b in TOOLS[1:]]), "",
        f"- ptdsl's multi-turn step is {said[0]}, and {said[1]}.",
        f"- All played real multi-turn episodes: {p['tool_calls_per_episode']:.2f} (ptdsl), "
        f"{t['tool_calls_per_episode']:.2f} and {tn['tool_calls_per_episode']:.2f} (TRL) tool calls per episode, "
        "counted by the environment class."])


def main(argv=None):
    ap = common.cli(__doc__.splitlines()[0])
    ap.add_argument("--multi-turn", action="store_true",
                    help="only the multi-turn configuration (grpo_tools vs TRL's environment_factory)")
    ap.add_argument("--worker", choices=ALL_WORKERS, help=argparse_hidden())
    ap.add_argument("--workdir")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, Path(args.workdir), args.warmup, args.chunk, args.steps)
        return
    common.setup_env(args.smoke)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    raw = measure(mode, args.multi_turn)
    s = summarise(raw)
    md = multi_turn_markdown(s, mode) if args.multi_turn else markdown(s, mode) + "\n" + multi_turn_markdown(s, mode)
    data = {"setup": {"prompts": PROMPTS, "group": GROUP, "prompt_tokens": PROMPT_LEN, "new_tokens": NEW_TOKENS,
                      "big_group": BIG_GROUP, "long_prompt_tokens": LONG_PROMPT_LEN,
                      "quick": args.quick, "mode": mode, "multi_turn_only": args.multi_turn,
                      "multi_turn": {"prompts": multiturn.PROMPTS, "group": multiturn.GROUP,
                                     "max_tokens": multiturn.MAX_TOKENS, "max_turns": multiturn.MAX_TURNS,
                                     "lr": multiturn.LR}}, "machine": common.machine_info(), "summary": s,
            "steps_ms": {k: v["records"] for k, v in raw.items()}}
    common.emit(args.json, SECTION, md, data)


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
