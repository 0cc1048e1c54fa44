"""A run killed by SIGKILL and resumed with --resume continues at the step after its newest
checkpoint and ends bit-identical to the uninterrupted run: the same losses at every step and
the same final weights. Three methods, for the three kinds of state a checkpoint must carry:
dpo (weights, optimizer moments, LR schedule), bco (the loss's running mean, kept in
trainer_state.json) and grpo (sampled rollouts: the random state of every generator).

Bit-identical is the claim because on a CPU every kernel a step runs is deterministic, and
accelerate restores the random states of Python, NumPy and torch as they were when the
checkpoint was written; a resumed run therefore replays the same arithmetic. Any loss of
state moves the weights by about a learning rate (3e-3), far from bitwise noise."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptdsl.runtime import metrics_log
from ptdsl.runtime.loop import train

ROOT = Path(__file__).resolve().parents[2]
HOOKED = Path(__file__).with_name("hooked_cli.py")
STEPS, SAVE, KILL = 12, 4, 10   # killed after step 10's row: checkpoints 4 and 8 on disk, step 9 resumes
ARGS = dict(steps=STEPS, batch_size=8, save_steps=SAVE, max_examples=96, quiet=True)


def _cli_args(method: str, out: Path) -> list[str]:
    return ["train", method, "--steps", str(STEPS), "--batch-size", "8", "--save-steps", str(SAVE),
            "--max-examples", "96", "--quiet", "--output", str(out)]


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _kill_after(method: str, out: Path, step: int) -> None:
    proc = subprocess.run([sys.executable, str(HOOKED), "--kill-after", str(step), "--", *_cli_args(method, out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def _resume_logging_steps(method: str, out: Path, monkeypatch) -> list[int]:
    """Resume in this process; the steps the resumed run itself logs (not those kept on disk)."""
    logged = []
    append = metrics_log.append

    def spy(output, row):
        logged.append(row["step"])
        append(output, row)
    monkeypatch.setattr(metrics_log, "append", spy)
    train(method, output=str(out), resume=True, **ARGS)
    return logged


@pytest.mark.integration
@pytest.mark.parametrize("method", ["dpo", "bco", "grpo"])
def test_killed_run_resumes_after_its_checkpoint_and_ends_as_the_uninterrupted_one(tmp_path, method,
                                                                                     monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    train(method, output=str(full), **ARGS)
    _kill_after(method, killed, KILL)
    assert not (killed / "final").exists()
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    before = _rows(killed)
    assert [r["step"] for r in before] == list(range(1, KILL + 1))

    newest = 8
    assert _resume_logging_steps(method, killed, monkeypatch) == list(range(newest + 1, STEPS + 1))
    after, want = _rows(killed), _rows(full)
    assert [r["step"] for r in after] == list(range(1, STEPS + 1))
    assert after[:newest] == before[:newest], "the rows up to the checkpoint are kept as they were written"
    losses = {r["step"]: r["loss"] for r in after}
    assert losses == {r["step"]: r["loss"] for r in want}, "every step's loss, bitwise"
    a, b = load_file(str(killed / "final" / "model.safetensors")), load_file(str(full / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    moved = [k for k in a if not torch.equal(a[k], b[k])]
    assert not moved, {k: float((a[k] - b[k]).abs().max()) for k in moved}
