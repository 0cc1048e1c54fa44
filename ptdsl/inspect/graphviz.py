"""SVG and PNG through Graphviz's `dot` binary (not a Python dependency: a
missing `dot` is a clear message, not a crash)."""
from __future__ import annotations

import shutil
import subprocess

INSTALL_HELP = ("install Graphviz (Debian/Ubuntu: `apt-get install graphviz`; macOS: `brew install graphviz`; "
                "conda: `conda install graphviz`), or use `--format dot` or `--format mermaid`")


class GraphvizMissing(RuntimeError):
    """The `dot` binary is not on PATH."""


class GraphvizFailed(RuntimeError):
    """`dot` rejected its input (a bug in the DOT emitter)."""


def render(dot_text: str, fmt: str) -> bytes:
    """`dot -T{fmt}` on the DOT text: the SVG or PNG bytes."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing(f"`--format {fmt}` needs Graphviz's `dot` program, which is not on PATH; "
                              + INSTALL_HELP)
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise GraphvizFailed(proc.stderr.decode(errors="replace").strip() or f"dot exited with {proc.returncode}")
    return proc.stdout
