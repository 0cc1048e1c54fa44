"""Shared helpers for the benchmarks: models from a config, deterministic synthetic data,
an interleaved timer, peak-RSS measurement in a subprocess, machine/version info, and the
`--quick` / `--json PATH` interface every benchmark script implements.

A benchmark script is a module under benchmarks/ with `BENCHMARK = True` at module level
and a `main()` that accepts `--quick`, `--smoke` and `--json PATH`; it writes
{"section": title, "markdown": section text, "data": raw numbers} to PATH. run_all.py
discovers scripts by that marker. `--smoke` runs one round on the tiny model in seconds and
writes the same JSON and markdown, marked SMOKE_NOTE: the default test suite runs every
script that way (tests/benchmarks/test_benchmarks_smoke.py), so a broken benchmark fails CI.
ptdsl is driven through its public API only (`ptdsl.train` with `callbacks=`, `ptdsl.compile`);
the same test fails on imports of private ptdsl names.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # this checkout's ptdsl, not an installed copy
    sys.path.insert(0, str(HERE.parent))

# PERF.md's two model sizes: Llama-style, random weights, built from a config
SIZES = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                 vocab_size=1024, length=64),
    "small": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                  vocab_size=8192, length=128),
}
PAD, BOS, EOS, FIRST = 0, 1, 2, 3   # special token ids; ordinary tokens are FIRST..vocab-1


def setup_env(smoke: bool = False):
    """Offline, deterministic thread count (every contender sees the same). A smoke run
    (which only checks that the script runs) uses one OpenMP thread in every process it
    starts: on a busy machine torch's threads spin at barriers while a sibling waits for a
    core, and smoke steps ran 10-40× slower with two."""
    if smoke:
        os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DISABLE_TQDM", "1")


def make_model(size: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM
    import torch
    s = dict(SIZES[size])
    s.pop("length")
    torch.manual_seed(seed)
    cfg = LlamaConfig(**s, num_key_value_heads=s["num_attention_heads"], max_position_embeddings=1024,
                      pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def frozen_copy(model):
    import copy
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def preference_data(size: str, n: int, seed: int = 0):
    """n preference triples of token ids: prompt L/2, chosen L/2, rejected L/2 tokens (so every
    chosen and rejected sequence is exactly L tokens, no padding anywhere)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    L, V = SIZES[size]["length"], SIZES[size]["vocab_size"]
    out = []
    for _ in range(n):
        ids = torch.randint(FIRST, V, (3 * L // 2,), generator=g).tolist()
        out.append((ids[: L // 2], ids[L // 2: L], ids[L:]))
    return out


def word_tokenizer(vocab_size: int):
    """A local word-level fast tokenizer whose words are `t<id>`: text built from ids
    tokenises back to exactly those ids (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS}
    vocab.update({f"t{i}": i for i in range(FIRST, vocab_size)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    return tok


def text(ids) -> str:
    return " ".join(f"t{i}" for i in ids)


SMOKE_NOTE = "smoke: not a measurement"


def mode_note(quick: bool = False, smoke: bool = False) -> str:
    """What to append to a section's settings line in --quick or --smoke mode."""
    return f" (**{SMOKE_NOTE}**)" if smoke else " (**--quick: not a measurement**)" if quick else ""


# ---- timing --------------------------------------------------------------------------

class Timed(NamedTuple):
    """What a step function returns when it times itself (a step observed through
    ptdsl.train's callbacks): `interleaved` then records these, not its own stopwatch."""
    wall_ms: float
    cpu_ms: float


def summarise(times_ms: list[float]) -> dict:
    t = sorted(times_ms)
    q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
    return {"median": statistics.median(t), "min": t[0], "max": t[-1], "q1": q[0], "q3": q[2], "n": len(t)}


def interleaved(contenders: dict, rounds: int, warmup: int = 2) -> dict:
    """Time each contender's step function round-robin (A, B, C, A, B, C, …) so that drift in
    machine load hits all of them alike. Each function takes the step index. Returns
    {name: summarise(wall ms per step) + {"cpu": summarise(process CPU ms per step)}}; the
    first `warmup` rounds are not counted. A function that returns `Timed` is timed by itself. CPU time (all threads, user + system) separates
    a step's own work from waiting for the CPU, but only with one thread: torch's OpenMP
    threads spin at barriers while a sibling is descheduled, so on a busy machine a
    multi-threaded step's CPU time inflates along with its wall time."""
    wall = {k: [] for k in contenders}
    cpu = {k: [] for k in contenders}
    for r in range(warmup + rounds):
        for name, fn in contenders.items():
            c0, t0 = time.process_time(), time.perf_counter()
            own = fn(r)
            dt, dc = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
            if isinstance(own, Timed):
                dt, dc = own
            if r >= warmup:
                wall[name].append(dt)
                cpu[name].append(dc)
    return {k: {**summarise(wall[k]), "cpu": summarise(cpu[k])} for k in contenders}


def fmt_ms(s: dict) -> str:
    return f"{s['median']:.1f}"


def fmt_spread(s: dict) -> str:
    return f"{s['q1']:.1f}–{s['q3']:.1f} (min {s['min']:.1f}, max {s['max']:.1f})"


# ---- memory -------------------------------------------------------------------------

def time_generate(add_ms) -> None:
    """Time every call of transformers' `generate` in this process, whichever thread makes it:
    `add_ms(milliseconds)` after each (the generation share of a step)."""
    from transformers.generation.utils import GenerationMixin
    original = GenerationMixin.generate

    def generate(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            add_ms((time.perf_counter() - t0) * 1000)

    GenerationMixin.generate = generate


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_json_subprocess(args: list[str], timeout: float = 1800) -> dict:
    """Run `python <args>` in a fresh process; it prints one JSON object as its last stdout line."""
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                       cwd=str(HERE.parent), env={**os.environ, "PYTHONPATH": os.pathsep.join(
                           [str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])})
    if p.returncode != 0:
        raise RuntimeError(f"subprocess {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---- machine and versions -----------------------------------------------------------

def machine_info() -> dict:
    cpu = platform.processor() or "?"
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("?", "", "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    info = {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(),
            "load average (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in os.getloadavg())}
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    for mod in ("torch", "transformers", "trl", "accelerate", "ptdsl"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is reported, not fatal
            info[mod] = "not installed"
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        info["ptdsl_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent,
                                              capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return info


# ---- the script interface -----------------------------------------------------------

def cli(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="few steps, tiny model only (development)")
    ap.add_argument("--smoke", action="store_true", help="one round, tiny: checks the script runs (the test suite)")
    ap.add_argument("--json", metavar="PATH", help="write {section, markdown, data} to PATH")
    return ap


def emit(path: str | None, section: str, markdown: str, data: dict):
    print(markdown)
    if path:
        Path(path).write_text(json.dumps({"section": section, "markdown": markdown, "data": data}, indent=1))


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
