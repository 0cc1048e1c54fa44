"""Stability contract C3 (docs/stability.md#c3-names): the Python API, the CLI's commands and flags
and the canonical leaf names keep their names. The live surface must equal the snapshot
(tests/contract/surface.json), and every entry added, changed or removed after 0.1.0 must be
named in CHANGELOG.md under the version it happened in."""
from __future__ import annotations

import pytest

import ptdsl
from tests.contract import changelog as CL
from tests.contract import leafnames as L
from tests.contract import surface as S

RULE = "stability contract C3 (docs/stability.md#c3-names)"


def test_live_surface_matches_the_snapshot():
    diffs = S.differences(S.load(), S.collect())
    assert not diffs, (
        f"the public surface changed ({RULE}):\n  " + "\n  ".join(diffs) + "\nA removal or rename breaks code "
        "that calls ptdsl: keep the old name (deprecate it first) or make it a new major version (minor before "
        "1.0). If the change is intended, run `python tests/contract/regenerate_surface.py` and name each entry "
        "in CHANGELOG.md under [Unreleased] (### Added, ### Changed or ### Removed).")


def test_snapshot_keeps_history():
    """Removed entries stay, with the version they went in; every entry has a version it came in."""
    ok = {S.UNRELEASED} | {s.name for s in CL.releases(CL.parse()[0])}
    for category, entries in S.load().items():
        for name, e in entries.items():
            assert {"text", "since"} <= set(e) <= {"text", "since", "removed", "changed_in"}, (category, name, e)
            for key in ("since", "removed", "changed_in"):
                assert e.get(key, "0.1.0") in ok, f"{category}: {name}: {key} {e[key]} is no CHANGELOG.md release"


def _events():
    for category, entries in S.load().items():
        for name, e in entries.items():
            for key, what in (("since", "added"), ("changed_in", "changed"), ("removed", "removed")):
                if e.get(key, "0.1.0") != "0.1.0":
                    yield pytest.param(category, name, what, e[key], id=f"{category}:{name}:{what}")


@pytest.mark.parametrize("category, name, what, version", list(_events()))
def test_surface_change_is_in_the_changelog(category, name, what, version):
    sections = CL.parse()[0]
    title = "Unreleased" if version == S.UNRELEASED else version
    section = CL.section(title, sections)
    word = S.mention(category, name)
    named = section is not None and CL.mentions(section.text, word)
    assert named, (
        f"{category} `{name}` was {what} in {title}, but CHANGELOG.md's [{title}] section does not name "
        f"`{word}` ({RULE}). Add a line there" + (
            "; if that version is released already and the entry is still \"unreleased\", run "
            "`python tests/contract/regenerate_surface.py --release`" if title == "Unreleased" else ""))


def test_all_is_the_documented_stable_api():
    """`__all__` names exactly the stable API the package docstring lists, and each name exists."""
    import re
    listed = set(re.findall(r"`(\w+)`", ptdsl.__doc__.split("calls them):", 1)[1].split(";")[0]))
    assert set(ptdsl.__all__) == listed
    assert all(hasattr(ptdsl, n) for n in ptdsl.__all__)


def test_every_library_leaf_name_is_canonical():
    """Every input of every library method (at its defaults) is written in a form of its kind."""
    from ptdsl import library
    forms = L.forms()
    bad = [f"{m}: `{i.name}` ({i.kind})" for m in library.all_names() for i in ptdsl.compile(m).inputs
           if not L.matches(i.name, i.kind, forms)]
    assert not bad, f"leaf names outside the canonical grammar ({RULE}): " + "; ".join(bad)


@pytest.mark.parametrize("name, kind, ok", [
    ("logprobs(policy, chosen)", "logprobs", True), ("logprobs(old, y)", "logprobs", True),
    ("values(old(value), y)", "values", True), ("logprobs(policy, best(y, r))", "logprobs", True),
    ("mask(mismatched(completion))", "mask", True), ("sizes(responses)", "sizes", True),
    ("uniform@beta_dpo:32:25", "uniform", True), ("progress", "time", True), ("r(y)", "reward", True),
    ("logprobs(policy,chosen)", "logprobs", False), ("logprob(policy, chosen)", "logprobs", False),
    ("mask(y)", "logprobs", False), ("uniform@beta_dpo", "uniform", False), ("clock", "time", False),
])
def test_leaf_name_grammar(name, kind, ok):
    assert L.matches(name, kind) is ok


def test_a_surface_change_is_named():
    """A snapshot with an entry removed, one added and one changed: each is named."""
    snap = S.load()
    live = S.collect()
    live["cli"].pop("ptdsl train --model")
    live["cli"]["ptdsl train --model-path"] = "flag"
    live["signatures"]["load"] = "(path)"
    diffs = S.differences(snap, live)
    assert diffs == ["removed cli: ptdsl train --model", "added cli: ptdsl train --model-path",
                     f"changed signatures: load: {snap['signatures']['load']['text']} → (path)"]
    new = S.update(snap, live, "0.3.0")
    assert new["cli"]["ptdsl train --model"]["removed"] == "0.3.0"
    assert new["cli"]["ptdsl train --model-path"] == {"text": "flag", "since": "0.3.0"}
    assert new["signatures"]["load"]["changed_in"] == "0.3.0" and new["signatures"]["load"]["since"] == "0.1.0"
    assert S.differences(new, live) == []
    assert S.mention("cli", "ptdsl train --model-path") == "--model-path"
    assert S.mention("cli", "ptdsl graph <method>") == "graph" and S.mention("leaf_names", "sizes(ROWS)") == "sizes"
