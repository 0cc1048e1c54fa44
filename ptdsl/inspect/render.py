"""A GraphView as text, Graphviz DOT or Mermaid (and SVG/PNG through Graphviz).

Trainable paths are solid and blue; frozen ones dashed and grey; a trainable
query whose gradient is cut (detached) is dotted orange. Leaves are boxes, ops
rounded, the loss a double octagon and metrics notes. Output is deterministic
(node order is the IR's topological order), so rendered docs can be diffed.
"""
from __future__ import annotations

import shutil
import subprocess

from ptdsl.inspect.view import GraphView, NodeView

GRAD, FROZEN, DETACHED = "#1f6feb", "#8c959f", "#d4760a"
_MARK = {"grad": "●", "detached": "◐", "frozen": "○"}


def _title(v: GraphView) -> str:
    return f"{v.method} — {'optimised' if v.optimised else 'unoptimised'} loss graph"


# ---- text -----------------------------------------------------------------------

def to_text(v: GraphView) -> str:
    lines = [_title(v), "  ● on the loss's gradient path   ◐ trainable but detached   ○ no gradient", ""]
    args = {}
    for e in v.edges:
        args.setdefault(e.dst, []).append(e.src)
    leaves = [n for n in v.nodes if n.is_leaf]
    ops = [n for n in v.nodes if not n.is_leaf]
    w = max([len(n.label) for n in leaves] + [len(_op_text(n, args)) + 6 for n in ops] + [10])
    wl = max(len(n.level) for n in v.nodes) if v.nodes else 0
    lines.append("inputs")
    lines += [f"  {_MARK[n.flow]} {n.label:<{w}}  {n.level:<{wl}}  {n.where}" for n in leaves]
    lines += ["", "ops"]
    for n in ops:
        tail = f"  {n.name}" if n.name else ""
        lines.append(f"  {_MARK[n.flow]} {'%' + str(n.id):<5} {_op_text(n, args):<{w - 6}}  {n.level:<{wl}}  "
                     f"{n.where}{tail}")
    lines += ["", "outputs"] + [f"  {o.name} = %{o.node}" for o in v.outputs]
    return "\n".join(lines)


def _op_text(n: NodeView, args) -> str:
    refs = iter(f"%{a}" for a in args.get(n.id, []))
    if "•" in n.label:
        return "".join(next(refs, "•") if ch == "•" else ch for ch in n.label)
    rest = list(refs)
    return f"{n.label}({', '.join(rest)})" if rest else n.label


# ---- Graphviz DOT ---------------------------------------------------------------

def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_node(n: NodeView) -> str:
    label = "\\n".join([_esc(n.label)] + [_esc(x) for x in (n.level, n.where + (f"  {n.name}" if n.name else ""))
                                           if x.strip()])
    style = {"grad": "rounded,filled,bold" if not n.is_leaf else "filled,bold",
             "detached": "rounded,filled,dotted" if not n.is_leaf else "filled,dotted",
             "frozen": "rounded,filled,dashed" if not n.is_leaf else "filled,dashed"}[n.flow]
    color, fill = {"grad": (GRAD, "#dbeafe"), "detached": (DETACHED, "#fdebd3"), "frozen": (FROZEN, "#f3f4f6")}[n.flow]
    return (f'  n{n.id} [label="{label}", shape=box, style="{style}", color="{color}", '
            f'fillcolor="{fill}", fontcolor="{"#24292f" if n.flow != "frozen" else "#57606a"}"];')


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(v: GraphView) -> str:
    out = [f"digraph {_dot_str(v.method)} {{",
           f"  label={_dot_str(_title(v) + '  (solid blue: gradient path; dashed grey: no gradient)')};",
           '  labelloc=t; rankdir=TB; fontname="Helvetica"; fontsize=12;',
           '  node [fontname="Helvetica", fontsize=10]; edge [arrowsize=0.7];']
    out += [_dot_node(n) for n in v.nodes]
    for e in v.edges:
        attrs = f'color="{GRAD}", penwidth=1.8' if e.grad else f'color="{FROZEN}", style=dashed'
        out.append(f"  n{e.src} -> n{e.dst} [{attrs}];")
    for i, o in enumerate(v.outputs):
        shape = "doubleoctagon" if o.is_loss else "note"
        color = GRAD if o.is_loss else FROZEN
        out.append(f'  out{i} [label={_dot_str(o.name)}, shape={shape}, color="{color}", '
                   f'fontcolor="{color}", style={"bold" if o.is_loss else "dashed"}];')
        out.append(f'  n{o.node} -> out{i} [color="{color}"{"" if o.is_loss else ", style=dashed"}];')
    out.append("}")
    return "\n".join(out) + "\n"


# ---- Mermaid --------------------------------------------------------------------

def _mm(s: str) -> str:
    return s.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(v: GraphView) -> str:
    out = ["flowchart TB"]
    for n in v.nodes:
        text = "<br/>".join(_mm(x) for x in (n.label, n.level, n.where + (f" {n.name}" if n.name else ""))
                            if x.strip())
        box = f'["{text}"]' if n.is_leaf else f'("{text}")'
        out.append(f"  n{n.id}{box}:::{n.flow}")
    for i, o in enumerate(v.outputs):
        out.append(f'  out{i}{{{{"{_mm(o.name)}"}}}}:::loss' if o.is_loss else f'  out{i}>"{_mm(o.name)}"]:::metric')
    links, grad_links = [], []
    for e in v.edges:
        if e.grad:
            grad_links.append(len(links))
        links.append(f"  n{e.src} {'-->' if e.grad else '-.->'} n{e.dst}")
    for i, o in enumerate(v.outputs):
        if o.is_loss:
            grad_links.append(len(links))
        links.append(f"  n{o.node} {'==>' if o.is_loss else '-.->'} out{i}")
    out += links
    out += [f"  classDef grad fill:#dbeafe,stroke:{GRAD},stroke-width:2px,color:#24292f",
            f"  classDef detached fill:#fdebd3,stroke:{DETACHED},stroke-dasharray:2 2,color:#24292f",
            f"  classDef frozen fill:#f3f4f6,stroke:{FROZEN},stroke-dasharray:4 3,color:#57606a",
            f"  classDef loss fill:#dbeafe,stroke:{GRAD},stroke-width:3px",
            f"  classDef metric fill:#ffffff,stroke:{FROZEN},stroke-dasharray:4 3,color:#57606a"]
    if grad_links:
        out.append(f"  linkStyle {','.join(map(str, grad_links))} stroke:{GRAD},stroke-width:2px")
    return "\n".join(out) + "\n"


FORMATS = {"text": to_text, "dot": to_dot, "mermaid": to_mermaid}


# ---- SVG and PNG through Graphviz's `dot` binary (not a Python dependency: a missing
# `dot` is a clear message, not a crash) ---------------------------------------------
INSTALL_HELP = ("install Graphviz (Debian/Ubuntu: `apt-get install graphviz`; macOS: `brew install graphviz`; "
                "conda: `conda install graphviz`), or use `--format dot` or `--format mermaid`")


class GraphvizMissing(RuntimeError):
    """The `dot` binary is not on PATH."""


class GraphvizFailed(RuntimeError):
    """`dot` rejected its input (a bug in the DOT emitter)."""


def graphviz(dot_text: str, fmt: str) -> bytes:
    """`dot -T{fmt}` on the DOT text: the SVG or PNG bytes."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing(f"`--format {fmt}` needs Graphviz's `dot` program, which is not on PATH; "
                              + INSTALL_HELP)
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise GraphvizFailed(proc.stderr.decode(errors="replace").strip() or f"dot exited with {proc.returncode}")
    return proc.stdout
