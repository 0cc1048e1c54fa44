"""The committed paper index docs/methods.md is what `ptdsl list --format markdown`
generates from the spec headers (regenerate: `ptdsl list --format markdown > docs/methods.md`)."""
from pathlib import Path

from ptdsl import library
from ptdsl.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_docs_methods_md_is_in_sync(capsys):
    assert main(["list", "--format", "markdown"]) == 0
    generated = capsys.readouterr().out
    assert (ROOT / "docs" / "methods.md").read_text() == generated, \
        "docs/methods.md is stale: run `ptdsl list --format markdown > docs/methods.md`"


def test_every_method_has_a_complete_header():
    from ptdsl.compiler import define
    for name in library.all_names():
        m = define(name)
        assert m.title and m.family and m.paper, f"{name}: title, family and paper are required"
        assert m.stability in ("stable", "experimental"), name


def test_catalogue_notes_come_from_the_specs_own_hash_colon_lines(tmp_path, capsys):
    """`#:` lines are a method's catalogue note (joined); a variant does not inherit its parent's."""
    import json
    (tmp_path / "parent.ptdsl").write_text('method parent "P"\npaper "p"\nfamily "f"\n'
                                           "#: first line,\n  #:   second line.\n# not a note\n"
                                           "data sft\npolicy\nloss mean(logp(policy, completion))\n")
    (tmp_path / "child.ptdsl").write_text('method child extends parent "C"\n')
    from ptdsl.cli.main import _catalogue_note
    from ptdsl.compiler import define
    for name, want in (("parent", "first line, second line."), ("child", "")):
        m = define(str(tmp_path / f"{name}.ptdsl"))
        assert _catalogue_note(m.sources.get(m.path, "")) == want
    assert main(["list", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "TRL 1.16" in rows["dpo"]["note"] and rows["grpo"]["note"] == ""
