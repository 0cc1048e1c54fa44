"""The graduation criteria hold for every stable method (stability contract,
docs/stability.md#graduation), and docs/stability.md's table of methods follows the tests.

A failure names the method and the criterion it lacks: add the missing test, or demote the
method to `experimental` with a `#:` note saying what is missing.
"""
from __future__ import annotations

import shutil

import pytest

from ptdsl import library
from tests.contract import graduation
from tests.contract.graduation import CRITERIA, DOC, MARKER, failures, markdown, standings


@pytest.fixture(scope="module")
def found():
    return standings()


def test_every_stable_method_meets_the_criteria(found):
    assert failures(found) == []


def test_every_library_method_is_judged(found):
    assert list(found) == library.all_names()
    assert {s.stability for s in found.values()} <= {"stable", "experimental"}


def test_demoted_methods_say_what_is_missing(found):
    """An experimental method that misses a criterion and carries a `#:` note about graduation
    names each missing criterion there, so the note and the tests cannot drift apart."""
    for s in found.values():
        notes = " ".join(line[2:].strip() for line in library.find(s.name).read_text().splitlines()
                         if line.startswith("#:"))
        graduation_notes = notes[notes.find("docs/stability.md#graduation"):] if "#graduation" in notes else ""
        if s.stability == "experimental" and graduation_notes:
            assert s.missing, f"`{s.name}` meets every criterion: promote it or drop its note"
            for c in s.missing:
                assert CRITERIA[c] in graduation_notes, f"`{s.name}`'s note does not name {CRITERIA[c]}"


def test_docs_table_is_in_sync(found):
    text = DOC.read_text()
    assert MARKER in text, f"{DOC} lost its generated table"
    assert text[text.index(MARKER):] == markdown(found), \
        "docs/stability.md is out of date: run `python tests/contract/graduation.py --write`"


def test_docs_define_the_contract_rules():
    """The anchors the diagnostics and tests cite (docs/stability.md#c1-numbers, …) exist."""
    headings = {line for line in DOC.read_text().splitlines() if line.startswith("#")}
    for heading in ("## C1 numbers", "## C2 meaning", "## C3 names", "## Graduation"):
        assert heading in headings, heading


def test_a_stable_spec_without_tests_fails(found, tmp_path, monkeypatch):
    """A new stable spec with no reference, TRL or equivalence case is reported for each
    criterion, by name; the same spec marked experimental is not."""
    shutil.copytree(library.methods_dir(), tmp_path / "methods")
    spec = (tmp_path / "methods" / "dpo.ptdsl").read_text().replace("method dpo ", "method dpo_copy ")
    (tmp_path / "methods" / "dpo_copy.ptdsl").write_text(spec)
    monkeypatch.setattr(library, "methods_dir", lambda: tmp_path / "methods")
    found = graduation.standings()
    assert found["dpo_copy"].missing == tuple(CRITERIA)
    assert failures(found) == [f"`dpo_copy` is stable but lacks {CRITERIA[c]} (stability contract, "
                               "docs/stability.md#graduation)" for c in CRITERIA]
    (tmp_path / "methods" / "dpo_copy.ptdsl").write_text(spec.replace("\nstable\n", "\nexperimental\n"))
    assert failures(graduation.standings()) == []


def test_an_identity_row_counts_for_both_sides_but_a_reparameterisation_does_not(found):
    """`cdpo` is on the right of I5/I16 rows; `step_dpo` is only a declared re-parameterisation
    of DPO (the same loss by construction), which does not graduate it."""
    assert "equivalence" in found["cdpo"].met and "equivalence" in found["dpo"].met
    assert "equivalence" in found["sft"].met  # a Term inside a sum (I15's CHOSEN_NLL)
    assert found["step_dpo"].missing == ("equivalence",)
