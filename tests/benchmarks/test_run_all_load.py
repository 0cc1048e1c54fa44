"""run_all.py's quiet-machine rule and its history (issue 14 item 6): it waits while the load
is high, records what it saw, and keeps the previous RESULTS.md's tables."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _run_all():
    import sys
    sys.path.insert(0, str(BENCH))  # run_all imports its sibling `common`
    spec = importlib.util.spec_from_file_location("run_all_under_test", BENCH / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_waits_until_the_load_falls_and_says_what_it_saw(monkeypatch):
    R = _run_all()
    loads, clock = iter([1.9, 1.2, 0.7, 0.4, 0.3]), [0.0]
    monkeypatch.setattr(R.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr(R.time, "time", lambda: clock[0])
    monkeypatch.setattr(R.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    assert R.wait_quiet(0.5, 600, poll=10) == {"load": 0.4, "waited_s": 30, "quiet": True}


def test_gives_up_after_max_wait_and_marks_the_run_not_quiet(monkeypatch):
    R = _run_all()
    clock = [0.0]
    monkeypatch.setattr(R.os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    monkeypatch.setattr(R.time, "time", lambda: clock[0])
    monkeypatch.setattr(R.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    seen = R.wait_quiet(0.5, 60, poll=10)
    assert seen == {"load": 3.0, "waited_s": 60, "quiet": False}
    assert "not quiet" in R._load_cell(seen)


def test_the_previous_results_are_kept_below_the_new_ones():
    R = _run_all()
    previous = "# Benchmark results\n\n## dpo\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n### detail\n#hashtag\n"
    text = R.report([], [], {"cpu": "x"}, "full", 60.0, previous)
    new, old = text.split("## Earlier runs")
    assert "| 1 | 2 |" in old and "### dpo" in old and "#### detail" in old and "#hashtag" in old
    assert "## Benchmark results" in old and old.count("| 1 | 2 |") == 1


def test_a_timed_out_script_takes_its_workers_with_it(tmp_path):
    """A script that times out is killed with every process it started (an orphaned measurement
    worker would load the machine under every later script)."""
    import os
    import time
    R = _run_all()
    pid_file = tmp_path / "child.pid"
    script = tmp_path / "slow.py"
    script.write_text("import subprocess, sys, time\n"
                      f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                      f"open({str(pid_file)!r}, 'w').write(str(c.pid))\ntime.sleep(60)\n")
    r = R.run_one(script, "full", timeout=3)
    assert "timed out" in r["error"]
    child = int(pid_file.read_text())
    for _ in range(50):  # the kill is asynchronous
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"worker {child} outlived its script")
