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
