"""Write the golden records of the stable methods' numbers (tests/contract/numbers/<method>.json).

    python tests/contract/regenerate_numbers.py [--method M ...] [--breaking] [--since VERSION] [--release]

A stable method without a record gets one (`since` and `changed_in`: --since, default
"unreleased": name the method under [Unreleased] in CHANGELOG.md; at the release, --release
stamps "unreleased" with the version). A record whose numbers still hold is left as it is. A record whose numbers
changed is NOT rewritten unless --breaking: changing a stable method's numbers breaks stability
contract C1 (docs/stability.md#c1-numbers). With --breaking the record takes the new numbers and
`changed_in` = ptdsl.__version__, which must be a new breaking version (major, or minor before
1.0, above the previous release) whose CHANGELOG.md section names the method under `### Changed`
(tests/contract/test_numbers.py checks it). So: bump `__version__`, write the CHANGELOG entry,
then regenerate with --breaking.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[0] = str(ROOT)  # not this folder: its modules must not shadow the standard library

from ptdsl import __version__  # noqa: E402
from ptdsl.diagnostics import SpecError  # noqa: E402
from tests.contract import records as N  # noqa: E402


def regenerate(method: str, breaking: bool, since: str) -> tuple[str, list[str]]:
    """(what happened, the differences found) for one method; writes its record when allowed."""
    if not N.path(method).exists():
        N.path(method).write_text(N.dump(_ordered(N.record(method, since), since)))
        return "new", []
    old = N.load(method)
    try:
        new = N.record(method, old["changed_in"], old["settings"]["moved"]["params"])
    except SpecError:  # the moved setting no longer compiles (a param or its constraint changed)
        if not breaking:
            return "refused", [f"{method}: the pinned setting {old['settings']['moved']['params']} no longer compiles"]
        new = N.record(method, old["changed_in"])
    diffs = N.differences(old, new)
    if not diffs:
        return "same", []
    if not breaking:
        return "refused", diffs
    new["changed_in"] = __version__
    N.path(method).write_text(N.dump(_ordered(new, old.get("since", old["changed_in"]))))
    return "changed", diffs


def _stamp(method: str) -> None:
    rec = N.load(method) if N.path(method).exists() else None
    if rec and "unreleased" in (rec["since"], rec["changed_in"]):
        rec.update({k: __version__ for k in ("since", "changed_in") if rec[k] == "unreleased"})
        N.path(method).write_text(N.dump(rec))


def _ordered(rec: dict, since: str) -> dict:
    head = {"method": rec["method"], "since": since, "changed_in": rec["changed_in"]}
    return {**head, **{k: v for k, v in rec.items() if k not in head}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", action="append", help="only this stable method (repeatable)")
    ap.add_argument("--breaking", action="store_true",
                    help=f"accept changed numbers: their records get changed_in = {__version__}")
    ap.add_argument("--since", default="unreleased", help="`since` and `changed_in` of new records")
    ap.add_argument("--release", action="store_true", help=f"stamp \"unreleased\" records with {__version__}")
    args = ap.parse_args(argv)
    stable = N.stable_methods()
    unknown = sorted(set(args.method or ()) - set(stable))
    if unknown:
        ap.error(f"not stable methods: {', '.join(unknown)} (records are kept for stable methods only)")
    N.DIR.mkdir(exist_ok=True)
    refused = 0
    for method in args.method or stable:
        what, diffs = regenerate(method, args.breaking, args.since)
        refused += what == "refused"
        if what != "same":
            print(f"{what}: {method}" + "".join(f"\n    {d}" for d in diffs))
    if args.release:
        for method in stable:
            _stamp(method)
    for stale in sorted(p.stem for p in N.DIR.glob("*.json") if p.stem not in stable):
        print(f"stale: {stale} is not a stable method: remove tests/contract/numbers/{stale}.json")
    if refused:
        print(f"\n{refused} record(s) not rewritten: their numbers changed (stability contract C1). If that is "
              f"intended, bump the version's major (minor before 1.0), name the methods under `### Changed` in "
              f"CHANGELOG.md and rerun with --breaking.", file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
