"""`ptdsl train` with the training time, random draws and running statistics: the time leaves
follow the clock (step, progress, epoch of each optimizer step), a schedule that breaks its
constraint later in the run stops it before step 1, and a run checkpointed and resumed ends with
the weights, the metrics and the running statistics of the uninterrupted run."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.loop import train

SPEC = str(Path(__file__).parent / "specs" / "time_state.ptdsl")
# 8 rows, 4 per step: an epoch is 2 optimizer steps
ARGS = dict(steps=5, batch_size=4, max_examples=8, quiet=True)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 5-step run that kept checkpoint-3 and checkpoint-4."""
    out = tmp_path_factory.mktemp("time_state")
    train(SPEC, output=str(out), save_steps=1, **ARGS)
    return out


@pytest.mark.integration
def test_time_leaves_follow_the_clock(run):
    rows = _rows(run)
    assert [r["now_step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["now_progress"] for r in rows] == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert [r["now_epoch"] for r in rows] == [0, 0, 1, 1, 2]
    assert [r["now_beta"] for r in rows] == pytest.approx([0.2 * (1 - 0.5 * p) for p in (0, 0.25, 0.5, 0.75, 1)])
    assert all(r["kept"] in (0, 0.25, 0.5, 0.75, 1) for r in rows) and len({r["kept"] for r in rows}) > 1


@pytest.mark.integration
def test_a_resumed_run_ends_with_the_weights_and_state_of_the_uninterrupted_one(run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run, out)
    shutil.rmtree(out / "final")
    shutil.rmtree(out / "checkpoint-4")  # killed after checkpoint-3: steps 4 and 5 run again
    train(SPEC, output=str(out), resume=True, save_steps=1, **ARGS)
    assert _rows(out) == [{**r, "step_time": _rows(out)[i]["step_time"]} for i, r in enumerate(_rows(run))]
    state = [json.loads((d / "checkpoint-4" / "trainer_state.json").read_text())["state"] for d in (run, out)]
    assert state[0] == state[1] and len(state[0]) == 2  # the ema and the running variance, bit for bit
    from safetensors.torch import load_file
    a, b = (load_file(str(d / "final" / "model.safetensors")) for d in (out, run))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.integration
def test_a_schedule_that_breaks_its_constraint_later_stops_before_step_1(tmp_path):
    spec = tmp_path / "late.ptdsl"
    spec.write_text(Path(SPEC).read_text().replace("0.2 * (1 - 0.5 * progress) > 0", "0.2 * (1 - 2 * progress) > 0"))
    with pytest.raises(RuntimeSetupError) as info:
        train(str(spec), output=str(tmp_path / "out"), **ARGS)
    assert "parameter `beta` = 0.0 at optimizer step 3 of 5 (step = 2, progress = 0.5, epoch = 1)" in str(info.value)
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
