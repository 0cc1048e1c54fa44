"""Stability contract C1 (docs/stability.md#c1-numbers): a stable method's loss, gradients and
metrics on fixed inputs do not change within a major version (the minor before 1.0).

Every stable method has a golden record (tests/contract/numbers/<method>.json, written by
tests/contract/regenerate_numbers.py) at its defaults and at one moved setting; the compiled
method must reproduce it to a relative 1e-9. A record whose numbers changed (`changed_in` after
0.1.0) must be announced in CHANGELOG.md, in the section of a breaking version."""
from __future__ import annotations

import json

import pytest

from tests.contract import changelog as CL
from tests.contract import inputs as I
from tests.contract import records as N

STABLE = N.stable_methods()
RECORDS = sorted(p.stem for p in N.DIR.glob("*.json"))
SHOWN = 12  # differences listed in a failure (the loss and metrics come first)
RULE = "stability contract C1 (docs/stability.md#c1-numbers)"


def _what_to_do(method: str) -> str:
    return (f"If this is a bug, fix it. If the change is intended, it breaks {RULE}: a stable method's numbers "
            f"change only in a new major version (minor before 1.0). Bump ptdsl/__init__.py __version__ to it, "
            f"name `{method}` under `### Changed` in that CHANGELOG.md section, and run "
            f"`python tests/contract/regenerate_numbers.py --method {method} --breaking`; or make the method "
            f"`experimental` (docs/stability.md says what that takes).")


@pytest.mark.parametrize("method", STABLE)
def test_stable_method_keeps_its_numbers(method):
    assert N.path(method).exists(), (
        f"stable method `{method}` has no golden record ({RULE}): run "
        f"`python tests/contract/regenerate_numbers.py --method {method}` and commit "
        f"tests/contract/numbers/{method}.json")
    old = N.load(method)
    assert old["inputs_version"] == I.INPUTS_VERSION, (
        f"`{method}`'s record was computed on inputs version {old['inputs_version']}, tests/contract/inputs.py "
        f"is version {I.INPUTS_VERSION}: changing the inputs is itself a C1 event; regenerate every record "
        "with --breaking")
    new = N.record(method, old["changed_in"], old["settings"]["moved"]["params"])
    diffs = N.differences(old, new)
    shown = diffs[:SHOWN] + ([f"… and {len(diffs) - SHOWN} more"] if len(diffs) > SHOWN else [])
    assert not diffs, (f"stable method `{method}` changed its numbers, against {RULE}:\n  " + "\n  ".join(shown)
                       + f"\n(moved: {N.setting_text(old, 'moved')})\n" + _what_to_do(method))


def test_no_record_for_a_method_that_is_not_stable():
    stale = sorted(set(RECORDS) - set(STABLE))
    assert not stale, "".join(
        f"tests/contract/numbers/{m}.json pins `{m}`, which is not a stable method: remove it (a method that "
        "leaves `stable` is named under `### Changed` or `### Removed` in CHANGELOG.md)\n" for m in stale)


@pytest.mark.parametrize("method", RECORDS)
def test_changed_numbers_are_announced(method):
    rec = N.load(method)
    assert rec["method"] == method and rec["since"] and rec["changed_in"], f"{N.path(method)}: malformed header"
    problem = announcement_problem(rec, CL.parse()[0])
    assert problem is None, f"{method}: {problem} ({RULE})"


def announcement_problem(rec: dict, sections) -> str | None:
    """None if CHANGELOG.md announces the record's numbers, else what is missing. 0.1.0 is the
    baseline; a record first pinned later is named in its version's section; a record whose numbers
    changed after they were pinned needs a breaking version that names it under Changed or Removed."""
    version, method = rec["changed_in"], rec["method"]
    if version == "0.1.0":
        return None
    s = CL.section("Unreleased" if version == "unreleased" else version, sections)
    if s is None:
        return f"its numbers changed in {version}, but CHANGELOG.md has no `## [{version}]` section"
    if version == rec["since"]:
        return None if CL.mentions(s.text, method) else f"first pinned in {version}, but `{method}` is not in its section"
    if not CL.is_breaking(version, sections):
        return (f"its numbers changed in {version}, which is not a breaking version (its major, or minor before 1.0, "
                "is not above the previous release's)")
    told = s.subsections.get("Changed", "") + s.subsections.get("Removed", "")
    return None if CL.mentions(told, method) else \
        f"its numbers changed in {version}, but `## [{version}]` does not name `{method}` under Changed or Removed"


def test_records_are_deterministic_json():
    """Records are written by the script (sorted metrics and leaves, one layout): a hand edit shows."""
    for method in RECORDS:
        text = N.path(method).read_text()
        assert text == N.dump(json.loads(text)), f"{N.path(method)} is not in the script's layout"


def test_announcement_rules():
    """The CHANGELOG checks on a synthetic changelog: each rule can fail."""
    sections, _ = CL.parse("## [Unreleased]\n## [0.3.0] - 2027-01-01\n### Changed\n- `dpo`: the loss\n"
                           "## [0.2.1] - 2026-12-20\n### Changed\n- `ipo`\n## [0.2.0] - 2026-12-06\n"
                           "### Added\n- `sampo`\n## [0.1.0] - 2026-11-25\n")
    rec = lambda m, since, changed: {"method": m, "since": since, "changed_in": changed}  # noqa: E731
    assert announcement_problem(rec("dpo", "0.1.0", "0.1.0"), sections) is None
    assert announcement_problem(rec("dpo", "0.1.0", "0.3.0"), sections) is None
    assert announcement_problem(rec("sampo", "0.2.0", "0.2.0"), sections) is None
    assert "not a breaking version" in announcement_problem(rec("ipo", "0.1.0", "0.2.1"), sections)
    assert "does not name `cdpo`" in announcement_problem(rec("cdpo", "0.1.0", "0.3.0"), sections)
    assert "no `## [0.4.0]` section" in announcement_problem(rec("dpo", "0.1.0", "0.4.0"), sections)
    assert "not in its section" in announcement_problem(rec("npo", "0.2.0", "0.2.0"), sections)
    assert "not in its section" in announcement_problem(rec("npo", "unreleased", "unreleased"), sections)
    sections[0].text += "- `npo` is stable\n"
    assert announcement_problem(rec("npo", "unreleased", "unreleased"), sections) is None


def test_a_changed_number_is_reported_by_name():
    """The message names the method, the setting and the number (a record with one number moved)."""
    old = N.load("dpo")
    new = json.loads(json.dumps(old))
    new["settings"]["defaults"]["loss"] += 1e-3
    leaf = sorted(new["settings"]["moved"]["grads"])[0]
    new["settings"]["moved"]["grads"][leaf]["sum"] *= 1 + 1e-8
    new["settings"]["moved"]["grads"][leaf]["l2"] *= 1 + 1e-11  # within the tolerance
    diffs = N.differences(old, new)
    assert len(diffs) == 2, diffs
    assert diffs[0].startswith("dpo (defaults): loss ") and " → " in diffs[0]
    assert diffs[1].startswith("dpo (moved): ") and f"grad sum of {leaf} " in diffs[1]
    assert N.setting_text(old, "moved") == "beta = 0.125, label_smoothing = 0.1"
