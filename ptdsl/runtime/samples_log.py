"""OUTPUT/samples.jsonl (`--log-samples N`): at each evaluation, N rows
`{"step", "prompt", "completion", "reward"}` — what the policy writes for held-out prompts
(greedy), and its reward where the spec declares one (null where it does not; a spec with
several rewards also gets `rewards`, one value each). Strict JSON, as metrics.jsonl
(metrics_log.encode); with --report-to tensorboard the same rows as a text table."""
from __future__ import annotations

import json
from pathlib import Path

from ptdsl.runtime import metrics_log

NAME = "samples.jsonl"


def append(output: Path, rows: list[dict]) -> None:
    with open(output / NAME, "a") as f:
        for row in rows:
            f.write(json.dumps(metrics_log.encode(row), allow_nan=False, ensure_ascii=False) + "\n")


def to_tensorboard(acc, step: int, rows: list[dict]) -> None:
    """The rows as one markdown table under `eval/samples` (tensorboard renders text as markdown)."""
    writer = acc.get_tracker("tensorboard", unwrap=True)
    lines = ["| prompt | completion | reward |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {_cell(r['prompt'])} | {_cell(r['completion'])} | {r['reward']} |")
    writer.add_text("eval/samples", "\n".join(lines), global_step=step)


def _cell(text: str) -> str:
    """Text in one markdown table cell: pipes escaped, line breaks as <br>."""
    return text.replace("|", "\\|").replace("\n", "<br>")
