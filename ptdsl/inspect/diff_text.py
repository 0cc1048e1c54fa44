"""A MethodDiff for a terminal (`+` only in B, `-` only in A, `~` changed; colour on
a TTY) or as JSON for tools."""
from __future__ import annotations

import json
from dataclasses import asdict

from ptdsl.inspect.diff import MethodDiff

_COLOR = {"+": "\033[32m", "-": "\033[31m", "~": "\033[33m"}
_RESET = "\033[0m"
_SECTIONS = ("header", "data", "roles", "rewards", "rollouts", "params", "inputs", "metrics")


def to_json(d: MethodDiff) -> str:
    return json.dumps({**asdict(d), "same": d.same}, indent=2, ensure_ascii=False)


def to_text(d: MethodDiff, color: bool = False) -> str:
    paint = (lambda mark, s: f"{_COLOR[mark]}{s}{_RESET}") if color else (lambda mark, s: s)
    lines = [f"--- {d.a}", f"+++ {d.b}"]
    if d.same:
        return "\n".join(lines + ["", "no differences: same declarations, and the optimised loss graphs "
                                  f"match node for node ({d.shared} nodes)"])
    for section in _SECTIONS:
        rows = [c for c in d.changes if c.section == section]
        if not rows:
            continue
        lines += ["", section]
        w = max(len(c.name) for c in rows)
        for c in rows:
            if c.a is None:
                lines.append(paint("+", f"  + {c.name:<{w}}  {c.b}"))
            elif c.b is None:
                lines.append(paint("-", f"  - {c.name:<{w}}  {c.a}"))
            else:
                lines.append(paint("~", f"  ~ {c.name:<{w}}  {c.a}  →  {c.b}"))
    lines += ["", f"loss graph (optimised IR, ops matched by structure: {d.shared} shared; "
                  f"{d.a} has {d.total_a}, {d.b} {d.total_b})"]
    if not d.nodes:
        lines.append("  no structural change")
    w = max((len(n.where) for n in d.nodes), default=0)
    for n in d.nodes:
        label = f"  [{n.label}]" if n.label else ""
        if n.kind == "added":
            lines.append(paint("+", f"  + {n.where:<{w}}  {n.b}{label}"))
        elif n.kind == "removed":
            lines.append(paint("-", f"  - {n.where:<{w}}  {n.a}{label}"))
        else:
            lines.append(paint("~", f"  ~ {n.where:<{w}}  {n.a}{label}"))
            lines.append(paint("~", f"    {'':<{w}}  → {n.b}"))
    if d.consequences:
        lines.append(f"  changed through their operands: {', '.join(d.consequences)}")
    return "\n".join(lines)
