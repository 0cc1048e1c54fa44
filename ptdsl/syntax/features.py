"""Feature levels: the stability contract's rule C2 (docs/stability.md#c2-meaning) in data.

Every language feature — a statement form, builtin, option, data kind or role — carries a
`Feature`: its level (`stable` features keep their meaning within a major version;
`experimental` ones may change), the language version it arrived in (`since`), and, once it
is on its way out, its `Deprecation`. The feature sits beside its definition, in the table
that defines it (ir/builtins.py, ir/datakinds.py, ir/ops.py, syntax/ast.py's statement
forms), so a new entry cannot be added without one; passes/features.py checks a method's
uses against them. Before 1.0 the minor number is the major one (0.2 → 0.3 may break).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

STABLE, EXPERIMENTAL = "stable", "experimental"


@dataclass(frozen=True)
class Deprecation:
    replacement: str           # what to write instead, as spec text
    removal: str               # the language version that removes it, e.g. "0.4"
    mechanical: bool = False   # `ptdsl migrate` can rewrite it (syntax/migrate.py has the rewrite)


@dataclass(frozen=True)
class Feature:
    level: str                 # STABLE | EXPERIMENTAL
    since: str                 # the language version it arrived in, "MAJOR.MINOR"
    deprecated: Deprecation | None = None


# The two releases so far: 0.1 the language, 0.2 the training graph (CHANGELOG.md).
STABLE_01 = Feature(STABLE, "0.1")
STABLE_02 = Feature(STABLE, "0.2")
EXPERIMENTAL_02 = Feature(EXPERIMENTAL, "0.2")
STABLE_03 = Feature(STABLE, "0.3")  # unreleased: arrives with the next minor version
EXPERIMENTAL_03 = Feature(EXPERIMENTAL, "0.3")


class FeatureTable(dict):
    """A definition table (name → its definition) whose every entry also has a Feature.
    It is a dict of the definitions, so the code that reads a table is unchanged."""

    def __init__(self, rows: dict):
        super().__init__({name: value for name, (value, _) in rows.items()})
        self.features: dict[str, Feature] = {name: feature for name, (_, feature) in rows.items()}


def featured(rows: dict) -> FeatureTable:
    """`{name: (definition, Feature)}` → a FeatureTable."""
    return FeatureTable(rows)


def names(rows: dict) -> FeatureTable:
    """`{name: Feature}` for a table of names only (set functions, role sources …): each
    name's definition is its Feature."""
    return FeatureTable({name: (feature, feature) for name, feature in rows.items()})


VERSION = re.compile(r"(\d+)\.(\d+)")


def version_key(text: str) -> tuple[int, int] | None:
    """`"0.2"` or `"0.2.0"` → (0, 2): the language version (MAJOR.MINOR; a patch release never
    changes the language). None if the text is not a version."""
    m = VERSION.fullmatch(text) or re.fullmatch(r"(\d+)\.(\d+)\.\d+", text)
    return (int(m.group(1)), int(m.group(2))) if m else None
