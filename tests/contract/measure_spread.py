"""How far apart the golden numbers come out between runs: the evidence for records.REL_TOL.

    python tests/contract/measure_spread.py

Computes every stable method's record in fresh processes with torch.set_num_threads(1) and (2),
twice each, and prints the largest relative and absolute difference from the checked-in records
over all numbers (loss, metrics, gradient summaries).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[0] = str(ROOT)  # not this folder: its modules must not shadow the standard library

CHILD = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from tests.contract import records as N
out = {}
for m in N.stable_methods():
    old = N.load(m)
    out[m] = N.record(m, old["changed_in"], old["settings"]["moved"]["params"])
print(json.dumps(out))
"""


def flatten(x, prefix=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from flatten(v, f"{prefix}/{k}")
    elif isinstance(x, float):
        yield prefix, x


def main() -> int:
    from tests.contract import records as N
    worst_rel, worst_abs = (0.0, ""), (0.0, "")
    for threads in (1, 2, 1, 2):
        run = subprocess.run([sys.executable, "-c", CHILD, str(threads)], cwd=ROOT, capture_output=True,
                             text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
        for m, new in json.loads(run.stdout).items():
            old = dict(flatten(N.load(m)["settings"]))
            for where, y in flatten(new["settings"]):
                x = old[where]
                if math.isnan(x) and math.isnan(y) or x == y:
                    continue
                d = abs(x - y)
                worst_abs = max(worst_abs, (d, f"{m}{where} ({threads} threads)"))
                worst_rel = max(worst_rel, (d / max(abs(x), abs(y)), f"{m}{where} ({threads} threads)"))
    print(f"largest relative difference {worst_rel[0]:.3g} at {worst_rel[1] or '-'}")
    print(f"largest absolute difference {worst_abs[0]:.3g} at {worst_abs[1] or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
