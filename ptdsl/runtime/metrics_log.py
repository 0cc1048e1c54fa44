"""OUTPUT/metrics.jsonl: one JSON object per optimizer step, and one per evaluation (its keys
`step` and `eval/…`, runtime/evaluate.py), written by the main process.

Every line is strict JSON. A non-finite number (a NaN metric, an infinite gradient
norm) is written as the string "nan", "inf" or "-inf" — Python's `float()` reads
each back — never as the bare NaN/Infinity that `json.dumps` emits by default and
that most JSON readers reject. A resumed run first cuts the file back to its
checkpoint's step, so every step appears exactly once however often a run was
killed and resumed."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

NAME = "metrics.jsonl"


def encode(value):
    """`value` with every non-finite float replaced by its text ("nan", "inf", "-inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def append(output: Path, row: dict) -> None:
    with open(output / NAME, "a") as f:
        f.write(json.dumps(encode(row), allow_nan=False) + "\n")


def truncate(output: Path, step: int, name: str = NAME) -> int:
    """Keep the rows of steps up to `step` (the checkpoint a run resumes from); drop later
    ones and a line cut short by a kill. Returns how many lines were dropped. `name`: another
    file of rows with a step (samples.jsonl)."""
    path = output / name
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a kill mid-write leaves a partial last line
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(json.dumps(encode(row), allow_nan=False))
        else:
            dropped += 1
    tmp = path.with_name(name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)  # atomic: a kill now leaves the old file or the new one
    return dropped
