"""docs/graphs/ follows the specs: its Mermaid regenerates byte for byte, and every
gallery method is stable and has its SVG (regenerate: python -m ptdsl.inspect.gallery docs/graphs)."""
from pathlib import Path

from ptdsl.compiler import define
from ptdsl.inspect.gallery import GALLERY, gallery_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "graphs"


def test_mermaid_in_docs_matches_the_specs():
    assert (DOCS / "README.md").read_text(encoding="utf-8") == gallery_markdown(list(GALLERY)), \
        "docs/graphs is out of date: run `python -m ptdsl.inspect.gallery docs/graphs`"


def test_gallery_methods_are_stable_and_have_svgs():
    for name in GALLERY:
        assert define(name).stability == "stable", name
        svg = (DOCS / f"{name}.svg").read_text(encoding="utf-8")
        assert "<svg" in svg and f"{name} — optimised loss graph" in svg
