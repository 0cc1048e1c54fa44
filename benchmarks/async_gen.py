"""Asynchronous generation: the GRPO step time with `--async-staleness 0` (generate, then
train) and `--async-staleness 1` (a worker thread samples the next batch, one policy version
behind, while the trainer trains), side by side.

    python benchmarks/async_gen.py [--quick | --smoke] [--json PATH]

Setup: the embedded default (`ptdsl.train("grpo")`: the tiny model, its arithmetic prompts and
its `accuracy` verifier), 2 prompts × 4 samples per step, the embedded rollout budget. A step
is timed through the public callbacks, `on_step_begin` to `on_step_end`: with K = 0 it holds
the sampling of its batch, with K = 1 only the wait for the worker's batch (if it is not ready)
and the training. Generation is also timed on its own (time inside transformers' `generate`,
in whichever thread: with K = 1 it runs beside the trainer, so it may take longer than alone).
The first step of each run (K = 1: the only one that waits for a whole
batch) is not counted. The runs alternate (K = 0, K = 1, K = 0, …) so that drift in machine
load hits both alike. The ratio that counts is the mean step time (throughput), K = 1 over
K = 0: below 1 where sampling and training overlap. On a CPU the overlap is limited by the
cores (two here, shared) and by the GIL: transformers' generate spends much of a tiny model's
step in Python, which does not run while the trainer's Python runs.

Seen on the 2-core machine, loaded by other jobs (load average 3-8), 3 rounds × 8 counted steps:
with OMP_NUM_THREADS=1, K = 0 42 ms and K = 1 49 ms a step (ratio 1.16: the tiny model's step is
Python, and the two threads take turns at the GIL; generate took 1.8× as long in the worker);
with torch's default two threads, K = 0 388-1939 ms and K = 1 132-327 ms (ratios 0.17-0.43), both
slowed ~10× by OpenMP threads waiting for a busy core, the trainer's generate more than the
worker's. Overlap is for models whose ops, not Python, fill the step (GPUs, larger models).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # this checkout's ptdsl, not an installed copy
import common  # noqa: E402

BENCHMARK = True
SECTION = "Asynchronous generation: GRPO step time with --async-staleness 0 and 1"
CONTENDERS = (0, 1)
LABELS = {0: "`--async-staleness 0` (synchronous)", 1: "`--async-staleness 1` (worker one version ahead)"}
PROMPTS, GROUP = 2, 4


GENERATE_MS = [0.0]  # time inside transformers' generate, whichever thread called it


def _patch_generate():
    def add(ms: float) -> None:
        GENERATE_MS[0] += ms
    common.time_generate(add)


class StepClock:
    """Wall ms of each step, from on_step_begin to on_step_end, and each step's staleness."""

    def __init__(self):
        self.times, self.staleness, self.t0 = [], [], 0.0

    def on_step_begin(self, step):
        self.t0 = time.perf_counter()

    def on_step_end(self, step, metrics):
        self.times.append((time.perf_counter() - self.t0) * 1000)
        self.staleness.append(metrics.get("async/staleness", 0.0))


def run(staleness: int, steps: int, max_tokens: int | None, out: Path) -> StepClock:
    import ptdsl
    clock = StepClock()
    rollout = {"max_tokens": max_tokens} if max_tokens else {}
    ptdsl.train("grpo", output=str(out), steps=steps, batch_size=PROMPTS, max_examples=PROMPTS * steps,
                params={"num_generations": GROUP}, rollout=rollout, quiet=True, async_staleness=staleness,
                callbacks=[clock])
    return clock


def measure(rounds: int, steps: int, max_tokens: int | None) -> dict:
    times = {k: [] for k in CONTENDERS}
    staleness = {k: [] for k in CONTENDERS}
    generate = {k: [] for k in CONTENDERS}  # ms inside generate per batch, each run's mean
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for k in CONTENDERS:
                GENERATE_MS[0] = 0.0
                clock = run(k, steps, max_tokens, Path(tmp) / f"k{k}-{r}")
                generate[k].append(GENERATE_MS[0] / steps)  # one batch per step
                times[k] += clock.times[1:]  # the first step (K = 1: waits for a whole batch) is not counted
                staleness[k] += clock.staleness[1:]
    return {str(k): {**common.summarise(times[k]), "mean": statistics.fmean(times[k]),
                     "staleness": statistics.fmean(staleness[k]), "generate_ms": statistics.fmean(generate[k])}
            for k in CONTENDERS}


def markdown(res: dict, mode: str, settings: str) -> str:
    lines = [f"## {SECTION}", "", f"Mode: {mode}{common.mode_note(quick=mode == 'quick', smoke=mode == 'smoke')}. "
             f"{settings}. Wall ms per step (the first step of each run not counted).", ""]
    body = [[LABELS[k], f"{res[str(k)]['mean']:.1f}", common.fmt_ms(res[str(k)]), common.fmt_spread(res[str(k)]),
             f"{res[str(k)]['generate_ms']:.1f}", f"{res[str(k)]['staleness']:.2f}", res[str(k)]["n"]]
            for k in CONTENDERS]
    lines.append(common.table(["run", "mean ms", "median ms", "spread", "generate ms per batch", "mean staleness",
                               "steps"], body))
    ratio = res["1"]["mean"] / res["0"]["mean"]
    gen = res["1"]["generate_ms"] / res["0"]["generate_ms"]
    lines += ["", f"- mean step time, K = 1 / K = 0: {ratio:.2f} (below 1: sampling overlaps training).",
              f"- time inside generate per batch, K = 1 / K = 0: {gen:.2f}. Not 1: the same sampling took another "
              "time in the worker than in the trainer's loop, and the step ratio holds that difference too, not "
              "the overlap alone."]
    return "\n".join(lines)


def main(argv=None):
    ap = common.cli(__doc__.splitlines()[0])
    args = ap.parse_args(argv)
    common.setup_env(args.smoke)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    rounds, steps, max_tokens = {"smoke": (1, 3, 4), "quick": (1, 5, None), "full": (3, 9, None)}[mode]
    _patch_generate()
    res = measure(rounds, steps, max_tokens)
    settings = (f"embedded grpo, {PROMPTS} prompts × {GROUP} samples, "
                f"{f'{max_tokens} new tokens at most' if max_tokens else 'the embedded rollout budget'}, "
                f"{rounds} round(s) of {steps} steps per run")
    common.emit(args.json, SECTION, markdown(res, mode, settings),
                {"results": res, "ratio": res["1"]["mean"] / res["0"]["mean"], "mode": mode,
                 "machine": common.machine_info()})


if __name__ == "__main__":
    main()
