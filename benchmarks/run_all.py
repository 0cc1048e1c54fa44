"""Run every benchmark and write benchmarks/RESULTS.md.

    python benchmarks/run_all.py [--quick | --smoke] [--only NAME,...] [--output PATH]

A benchmark is a script under benchmarks/ listed in ORDER, or with `BENCHMARK = True` at
module level, that accepts `--quick`, `--smoke` and `--json PATH` and writes {"section", "markdown",
"data"} to PATH (see common.py). `--smoke` runs every script's smoke mode (one round, tiny: a
check that each runs, not a measurement; the test suite does the same, script by script). Known ones run in a fixed order (dpo, grpo, logprob_memory, compiler);
any other marked script runs after them; a missing one is skipped with a note. Each runs
in its own subprocess, one after another (never two at once: they time things). A failing
script is reported in RESULTS.md and does not stop the others.

Before each script of a full or quick run the 1-minute load average is read; above --max-load
(default 0.5) the run waits for it to fall (at most --max-wait seconds, then runs anyway and
says so): a busy machine distorts ratios. Each script's load is recorded in RESULTS.md, and the
previous RESULTS.md is kept below the new tables ("Earlier runs").

Budget: a full run took about 25 minutes on the 2-core reference machine before the long-prompt
configurations (dpo.py ~12 min then; now more than 25 min, so keep --timeout above that;
logprob_memory.py ~1 min, the rest as their scripts state); --quick takes a few minutes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common as C  # noqa: E402

ORDER = ["dpo", "grpo", "logprob_memory", "compiler"]
MARKER = re.compile(r"^BENCHMARK\s*=\s*True\s*$", re.M)


def discover() -> tuple[list[Path], list[str]]:
    marked = {p.stem: p for p in sorted(HERE.glob("*.py")) if MARKER.search(p.read_text(encoding="utf-8"))}
    marked.update({n: HERE / f"{n}.py" for n in ORDER if (HERE / f"{n}.py").exists()})  # listed: marker or not
    missing = [n for n in ORDER if n not in marked]
    ordered = [marked[n] for n in ORDER if n in marked] + [p for n, p in marked.items() if n not in ORDER]
    return ordered, missing


def run_one(script: Path, mode: str, timeout: float) -> dict:
    """Run one script (`mode`: "full", "quick" or "smoke") in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), "--json", str(out)] + ([f"--{mode}"] if mode != "full" else [])
        t0 = time.time()
        # its own session: on a timeout the script's measurement workers go with it (left running,
        # they loaded the machine under every later script)
        proc = subprocess.Popen(cmd, cwd=str(HERE.parent), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"section": script.stem, "error": f"timed out after {timeout:.0f} s", "wall_s": timeout}
        p = subprocess.CompletedProcess(cmd, proc.returncode, "", stderr)
        wall = time.time() - t0
        if p.returncode != 0 or not out.exists():
            return {"section": script.stem, "wall_s": wall,
                    "error": f"exit code {p.returncode}\n\n```\n{p.stderr[-2500:]}\n```"}
        result = json.loads(out.read_text())
        result["wall_s"] = wall
        return result


def wait_quiet(limit: float, max_wait: float, poll: float = 10.0) -> dict:
    """Wait until the 1-minute load average is at most `limit` (or `max_wait` seconds pass);
    what was seen: the load when the script started, the seconds waited, and whether it was quiet."""
    t0 = time.time()
    load = os.getloadavg()[0]
    while load > limit and time.time() - t0 < max_wait:
        time.sleep(poll)
        load = os.getloadavg()[0]
    return {"load": round(load, 2), "waited_s": round(time.time() - t0), "quiet": load <= limit}


def earlier(previous: str | None) -> list[str]:
    """The previous RESULTS.md below the new one, its headings one level down (its own earlier runs
    with it): no table is ever dropped."""
    if not previous or not previous.strip():
        return []
    lines = ["## Earlier runs", "", "The previous RESULTS.md, as it was:", ""]
    for line in previous.strip().splitlines():
        lines.append("#" + line if line.startswith("#") and line.lstrip("#").startswith(" ") else line)
    return lines + [""]


def report(results: list[tuple[Path, dict]], missing: list[str], machine: dict, mode: str, total_s: float,
           previous: str | None = None) -> str:
    flag = f" --{mode}" if mode != "full" else ""
    lines = ["# Benchmark results", "",
             f"Generated by `python benchmarks/run_all.py{flag}` on "
             f"{time.strftime('%Y-%m-%d %H:%M')} in {total_s / 60:.1f} min. "
             + {"quick": "**Quick mode: few steps, tiny models only; not for quoting.**",
                "smoke": f"**Smoke mode: one round, tiny models ({C.SMOKE_NOTE}).**"}.get(mode, ""), "",
             "## Machine and versions", "",
             C.table(["", ""], [[k, ", ".join(v) if isinstance(v, list) else v] for k, v in machine.items()]), "",
             "## Settings", "",
             "- Every script runs in its own process, one after another; inside a script each measured "
             "configuration runs in its own subprocess (peak RSS is per process).",
             "- Times are wall-clock medians with quartiles (and min/max); contenders of one configuration "
             "are interleaved step by step so that machine-load drift hits all alike.",
             "- Threads: torch's default (one per core). HF_HUB_OFFLINE=1: nothing is downloaded.", ""]
    lines += ["| script | wall time | load before (1 min) |", "|---|---|---|"]
    lines += [f"| {p.name} | {r.get('wall_s', 0) / 60:.1f} min{' (failed)' if 'error' in r else ''} | "
              f"{_load_cell(r.get('load'))} |" for p, r in results]
    if missing:
        lines += ["", f"Not found (skipped): {', '.join(f'benchmarks/{m}.py' for m in missing)}."]
    lines.append("")
    for p, r in results:
        if "error" in r:
            lines += [f"## {p.name}: failed", "", r["error"], ""]
        else:
            md = r["markdown"].strip()
            if not md.startswith("#"):
                md = f"## {r.get('section', p.stem)}\n\n{md}"
            lines += [md, ""]
    return "\n".join(lines + earlier(previous))


def _load_cell(seen: dict | None) -> str:
    if not seen:
        return "not checked (smoke)"
    waited = f", after waiting {seen['waited_s']} s" if seen["waited_s"] else ""
    return f"{seen['load']:.2f}{waited}" + ("" if seen["quiet"] else " (**not quiet**: ran anyway)")


def main():
    ap = C.cli(__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated script names (without .py)")
    ap.add_argument("--output", help="default benchmarks/RESULTS.md; with --smoke, stdout (RESULTS.md stays)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per script")
    ap.add_argument("--max-load", type=float, default=0.5, help="wait before a script while the 1-min load is above")
    ap.add_argument("--max-wait", type=float, default=600, help="seconds to wait for --max-load before running anyway")
    args = ap.parse_args()
    C.setup_env(args.smoke)
    scripts, missing = discover()
    if args.only:
        keep = set(args.only.split(","))
        scripts = [s for s in scripts if s.stem in keep]
        missing = [m for m in missing if m in keep]
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    t0 = time.time()
    results = []
    for s in scripts:
        seen = wait_quiet(args.max_load, args.max_wait) if mode != "smoke" else None
        print(f"[run_all] {s.name} ({mode})" + (f", load {seen['load']:.2f}" if seen else ""), file=sys.stderr,
              flush=True)
        r = run_one(s, mode, args.timeout)
        r["load"] = seen
        print(f"[run_all] {s.name}: {'FAILED' if 'error' in r else 'ok'} in {r['wall_s'] / 60:.1f} min",
              file=sys.stderr, flush=True)
        results.append((s, r))
    output = args.output or (None if mode == "smoke" else str(HERE / "RESULTS.md"))
    previous = Path(output).read_text() if output and Path(output).exists() else None
    text = report(results, missing, C.machine_info(), mode, time.time() - t0, previous)
    if output:
        Path(output).write_text(text)
        print(f"[run_all] wrote {output}", file=sys.stderr)
    else:
        print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({p.stem: r for p, r in results}, indent=1))
    sys.exit(1 if any("error" in r for _, r in results) else 0)


if __name__ == "__main__":
    main()
