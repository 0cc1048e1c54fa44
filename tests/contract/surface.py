"""The public surface under stability contract C3 (docs/stability.md#c3-names), collected from the
live code: `ptdsl.__all__`, the stable functions' signatures, the public attributes of `Method` and
`CompiledMethod`, `ptdsl.train`'s options, the CLI's commands and flags, the leaf-name grammar.

The snapshot (tests/contract/surface.json) maps category → entry name → {"text", "since", and
"removed" or "changed_in" where that happened}. An entry never vanishes: a removed one keeps its
place with `removed`. Versions are X.Y.Z or "unreleased" (not yet in a release; `python
tests/contract/regenerate_surface.py --release` stamps them with the version when it is released).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from pathlib import Path

PATH = Path(__file__).resolve().parent / "surface.json"
STABLE_FUNCTIONS = ("load", "compile", "equivalent", "train")
UNRELEASED = "unreleased"


def collect() -> dict[str, dict[str, str]]:
    """Category → entry name → its text (a signature, a kind, the choices of a flag …)."""
    import ptdsl
    from ptdsl.runtime.loop import TrainOptions
    from tests.contract import leafnames
    return {
        "api": {n: _kind(getattr(ptdsl, n)) for n in ptdsl.__all__},
        "signatures": {n: str(inspect.signature(getattr(ptdsl, n))) for n in STABLE_FUNCTIONS},
        "Method": _attributes(ptdsl.Method),
        "CompiledMethod": _attributes(ptdsl.CompiledMethod),
        "train_options": {f.name: _default(f) for f in dataclasses.fields(TrainOptions)},
        "cli": _cli(),
        "leaf_names": {**{f"{p} := ": g for p, g in leafnames.PARTS.items()},
                       **{f: f"kind {k}" for f, k in leafnames.forms().items()}},
    }


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"default {f.default!r}"
    return "default from a factory" if f.default_factory is not dataclasses.MISSING else "required"


def _kind(obj) -> str:
    return "class" if isinstance(obj, type) else "function" if callable(obj) else type(obj).__name__


def _attributes(cls) -> dict[str, str]:
    out = {}
    for name, value in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        if isinstance(inspect.getattr_static(cls, name), (property,)) or not callable(value):
            out[name] = "property"
        else:
            out[name] = "method " + str(inspect.signature(value))
    return out


def _cli() -> dict[str, str]:
    """`ptdsl FLAG`, `ptdsl COMMAND`, `ptdsl COMMAND FLAG` and `ptdsl COMMAND <POSITIONAL>`: one entry
    per spelling a user types (a flag's alias is a name of its own: adding one removes nothing)."""
    from ptdsl.cli.main import build_parser
    parser = build_parser()
    out = {f"ptdsl {f}": _choices(a) for a in parser._actions
           if not isinstance(a, argparse._HelpAction) for f in a.option_strings}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for command, sub in a.choices.items():
                out[f"ptdsl {command}"] = "command"
                for b in sub._actions:
                    if isinstance(b, argparse._HelpAction):
                        continue
                    for name in b.option_strings or [f"<{b.dest}>"]:
                        out[f"ptdsl {command} {name}"] = _choices(b)
    return out


def _choices(action) -> str:
    return "choices " + "|".join(map(str, action.choices)) if action.choices else "flag" if action.option_strings else "argument"


def mention(category: str, name: str) -> str:
    """The word CHANGELOG.md must name for an entry: a flag, a command, an attribute, a form's head."""
    if category == "cli":  # `ptdsl train --model` → --model, `ptdsl graph` and `ptdsl graph <method>` → graph
        last = name.split()[-1]
        return name.split()[1] if last.startswith("<") else last
    if category == "leaf_names":
        return name.split("(")[0].split("@")[0].split(" ")[0]
    return name


def load() -> dict:
    return json.loads(PATH.read_text())


def dump(snapshot: dict) -> str:
    return json.dumps(snapshot, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def live_view(snapshot: dict) -> dict[str, dict[str, str]]:
    """The snapshot's entries that are not removed, as collect() gives them."""
    return {c: {n: e["text"] for n, e in entries.items() if "removed" not in e} for c, entries in snapshot.items()}


def differences(snapshot: dict, live: dict) -> list[str]:
    """`added`, `removed` and `changed` lines, one per entry, naming the category and the entry."""
    out = []
    old = live_view(snapshot)
    for category in sorted(set(old) | set(live)):
        a, b = old.get(category, {}), live.get(category, {})
        out += [f"removed {category}: {n}" for n in sorted(set(a) - set(b))]
        out += [f"added {category}: {n}" for n in sorted(set(b) - set(a))]
        out += [f"changed {category}: {n}: {a[n]} → {b[n]}" for n in sorted(set(a) & set(b)) if a[n] != b[n]]
    return out


def update(snapshot: dict, live: dict, version: str) -> dict:
    """The snapshot after `live`: new entries get `since` = version, gone ones `removed`, changed
    ones `changed_in`; history is kept."""
    out = json.loads(json.dumps(snapshot))
    for category, entries in live.items():
        known = out.setdefault(category, {})
        for name, text in entries.items():
            e = known.get(name)
            if e is None or "removed" in e:
                known[name] = {"text": text, "since": version}
            elif e["text"] != text:
                e.update(text=text, changed_in=version)
    for category, known in out.items():
        for name, e in known.items():
            if name not in live.get(category, {}) and "removed" not in e:
                e["removed"] = version
    return out


def stamp(snapshot: dict, version: str) -> dict:
    """At a release: every "unreleased" version becomes `version`."""
    return {c: {n: {k: (version if v == UNRELEASED else v) for k, v in e.items()} for n, e in entries.items()}
            for c, entries in snapshot.items()}
