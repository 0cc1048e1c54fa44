"""DPO step: ptdsl vs a minimal hand-written torch step vs TRL 1.16's DPOTrainer, side by side.

    python benchmarks/dpo.py [--quick] [--json PATH]

Setup (PERF.md's): Llama-style models built from a config with random weights (tiny ≈1.3M,
small ≈20M), batches of 8 preference pairs of exact-length sequences (prompt L/2 + completion
L/2 tokens, L = 64 tiny / 128 small), AdamW (lr 1e-6), gradient clipping at 1.0, β = 0.1;
fp32 and bf16 autocast.

Contenders (each with its own copy of the same initial model, reference and optimizer):
- hand:        one concatenated forward over chosen+rejected, the reference under no_grad,
               full log-softmax over the completion positions, AdamW, clip.
- policy_only: the same with the reference log-probs precomputed before the timed loop: the
               floor of any step with a precomputed reference.
- ptdsl_live:  the body of ptdsl's training loop (runtime/loop.py: build_batch, global counts,
               loss_inputs, the compiled loss, backward, metrics .item(), clip, AdamW), with
               the reference run every step (`precompute=False`).
- ptdsl:       the same with ptdsl's default reference precompute (runtime/precompute.py).
- trl_live:    TRL's DPOTrainer built through its public API (in-memory model, explicit
               ref_model, a local word-level tokenizer, an in-memory `datasets.Dataset`,
               HF_HUB_OFFLINE=1); a step is `trainer.training_step(model, batch)` on a batch
               from `trainer.get_train_dataloader()` (collated before timing), then
               `accelerator.clip_grad_norm_`, `optimizer.step()`, `lr_scheduler.step()`,
               `zero_grad`: the body of Trainer's inner loop without logging/callbacks
               (PERF.md: those cost TRL 4–5 ms per step).
- trl:         the same with `precompute_ref_log_probs=True`.
TRL's default is the live reference, so the "ptdsl default / TRL default" ratio is ptdsl / trl_live.

Timing: all contenders of one (size, precision) run in one subprocess, interleaved step by step
(A, B, C, …, A, B, C, …) after warm-up rounds; medians and quartiles of the per-step wall time,
and the median process CPU time. All contenders
use the same AdamW (ptdsl's loop._adamw: fused where torch has it; TRL uses its default, which
the report names). The timing process keeps glibc's default malloc settings for everyone:
`ptdsl.train` turns malloc's mmap path off at start-up (runtime/alloc.py), which in a shared
process would speed up every contender alike; the ptdsl memory processes do turn it on.
Peak memory: each (size, precision, contender) runs a few steps in its own subprocess and reads
getrusage(RUSAGE_SELF).ru_maxrss; every such process imports the same libraries and builds the
policy and the reference, so the numbers differ only by what the step itself allocates.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

BENCHMARK = True
SECTION = "DPO step: ptdsl vs hand-written torch vs TRL"
CONTENDERS = ["hand", "policy_only", "ptdsl_live", "ptdsl", "trl_live", "trl"]
LABELS = {"hand": "hand-written torch (live reference)",
          "policy_only": "policy only (precomputed reference; the floor)",
          "ptdsl_live": "ptdsl, live reference (`precompute=False`)",
          "ptdsl": "ptdsl, reference precompute (default)",
          "trl_live": "TRL DPOTrainer, live reference (default)",
          "trl": "TRL DPOTrainer, `precompute_ref_log_probs=True`"}
PAIRS, BETA, LR = 8, 0.1, 1e-6
# (size, precision) → timed rounds; warm-up rounds are extra. Chosen so the full run takes
# ~10 minutes on the 2-core reference machine (small fp32: 6 contenders ≈ 9 s per round).
FULL = {("tiny", "fp32"): 40, ("tiny", "bf16"): 40, ("small", "fp32"): 12, ("small", "bf16"): 16}
QUICK = {("tiny", "fp32"): 6, ("tiny", "bf16"): 6}
WARMUP = 2
MEM_STEPS = 3


# ---- contenders -------------------------------------------------------------------

class Examples:
    def __init__(self, size, n_batches):
        from ptdsl.runtime.data import Example
        triples = C.preference_data(size, n_batches * PAIRS)
        self.triples = triples
        self.examples = [Example(i, "", p, {"chosen": c, "rejected": r}) for i, (p, c, r) in enumerate(triples)]
        self.batches = [self.examples[b * PAIRS:(b + 1) * PAIRS] for b in range(n_batches)]


def adamw(params):
    """The optimizer ptdsl's loop builds (loop._adamw: the fused AdamW kernel where torch has
    one), given to the hand-written steps too: the comparison holds the optimizer fixed."""
    import torch
    try:
        from ptdsl.runtime.loop import _adamw
    except ImportError:  # an older runtime: plain AdamW
        return torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    return _adamw(params, LR, 0.0)


def autocast(precision):
    import torch
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def _seq_logps(model, ids, P):
    import torch
    logits = model(ids).logits[:, P - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, ids[:, P:, None])[..., 0].sum(-1)


def _ids(exs):
    import torch
    return torch.tensor([e.prompt_ids + e.completions[s] for s in ("chosen", "rejected") for e in exs])


def make_hand(size, precision, data, policy_only=False):
    import torch
    policy = C.make_model(size)
    ref = C.frozen_copy(policy)
    opt = adamw(list(policy.parameters()))
    P = len(data.examples[0].prompt_ids)
    startup = 0.0
    pre = None
    if policy_only:  # the reference's sequence log-probs, once, before training
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(precision):
            pre = [_seq_logps(ref, _ids(exs), P) for exs in data.batches]
        startup = time.perf_counter() - t0

    def step(i):
        exs = data.batches[i % len(data.batches)]
        ids = _ids(exs)
        with autocast(precision):
            pol = _seq_logps(policy, ids, P)
            if pre is None:
                with torch.no_grad():
                    r = _seq_logps(ref, ids, P)
            else:
                r = pre[i % len(pre)]
            B = len(exs)
            z = BETA * ((pol[:B] - r[:B]) - (pol[B:] - r[B:]))
            loss = -torch.nn.functional.logsigmoid(z).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step, startup


class _OneProcess:
    """What loop._global_counts needs of accelerate in a single process."""
    device = "cpu"
    num_processes = 1

    def reduce(self, t, op):
        return t


def make_ptdsl(size, precision, data, precompute: bool):
    import torch
    import ptdsl
    from ptdsl.runtime.loop import _global_counts
    from ptdsl.runtime.precompute import precompute as run_precompute
    from ptdsl.runtime.queries import Trunk
    from ptdsl.runtime.setup import Models
    from ptdsl.runtime.step import StepContext, build_batch, loss_inputs
    compiled = ptdsl.compile("dpo")
    policy = C.make_model(size)
    ref = C.frozen_copy(policy)
    tok = type("Tok", (), {"pad_token_id": C.PAD})()
    models = Models(policy, tok, frozen={"reference": ref})
    models.trunk = Trunk(policy)  # as loop.py: the policy as one module returning hidden states
    cache, positions, startup = {}, {}, 0.0
    if precompute:  # what ptdsl.train does by default (16 examples per forward, no disk cache here)
        t0 = time.perf_counter()
        pre = [q for q in compiled.plan.queries if q.precomputable]
        positions = {e.index: i for i, e in enumerate(data.examples)}
        with autocast(precision):
            cache = run_precompute(pre, models.frozen, data.examples, compiled.graph.graph["sets"], C.PAD, "cpu",
                                   16, None, {"reference": "bench"}, lambda it, **kw: it)
        startup = time.perf_counter() - t0
    ctx = StepContext(compiled, models, "cpu", cache, positions)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = adamw(params)
    state: dict = {}
    acc = _OneProcess()

    def step(i):
        batch = build_batch(compiled, data.batches[i % len(data.batches)])
        norm = _global_counts(compiled, [batch], acc)
        with autocast(precision):
            inputs = loss_inputs(ctx, batch)
            loss, metrics = compiled.loss(inputs, normalizers=norm, state=state)
        loss.backward()
        out = loss.item()
        for v in metrics.values():
            v.float().item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out
    return step, startup


startup_info: dict = {}


def make_trl(size, precision, data, precompute: bool, n_steps: int):
    import logging
    import warnings
    from datasets import Dataset, disable_progress_bar
    from trl import DPOConfig, DPOTrainer
    disable_progress_bar()
    warnings.filterwarnings("ignore")
    logging.getLogger("trl").setLevel(logging.ERROR)
    tok = C.word_tokenizer(C.SIZES[size]["vocab_size"])
    # the completion text starts with a space so "prompt + completion" splits at the boundary;
    # TRL appends EOS, so the last token is left out of the text: L/2 completion tokens
    ds = Dataset.from_dict({"prompt": [C.text(p) for p, _, _ in data.triples],
                            "chosen": [" " + C.text(c[:-1]) for _, c, _ in data.triples],
                            "rejected": [" " + C.text(r[:-1]) for _, _, r in data.triples]})
    policy = C.make_model(size)
    ref = C.frozen_copy(policy)
    import tempfile
    cfg = DPOConfig(output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=PAIRS,
                    max_length=None, beta=BETA, learning_rate=LR, max_grad_norm=1.0, lr_scheduler_type="constant",
                    warmup_steps=0, weight_decay=0.0, report_to=[], logging_steps=10 ** 9, save_strategy="no",
                    precompute_ref_log_probs=precompute, bf16=precision == "bf16", use_cpu=True,
                    disable_tqdm=True, dataloader_num_workers=0, seed=0)
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=policy, ref_model=ref, args=cfg, train_dataset=ds, processing_class=tok)
    batches = list(trainer.get_train_dataloader())  # precompute (if on) happens by here
    startup = time.perf_counter() - t0
    trainer.create_optimizer_and_scheduler(num_training_steps=n_steps)
    startup_info["trl_optimizer"] = f"{type(trainer.optimizer).__name__}{trainer.optimizer.defaults}"
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, read by training_step
    model = trainer.model
    model.train()

    def step(i):
        batch = batches[i % len(batches)]
        loss = trainer.training_step(model, batch)
        trainer.accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad(set_to_none=True)
        return float(loss)
    return step, startup


def build(name, size, precision, data, n_steps):
    if name in ("hand", "policy_only"):
        return make_hand(size, precision, data, policy_only=name == "policy_only")
    if name in ("ptdsl", "ptdsl_live"):
        return make_ptdsl(size, precision, data, precompute=name == "ptdsl")
    return make_trl(size, precision, data, precompute=name == "trl", n_steps=n_steps)


# ---- workers (one subprocess each) -------------------------------------------------

def worker_time(size, precision, rounds, contenders):
    data = Examples(size, WARMUP + rounds)
    fns, startup = {}, {}
    for name in contenders:
        fns[name], startup[name] = build(name, size, precision, data, WARMUP + rounds)
    res = C.interleaved(fns, rounds, WARMUP)
    return {"steps": res, "startup_s": startup, "info": startup_info}


def worker_mem(size, precision, name):
    import torch  # noqa: F401 - every memory process imports the same libraries
    import datasets  # noqa: F401
    import trl  # noqa: F401
    import ptdsl  # noqa: F401
    if name.startswith("ptdsl"):  # as ptdsl.train does at start-up (runtime/alloc.py)
        from ptdsl.runtime.alloc import tune_malloc
        tune_malloc()
    data = Examples(size, MEM_STEPS)
    base = C.peak_rss_mb()
    fn, _ = build(name, size, precision, data, MEM_STEPS)
    for i in range(MEM_STEPS):
        fn(i)
    return {"peak_mb": C.peak_rss_mb(), "before_models_mb": base}


# ---- driver -------------------------------------------------------------------------

def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    out = {"quick": quick, "configs": {}, "rounds": {f"{s} {p}": n for (s, p), n in plan.items()}, "warmup": WARMUP,
           "mem_steps": MEM_STEPS}
    for (size, precision), rounds in plan.items():
        key = f"{size} {precision}"
        print(f"[dpo] timing {key}: {rounds} rounds × {len(CONTENDERS)} contenders", file=sys.stderr, flush=True)
        t = C.run_json_subprocess([__file__, "--worker", "time", "--size", size, "--precision", precision,
                                   "--rounds", str(rounds)])
        mem = {}
        for name in CONTENDERS:
            print(f"[dpo] memory {key} {name}", file=sys.stderr, flush=True)
            mem[name] = C.run_json_subprocess([__file__, "--worker", "mem", "--size", size, "--precision",
                                               precision, "--contender", name])
        out["configs"][key] = {"size": size, "precision": precision, **t, "memory": mem,
                               "tokens_per_step": 2 * PAIRS * C.SIZES[size]["length"]}
    return out


def ratio(cfg, a, b):
    return cfg["steps"][a]["median"] / cfg["steps"][b]["median"]


def cpu_ratio(cfg, a, b):
    return cfg["steps"][a]["cpu"]["median"] / cfg["steps"][b]["cpu"]["median"]


def markdown(data: dict) -> str:
    lines = [f"## {SECTION}", "",
             "Llama-style models from a config (tiny ≈1.3M params: hidden 128, 4 layers, vocab 1024, "
             "64 tokens; small ≈20M: hidden 384, 6 layers, vocab 8192, 128 tokens); 8 preference pairs of "
             "exact-length sequences per step; AdamW, clip 1.0, β = 0.1. Per-step wall time, contenders "
             f"interleaved step by step in one process after {data['warmup']} warm-up rounds; rounds per "
             f"configuration: {', '.join(f'{k} {v}' for k, v in data['rounds'].items())}"
             + (" (**--quick: not a measurement**)" if data.get("quick") else "") + ". Peak RSS: each "
             f"contender alone in its own process ({data['mem_steps']} steps), same imports and models. "
             "TRL is timed as `trainer.training_step` + clip + optimizer/scheduler step on batches from "
             "its own dataloader (its inner loop without logging callbacks). Every contender keeps glibc's "
             "default malloc settings while timed (ptdsl.train's start-up allocator tuning, runtime/alloc.py, "
             "would speed up all of them in one process); ptdsl's memory processes apply it, as train does. "
             f"TRL's optimizer: {_trl_opt(data)}. See the docstring of benchmarks/dpo.py.", ""]
    ratios = []
    for key, cfg in data["configs"].items():
        rows = []
        for name in CONTENDERS:
            s, m = cfg["steps"][name], cfg["memory"][name]
            rows.append([LABELS[name], C.fmt_ms(s), C.fmt_spread(s), f"{s['cpu']['median']:.1f}",
                         f"{cfg['tokens_per_step'] / s['median'] * 1000:,.0f}",
                         f"{m['peak_mb']:.0f}", f"{m['peak_mb'] - m['before_models_mb']:.0f}",
                         f"{cfg['startup_s'][name]:.1f}" if cfg["startup_s"][name] else "–"])
        lines += [f"### {key}", "", C.table(["contender", "median ms", "IQR (min, max) ms", "CPU ms", "tokens/s",
                                              "peak RSS MiB", "Δ over import RSS MiB", "start-up s"], rows), ""]
        r = {"ptdsl_live / hand": ratio(cfg, "ptdsl_live", "hand"),
             "ptdsl / policy_only": ratio(cfg, "ptdsl", "policy_only"),
             "ptdsl default / TRL default": ratio(cfg, "ptdsl", "trl_live"),
             "ptdsl / TRL precompute": ratio(cfg, "ptdsl", "trl"),
             "TRL default / hand": ratio(cfg, "trl_live", "hand"),
             "ptdsl peak RSS / TRL": cfg["memory"]["ptdsl"]["peak_mb"] / cfg["memory"]["trl_live"]["peak_mb"],
             "CPU: ptdsl_live / hand": cpu_ratio(cfg, "ptdsl_live", "hand"),
             "CPU: ptdsl / policy_only": cpu_ratio(cfg, "ptdsl", "policy_only")}
        cfg["ratios"] = r
        ratios.append([key] + [f"{v:.2f}" for v in r.values()])
    lines += ["### Ratios (medians)", "", C.table(["config", "ptdsl live / hand-written (target ≤ 1.05)",
                                                   "ptdsl precompute / policy-only (≤ 1.05)",
                                                   "ptdsl default / TRL default (≤ 0.65)",
                                                   "ptdsl / TRL precompute", "TRL default / hand-written",
                                                   "ptdsl peak RSS / TRL's (≤ 1)",
                                                   "CPU time: ptdsl live / hand-written",
                                                   "CPU time: ptdsl precompute / policy-only"], ratios), ""]
    lines += ["### What the numbers say", ""] + _verdict(data) + [""]
    return "\n".join(lines)


def _trl_opt(data) -> str:
    for cfg in data["configs"].values():
        if cfg.get("info", {}).get("trl_optimizer"):
            return cfg["info"]["trl_optimizer"]
    return "?"


def _floor_vs_trl(r, config) -> str:
    """How close the policy-only floor (no reference forward at all) itself is to the target:
    when TRL's default is cheap relative to it, 0.65× TRL is below what any DPO step can do."""
    floor = r["ptdsl default / TRL default"] / r["ptdsl / policy_only"]
    return (f"in {config} the policy-only floor (one policy forward/backward, no reference) is already "
            f"{floor:.2f}× TRL's default step, and ptdsl's default is {r['ptdsl / policy_only']:.2f}× that floor")


def _verdict(data) -> list[str]:
    out = []
    targets = [("ptdsl_live / hand", 1.05, "ptdsl (live reference) within 5% of the hand-written step"),
               ("ptdsl / policy_only", 1.05, "ptdsl with precompute within 5% of the policy-only floor"),
               ("ptdsl default / TRL default", 0.65, "ptdsl's default at or below 0.65× TRL's default"),
               ("ptdsl peak RSS / TRL", 1.0, "ptdsl's peak memory no higher than TRL's")]
    for key, limit, what in targets:
        vals = {k: c["ratios"][key] for k, c in data["configs"].items()}
        missed = {k: v for k, v in vals.items() if v > limit}
        span = f"{min(vals.values()):.2f}–{max(vals.values()):.2f}"
        out.append(f"- {what}: {'met' if not missed else 'missed in ' + ', '.join(missed)} (ratios {span}).")
        if missed and key == "ptdsl default / TRL default":
            out.append("  Why: " + "; ".join(_floor_vs_trl(data["configs"][k]["ratios"], k) for k in missed) + ".")
    t = [c["ratios"]["TRL default / hand"] for c in data["configs"].values()]
    out.append(f"- TRL's default step costs {min(t):.2f}–{max(t):.2f}× the hand-written one here "
               "(PERF.md measured 1.3–1.8×).")
    c = [c["ratios"]["CPU: ptdsl_live / hand"] for c in data["configs"].values()]
    out.append(f"- In CPU time (all threads) ptdsl live / hand-written is {min(c):.2f}–{max(c):.2f}. These "
               "timings need a quiet machine: with other processes on the 2 cores, torch's OpenMP threads "
               "spin at barriers while a sibling waits for a core, and wall and CPU time both inflate "
               "(up to 10× in development runs). Check the load average in the machine table.")
    out.append("- ptdsl computes the LM head only at completion positions, in tiles, and never materialises a "
               "[tokens × vocab] log-softmax (`TokenLogprobs`), which is how it can undercut the hand-written "
               "step, which projects every position; the rest of the step is the same model forward/backward "
               "and optimizer.")
    return out


def main():
    ap = C.cli(__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=["time", "mem"])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--contender", default="ptdsl")
    ap.add_argument("--only", help="comma-separated contenders (a --worker time run, for profiling)")
    args = ap.parse_args()
    C.setup_env()
    if args.worker == "time":
        import json
        names = args.only.split(",") if args.only else CONTENDERS
        print(json.dumps(worker_time(args.size, args.precision, args.rounds, names)))
        return
    if args.worker == "mem":
        import json
        print(json.dumps(worker_mem(args.size, args.precision, args.contender)))
        return
    t0 = time.time()
    data = run(args.quick)
    data["machine"] = C.machine_info()
    data["wall_s"] = round(time.time() - t0, 1)
    C.emit(args.json, SECTION, markdown(data), data)


if __name__ == "__main__":
    main()
