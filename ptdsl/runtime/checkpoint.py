"""Checkpoints: accelerate's save_state written atomically (a temporary directory
renamed into place, so a run killed mid-save leaves the previous checkpoint
intact), the step counter beside it, and the latest one found for --resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

PREFIX = "checkpoint-"


def save(accelerator, output: Path, step: int, state: dict | None = None, keep: int = 2) -> Path:
    final = output / f"{PREFIX}{step}"
    tmp = output / f".{PREFIX}{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "state": state or {}}))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted(checkpoints(output), key=_step)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def checkpoints(output: Path) -> list[Path]:
    return [p for p in output.glob(f"{PREFIX}*") if (p / "trainer_state.json").exists()]


def _step(p: Path) -> int:
    return int(p.name[len(PREFIX):])


def latest(output: Path) -> Path | None:
    found = checkpoints(output)
    return max(found, key=_step) if found else None


def load(accelerator, path: Path) -> tuple[int, dict]:
    """The step a checkpoint was taken after, and the loss's running statistics then."""
    accelerator.load_state(str(path))
    saved = json.loads((path / "trainer_state.json").read_text())
    return saved["step"], saved.get("state", {})
