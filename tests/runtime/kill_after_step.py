"""`python tests/runtime/kill_after_step.py N ARGS…` runs `ptdsl ARGS…` and kills its own
process with SIGKILL right after metrics.jsonl gets step N's row: an event, not a clock,
so the kill lands at the same step on a busy machine as on a quiet one. SIGKILL runs no
cleanup (no final save, no flush beyond what was written), as an OOM kill or a lost node.
Used by test_resume.py; not a test module itself."""
import os
import signal
import sys

from ptdsl.cli.main import main
from ptdsl.runtime import metrics_log


def _die_after(append, step: int):
    def append_then_die(output, row):
        append(output, row)
        if row.get("step") == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return append_then_die


if __name__ == "__main__":
    metrics_log.append = _die_after(metrics_log.append, int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
