"""Rewrite the API/CLI surface snapshot (tests/contract/surface.json) from the live code.

    python tests/contract/regenerate_surface.py [--since VERSION] [--release]

New entries get `since` = "unreleased" (or --since), entries that are gone get `removed`, changed
ones `changed_in`; nothing is deleted. Each such change is a stability contract C3 event
(docs/stability.md#c3-names): CHANGELOG.md must name it, under [Unreleased] until the release.
At a release (CHANGELOG's [Unreleased] moved under `## [X.Y.Z]`, `__version__` set to X.Y.Z),
`--release` stamps the "unreleased" entries with the version.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[0] = str(ROOT)  # not this folder: its modules must not shadow the standard library

from ptdsl import __version__  # noqa: E402
from tests.contract import surface as S  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--since", default=S.UNRELEASED, help="the version new entries appeared in")
    ap.add_argument("--release", action="store_true", help=f"stamp \"unreleased\" entries with {__version__}")
    args = ap.parse_args(argv)
    old = S.load() if S.PATH.exists() else {}
    live = S.collect()
    for line in S.differences(old, live):
        print(line)
    new = S.update(old, live, args.since)
    if args.release:
        new = S.stamp(new, __version__)
    S.PATH.write_text(S.dump(new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
