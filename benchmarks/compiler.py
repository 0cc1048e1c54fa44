"""Compiler speed: the whole method library through parse + check + compile, and the
start-up time of `ptdsl check`.

    python benchmarks/compiler.py [--quick | --smoke] [--json PATH]

- library, warm: in this process, after one untimed pass, `ptdsl.compile(path)` for every
  spec in methods/ (parse, resolve `extends`, bind, lower, level and gradient checks,
  optimise, plan, emit Python source). Median of several passes.
- library, cold: a fresh `python -c` subprocess that imports ptdsl and compiles the whole
  library, wall time of the subprocess (interpreter start-up and imports included).
- `ptdsl check methods/dpo.ptdsl`: wall time of the subprocess, with `python -c pass` as
  the interpreter floor, both alternated; and whether the command imported torch (checked
  with `python -X importtime`).

Targets: the library in under 2 s; `ptdsl check` in under 0.5 s.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # this checkout's ptdsl, not an installed copy
import common  # noqa: E402

BENCHMARK = True
SECTION = "Compiler: the method library and `ptdsl check` start-up"
LIBRARY_TARGET_S, CHECK_TARGET_S = 2.0, 0.5
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
HEAVY = ("torch", "transformers", "numpy", "accelerate", "trl", "datasets", "hypothesis")

COLD = """
import time, glob
t0 = time.perf_counter()
import ptdsl
t1 = time.perf_counter()
paths = sorted(glob.glob('methods/*.ptdsl'))
for p in paths:
    ptdsl.compile(p)
t2 = time.perf_counter()
print(len(paths), t1 - t0, t2 - t1)
"""


def specs() -> list[Path]:
    return sorted((ROOT / "methods").glob("*.ptdsl"))


def library_warm(repeats: int, warm_up: bool = True) -> dict:
    import ptdsl
    paths = [str(p) for p in specs()]
    for p in paths if warm_up else ():  # untimed: imports, lark grammar
        ptdsl.compile(p)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in paths:
            ptdsl.compile(p)
        times.append(time.perf_counter() - t0)
    per_spec = []
    for p in paths:
        t0 = time.perf_counter()
        ptdsl.compile(p)
        per_spec.append(((time.perf_counter() - t0) * 1000, Path(p).stem))
    per_spec.sort(reverse=True)
    return {"specs": len(paths), "seconds": _summary(times), "slowest_ms": per_spec[:5]}


def library_cold(repeats: int) -> dict:
    walls, imports, compiles = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD], cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        n, imp, comp = out.stdout.split()
        imports.append(float(imp))
        compiles.append(float(comp))
    return {"specs": int(n), "wall_seconds": _summary(walls), "import_seconds": _summary(imports),
            "compile_seconds": _summary(compiles)}


def startup(repeats: int) -> dict:
    cmds = {"check": [sys.executable, "-m", "ptdsl", "check", "methods/dpo.ptdsl"],
            "python": [sys.executable, "-c", "pass"],
            "import_ptdsl": [sys.executable, "-c", "import ptdsl"]}
    times = {k: [] for k in cmds}
    for _ in range(repeats):
        for k, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, check=True)
            times[k].append(time.perf_counter() - t0)
    return {k: _summary(v) for k, v in times.items()}


def heavy_imports() -> dict:
    """Modules from HEAVY that each CLI command imports (python -X importtime)."""
    out = {}
    for name, argv in {"check": ["check", "methods/dpo.ptdsl"], "list": ["list"], "show": ["show", "dpo"],
                       "compile": ["compile", "dpo", "--emit", "python"]}.items():
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "ptdsl", *argv], cwd=ROOT, env=ENV,
                           capture_output=True, text=True)
        mods = {line.split("|")[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
        out[name] = sorted(m for m in mods if m.split(".")[0] in HEAVY and "." not in m)
        if name == "check":
            top = []
            for line in p.stderr.splitlines():
                if line.startswith("import time:") and "|" in line:
                    parts = line.split("|")
                    try:
                        top.append((int(parts[1]), parts[2].rstrip()))
                    except ValueError:
                        pass
            # top-level (least indented) packages by cumulative microseconds
            roots = [(us, m.strip()) for us, m in top if len(m) - len(m.lstrip()) <= 2]
            out["check_top_imports_ms"] = [(round(us / 1000, 1), m) for us, m in sorted(roots, reverse=True)[:6]]
    return out


def _summary(xs: list[float]) -> dict:
    s = sorted(xs)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0]] * 3
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "q1": q[0], "q3": q[2], "n": len(s)}


def markdown(d: dict, quick: bool, smoke: bool = False) -> str:
    warm, cold, st = d["warm"], d["cold"], d["startup"]
    check, floor, imp = st["check"]["median"], st["python"]["median"], st["import_ptdsl"]["median"]
    lib = warm["seconds"]["median"]
    rows = [
        [f"library, warm ({warm['specs']} specs, in-process)", f"{lib:.2f} s",
         f"{warm['seconds']['q1']:.2f}–{warm['seconds']['q3']:.2f}", f"< {LIBRARY_TARGET_S:.0f} s",
         "met" if lib < LIBRARY_TARGET_S else "missed"],
        ["library, cold (fresh `python -c`: start-up + import + compile)", f"{cold['wall_seconds']['median']:.2f} s",
         f"{cold['wall_seconds']['q1']:.2f}–{cold['wall_seconds']['q3']:.2f}", f"< {LIBRARY_TARGET_S:.0f} s",
         "met" if cold["wall_seconds"]["median"] < LIBRARY_TARGET_S else "missed"],
        ["  of which `import ptdsl`", f"{cold['import_seconds']['median']:.2f} s", "", "", ""],
        ["  of which compiling", f"{cold['compile_seconds']['median']:.2f} s", "", "", ""],
        ["`ptdsl check methods/dpo.ptdsl` (wall)", f"{check * 1000:.0f} ms",
         f"{st['check']['q1'] * 1000:.0f}–{st['check']['q3'] * 1000:.0f}", f"< {CHECK_TARGET_S * 1000:.0f} ms",
         "met" if check < CHECK_TARGET_S else "missed"],
        ["`python -c 'import ptdsl'` (wall)", f"{imp * 1000:.0f} ms",
         f"{st['import_ptdsl']['q1'] * 1000:.0f}–{st['import_ptdsl']['q3'] * 1000:.0f}", "", ""],
        ["`python -c pass` (interpreter floor)", f"{floor * 1000:.0f} ms",
         f"{st['python']['q1'] * 1000:.0f}–{st['python']['q3'] * 1000:.0f}", "", ""],
    ]
    heavy = d["heavy_imports"]
    leaks = {k: v for k, v in heavy.items() if k in ("check", "list", "show", "compile") and v}
    slow = ", ".join(f"{n} ({ms:.0f} ms)" for ms, n in warm["slowest_ms"][:3])
    tops = ", ".join(f"`{m}` {ms:.0f} ms" for ms, m in heavy.get("check_top_imports_ms", [])[:4])
    lines = [f"## {SECTION}", "",
             "Medians [quartiles]" + common.mode_note(quick, smoke) + ".", "",
             common.table(["what", "median", "quartiles", "target", ""], rows), "",
             "What the numbers say:",
             f"- The whole library ({warm['specs']} specs) compiles in {lib:.2f} s warm, "
             f"{lib / warm['specs'] * 1000:.1f} ms a spec; the slowest: {slow}.",
             f"- `ptdsl check` costs {check * 1000:.0f} ms, {(check - floor) * 1000:.0f} ms above the bare "
             f"interpreter; its largest imports (`-X importtime`, cumulative): {tops}.",
             "- Heavy modules imported by the CLI commands list/check/show/compile: "
             + ("none (no torch, transformers, numpy)." if not leaks else
                "; ".join(f"{k}: {', '.join(v)}" for k, v in leaks.items()) + " — a regression to fix.")]
    return "\n".join(lines)


def main(argv=None):
    args = common.cli(__doc__.splitlines()[0]).parse_args(argv)
    warm_n, cold_n, start_n = (1, 1, 1) if args.smoke else (2, 2, 3) if args.quick else (5, 5, 10)
    data = {"warm": library_warm(warm_n, warm_up=not args.smoke), "cold": library_cold(cold_n), "startup": startup(start_n),
            "heavy_imports": heavy_imports(), "quick": args.quick, "smoke": args.smoke,
            "machine": common.machine_info()}
    common.emit(args.json, SECTION, markdown(data, args.quick, args.smoke), data)


if __name__ == "__main__":
    main()
