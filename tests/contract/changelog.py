"""CHANGELOG.md read as data: the release sections, their subsections, and which versions are
breaking. The contract tests (numbers, surface) ask it whether a change was announced.

Before 1.0 the minor number is the "major" (SemVer's 0.x convention, docs/stability.md): 0.2 → 0.3
is a breaking release, 0.2.0 → 0.2.1 is not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATH = ROOT / "CHANGELOG.md"
HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?: - (?P<date>\S+))?\s*$")
SUBHEADING = re.compile(r"^### (?P<name>.+?)\s*$")
LINK = re.compile(r"^\[(?P<name>[^\]]+)\]: (?P<url>\S+)\s*$")
VERSION = re.compile(r"^\d+\.\d+\.\d+$")
KINDS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")


@dataclass
class Section:
    name: str                  # "Unreleased" or "X.Y.Z"
    date: str | None
    line: int                  # 1-based line of its heading
    subsections: dict[str, str] = field(default_factory=dict)  # "Changed" → its text
    text: str = ""             # everything under the heading


def parse(text: str | None = None) -> tuple[list[Section], dict[str, str]]:
    """The `## [...]` sections in file order, and the link references at the bottom."""
    text = PATH.read_text() if text is None else text
    sections: list[Section] = []
    links: dict[str, str] = {}
    sub = None
    for i, line in enumerate(text.splitlines(), 1):
        if m := HEADING.match(line):
            sections.append(Section(m["name"], m["date"], i))
            sub = None
        elif m := LINK.match(line):
            links[m["name"]] = m["url"]
        elif sections:
            if m := SUBHEADING.match(line):
                sub = m["name"]
                sections[-1].subsections.setdefault(sub, "")
            elif sub:
                sections[-1].subsections[sub] += line + "\n"
            sections[-1].text += line + "\n"
    return sections, links


def key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def breaking_part(version: str) -> tuple[int, ...]:
    """What must grow for a release to be breaking: the major, or before 1.0 the minor."""
    major, minor, _ = key(version)
    return (major,) if major else (0, minor)


def releases(sections: list[Section]) -> list[Section]:
    return [s for s in sections if s.name != "Unreleased"]


def newest_release(sections: list[Section] | None = None) -> Section:
    return releases(sections if sections is not None else parse()[0])[0]


def is_breaking(version: str, sections: list[Section] | None = None) -> bool:
    """A release whose major (minor before 1.0) is higher than the release before it; the
    first release counts as breaking (it starts the contract)."""
    older = [s.name for s in releases(sections if sections is not None else parse()[0])
             if VERSION.match(s.name) and key(s.name) < key(version)]
    return not older or breaking_part(version) > breaking_part(max(older, key=key))


def section(version: str, sections: list[Section] | None = None) -> Section | None:
    return next((s for s in (sections if sections is not None else parse()[0]) if s.name == version), None)


def mentions(text: str, name: str) -> bool:
    """`name` as a word of its own in `text` (`dpo`, not `cdpo`, `dpo_sft` or `--model` in `--model-path`)."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None
