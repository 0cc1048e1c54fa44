"""`python tests/runtime/hooked_cli.py HOOK… -- ARGS…` runs `ptdsl ARGS…` with test hooks
(also as the script of `accelerate launch`). Not a test module; used by test_resume.py and
test_train.py.

  --kill-after N        SIGKILL this process right after metrics.jsonl gets step N's row: an
                        event, not a clock, so the kill lands at the same step on a busy machine
                        as on a quiet one. SIGKILL runs no cleanup (no final save), as an OOM
                        kill or a lost node.
  --record-batches DIR  torch.save each optimizer step's micro-batches, as the loop built them
                        (rollouts sampled, rewards scored), to DIR/step<S>-process<P>.pt.
"""
import os
import signal
import sys
from pathlib import Path

import torch

from ptdsl.cli.main import main
from ptdsl.runtime import experience, metrics_log


def kill_after(step: int) -> None:
    append = metrics_log.append

    def append_then_die(output, row):
        append(output, row)
        if row.get("step") == step:
            os.kill(os.getpid(), signal.SIGKILL)
    metrics_log.append = append_then_die


def record_batches(folder: Path) -> None:
    build = experience.Experiences.minibatch

    def build_and_save(self, step):
        micro = build(self, step)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(micro, folder / f"step{step}-process{self.acc.process_index}.pt")
        return micro
    experience.Experiences.minibatch = build_and_save


HOOKS = {"--kill-after": lambda v: kill_after(int(v)), "--record-batches": lambda v: record_batches(Path(v))}

if __name__ == "__main__":
    split = sys.argv.index("--")
    hooks = sys.argv[1:split]
    for name, value in zip(hooks[::2], hooks[1::2], strict=True):
        HOOKS[name](value)
    sys.exit(main(sys.argv[split + 1:]))
