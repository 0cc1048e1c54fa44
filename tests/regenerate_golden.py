"""Regenerate the golden diagnostics (tests/golden/NAME.txt) after an intended change:
`python tests/regenerate_golden.py`, then review the diff. tests/cli/test_golden_diagnostics.py
compares against these files and never writes them. A spec whose first line is
`# ptdsl check FLAGS` is checked with those flags (e.g. `--strict`)."""
from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = sorted((ROOT / "tests" / "golden").glob("*.ptdsl"))


def flags(rel: str) -> list[str]:
    """The flags a golden spec asks for on its first line, `# ptdsl check FLAGS`."""
    first = (ROOT / rel).read_text(encoding="utf-8-sig").split("\n", 1)[0]
    return first.removeprefix("# ptdsl check ").split() if first.startswith("# ptdsl check ") else []


def check(rel: str) -> tuple[int, str, str]:
    """`ptdsl check REL` from the repository root, in this process: (exit code, stdout, stderr)."""
    from ptdsl.cli.main import main
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["check", *flags(rel), rel])
            except SystemExit as exc:
                code = exc.code
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for spec in GOLDEN:
        spec.with_suffix(".txt").write_text(check(str(spec.relative_to(ROOT)))[2])
    print(f"wrote {len(GOLDEN)} golden files under {ROOT / 'tests' / 'golden'}")
