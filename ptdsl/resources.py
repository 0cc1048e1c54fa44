"""Where the grammar and the method library live.

In a wheel they are packaged under ptdsl/_data/; in a source checkout they sit
at the repository's top level (grammar/, methods/). Both layouts are found here
and nowhere else.
"""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"ptdsl installation is missing its `{name}/` directory "
                            f"(looked in {_PKG / '_data'} and {_PKG.parent})")


def grammar_path() -> Path:
    return _find("grammar") / "ptdsl.lark"


def methods_dir() -> Path:
    return _find("methods")
