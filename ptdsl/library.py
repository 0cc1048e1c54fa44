"""The method library: spec files under methods/ (and methods/experimental/)."""
from __future__ import annotations

from pathlib import Path

from ptdsl.resources import methods_dir


def all_paths() -> dict[str, Path]:
    root = methods_dir()
    found = {p.stem: p for p in sorted(root.glob("*.ptdsl"))}
    for p in sorted((root / "experimental").glob("*.ptdsl")):
        found.setdefault(p.stem, p)
    return found


def all_names() -> list[str]:
    return sorted(all_paths())


def find(name_or_path: str) -> Path | None:
    """A path as given (if it names a file), else a library method by name."""
    p = Path(name_or_path)
    if p.suffix == ".ptdsl" or "/" in name_or_path or p.is_file():
        return p if p.is_file() else None
    return all_paths().get(name_or_path)
