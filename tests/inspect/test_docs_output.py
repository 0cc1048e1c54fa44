"""Printed examples in the docs are the commands' output: every fenced block in the files
below that starts with `$ ptdsl …` (no pipe, no `-o FILE`) and is not cut short with `…`
holds exactly what that command prints today on standard output. Regenerate after an intended change with
PTDSL_UPDATE_DOCS=1 (rewrites the blocks in place)."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ("docs/language.md", "docs/howto/inspect.md")
BLOCK = re.compile(r"^```[a-z]*\n\$ (ptdsl [^\n|]*)\n(.*?)^```$", re.S | re.M)


def _blocks():
    for rel in FILES:
        for m in BLOCK.finditer((ROOT / rel).read_text(encoding="utf-8")):
            if "…" not in m.group(2) and " -o " not in m.group(1):
                yield pytest.param(rel, m.group(1), id=f"{rel}:{m.group(1)}")


def _output(command: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *shlex.split(command)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("rel,command", list(_blocks()))
def test_printed_example_is_the_output(rel, command):
    path = ROOT / rel
    text = path.read_text(encoding="utf-8")
    block = next(m for m in BLOCK.finditer(text) if m.group(1) == command and "…" not in m.group(2))
    assert command.split()[1] in ("graph", "show", "diff", "list", "check"), "only commands that run no model"
    expected = _output(command)
    if os.environ.get("PTDSL_UPDATE_DOCS") and block.group(2) != expected:
        path.write_text(text[:block.start(2)] + expected + text[block.end(2):], encoding="utf-8")
        return
    assert block.group(2) == expected, f"{rel}: `{command}` prints something else now (PTDSL_UPDATE_DOCS=1)"


def test_the_training_graph_chapter_prints_grpo_and_ppo():
    commands = [c for rel, c in (p.values for p in _blocks()) if rel == "docs/language.md"]
    assert "ptdsl graph grpo --training --set num_iterations=2" in commands
    assert "ptdsl graph ppo --training" in commands
