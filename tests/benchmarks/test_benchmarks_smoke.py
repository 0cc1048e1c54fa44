"""Benchmarks cannot rot: every script run_all.py discovers runs in its --smoke mode (one
round, tiny) and reports its contenders, and drives ptdsl through its public API only
(a benchmark rebuilt from private runtime functions broke silently at issue 14)."""
import ast
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"

# Benchmarks of one runtime component (not of a training step) import it by its public name.
COMPONENTS = {"data_validation": {"ptdsl.runtime.data", "ptdsl.runtime.chat", "ptdsl.runtime.datafiles",
                                   "ptdsl.runtime.validate"},
              "logprob_memory": {"ptdsl.runtime.queries"},
              "prefix_crossover": {"ptdsl.runtime.batch", "ptdsl.runtime.queries"},  # not run_all's: a measurement
              # the step is ptdsl.train's; the shared prompt prefill, which runs just before
              # `generate`, is wrapped only to count its time as generation
              "grpo": {"ptdsl.runtime.prefill"},
              # grpo.py's multi-turn contenders: the embedded tool task's model, tokenizer and rows, and the
              # built-in calculator environment and reward both frameworks play (the step is ptdsl.train's)
              "multiturn": {"ptdsl.runtime.embedded_tools", "ptdsl.runtime.calculator"}}


def module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RUN_ALL = module("run_all")
SCRIPTS, MISSING = RUN_ALL.discover()


# ---- what each script's smoke JSON must hold ---------------------------------------

def check_dpo(result, mod):
    assert not result["data"].get("failed"), result["data"]["failed"]  # a failing configuration is only recorded
    cfg = result["data"]["configs"]["tiny fp32"]
    assert set(cfg["steps"]) == set(cfg["memory"]) == set(mod.CONTENDERS)
    assert all(cfg["steps"][n]["median"] > 0 and cfg["steps"][n]["n"] == 1 for n in mod.CONTENDERS)
    assert all(cfg["memory"][n]["peak_mb"] >= cfg["memory"][n]["before_models_mb"] > 0 for n in mod.CONTENDERS)
    assert cfg["startup_s"]["ptdsl"] > 0 and cfg["startup_s"]["ptdsl_live"] > 0  # train's start-up, seen by callback
    assert all(mod.LABELS[n] in result["markdown"] for n in mod.CONTENDERS)


def check_grpo(result, mod):
    summary = result["data"]["summary"]
    names = [*mod.CONTENDERS, *mod.REUSE, *mod.GROUPED]
    assert set(summary) == set(names) == set(mod.WORKERS)
    for n in names:  # every contender generated and trained inside its timed steps
        assert summary[n]["step"]["median"] > summary[n]["generation"]["median"] > 0, n
        assert summary[n]["peak_rss_mb"] > 0
    assert all(mod.LABELS[n] in result["markdown"] for n in names)


def check_logprob_memory(result, mod):
    runs = result["data"]["results"]
    vocab = mod.SMOKE["vocabs"][0]
    assert set(runs) == {f"{vocab} naive", f"{vocab} ptdsl"}
    assert all(r["peak_mb"] >= r["inputs_mb"] > 0 and r["ms"]["median"] > 0 for r in runs.values())


def check_compiler(result, mod):
    d, specs = result["data"], len(list((ROOT / "methods").glob("*.ptdsl")))
    assert d["warm"]["specs"] == d["cold"]["specs"] == specs
    assert d["warm"]["seconds"]["median"] > 0 and set(d["startup"]) == {"check", "python", "import_ptdsl"}
    assert "torch" not in d["heavy_imports"]["check"]


def check_data_validation(result, mod):
    runs = result["data"]["results"]
    assert {(r["format"], r["rows"]) for r in runs} == {(f, n) for f in ("text", "conversational") for n in (100, 400)}
    assert all(r["validate_s"] > 0 and r["tokenise_s"] > 0 for r in runs)
    assert "validate µs/row" in result["markdown"]


def check_async_gen(result, mod):
    runs = result["data"]["results"]
    assert set(runs) == {"0", "1"} and all(runs[k]["n"] == 2 and runs[k]["mean"] > 0 for k in runs)
    assert runs["0"]["staleness"] == 0.0 and runs["1"]["staleness"] == 1.0  # K = 1 trained one version behind
    assert result["data"]["ratio"] > 0 and "K = 1 / K = 0" in result["markdown"]
    assert all(runs[k]["generate_ms"] > 0 for k in runs)  # both sampled, the worker too
    assert all(mod.LABELS[k] in result["markdown"] for k in mod.CONTENDERS)


CHECKS = {"dpo": check_dpo, "grpo": check_grpo, "logprob_memory": check_logprob_memory,
          "compiler": check_compiler, "data_validation": check_data_validation, "async_gen": check_async_gen}


@pytest.mark.integration
def test_grpo_multi_turn_smoke_run(tmp_path):
    """grpo.py's multi-turn configuration (left out of its default smoke run): every contender
    timed its steps, generated inside them, and played episodes that called the tool."""
    import json
    import subprocess
    import sys
    out = tmp_path / "result.json"
    p = subprocess.run([sys.executable, str(BENCH / "grpo.py"), "--multi-turn", "--smoke", "--json", str(out)],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=300, start_new_session=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                      os.environ.get("PYTHONPATH")]))})
    assert p.returncode == 0, p.stderr[-3000:]
    result, mod = json.loads(out.read_text()), module("grpo")
    summary = result["data"]["summary"]
    assert set(summary) == set(mod.TOOLS) and result["section"] == mod.SECTION
    for n in mod.TOOLS:
        assert summary[n]["step"]["n"] == 2 and summary[n]["step"]["median"] > summary[n]["generation"]["median"] > 0
        assert summary[n]["tool_calls"] > 0, n   # 2 steps × 16 episodes: the warm-started model calls the tool
        assert 0 < summary[n]["tool_calls_per_episode"] <= mod.multiturn.MAX_TURNS - 1
        assert mod.LABELS[n] in result["markdown"]
    assert "smoke: not a measurement" in result["markdown"] and "ptdsl_tools / trl_tools_nockpt" in result["markdown"]


def test_every_benchmark_is_discovered_and_checked():
    assert MISSING == []
    assert {p.stem for p in SCRIPTS} == set(CHECKS), "a new benchmark script needs its check in CHECKS"


@pytest.mark.integration
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_smoke_run(script, monkeypatch):
    """Through run_all.py's own runner (`run_all.py --smoke` runs each script so)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = RUN_ALL.run_one(script, "smoke", timeout=300)
    assert "error" not in result, result.get("error")
    mod = module(script.stem)
    assert result["section"] == mod.SECTION
    assert "smoke: not a measurement" in result["markdown"]
    CHECKS[script.stem](result, mod)
    report = RUN_ALL.report([(script, result)], [], {"cpu": "?"}, "smoke", result["wall_s"])
    assert "Smoke mode" in report and result["markdown"].strip() in report


# ---- public API only -------------------------------------------------------------------

def private_uses(name: str, source: str) -> list[str]:
    """Imports of private ptdsl names (a `_` part), of ptdsl.runtime outside the listed
    component benchmarks, and `X._attr` on a name bound by a ptdsl import."""
    out, bound = [], set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ptdsl"):
            imported = [(f"{node.module}.{a.name}", a.asname or a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            imported = [(a.name, (a.asname or a.name).split(".")[0]) for a in node.names if a.name.startswith("ptdsl")]
        else:
            continue
        for full, local in imported:
            bound.add(local)
            if any(part.startswith("_") for part in full.split(".")):
                out.append(f"line {node.lineno}: {full} is private")
            elif full.startswith("ptdsl.runtime.") and not full.startswith(tuple(COMPONENTS.get(name, ()))):
                out.append(f"line {node.lineno}: {full} (runtime internals: time ptdsl.train instead)")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and isinstance(node.value, ast.Name) and node.value.id in bound:
            out.append(f"line {node.lineno}: {node.value.id}.{node.attr} is private")
    return out


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.stem)
def test_benchmarks_drive_ptdsl_through_its_public_api(script):
    assert private_uses(script.stem, script.read_text(encoding="utf-8")) == []


def test_the_public_api_check_catches_a_step_rebuilt_from_private_functions():
    old = ("from ptdsl.runtime.loop import _global_counts\nfrom ptdsl.runtime.step import build_batch\n"
           "from ptdsl.runtime import loop\nloop._log_step = None\nimport ptdsl\nptdsl.train('dpo')\n")
    assert private_uses("dpo", old) == [
        "line 1: ptdsl.runtime.loop._global_counts is private",
        "line 2: ptdsl.runtime.step.build_batch (runtime internals: time ptdsl.train instead)",
        "line 3: ptdsl.runtime.loop (runtime internals: time ptdsl.train instead)",
        "line 4: loop._log_step is private"]
    assert private_uses("logprob_memory", "from ptdsl.runtime.queries import TokenLogprobs\n") == []
    assert private_uses("dpo", "from ptdsl.runtime.queries import TokenLogprobs\n") != []
