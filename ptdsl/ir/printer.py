"""The IR's text form: one equation per line, with level and source location.

    %7 : f32[seq examples] = sub %3, %6                      # dpo.ptdsl:9:9  z
Leaves print their canonical query; constants their value (and parameter).
"""
from __future__ import annotations

from ptdsl.ir.graph import order


def _rhs(d) -> str:
    a = d["attrs"]
    if d["op"] == "leaf":
        flags = " trainable" if a.get("trainable") else ""
        return f"leaf {a['name']!r}{flags}"
    if d["op"] == "const":
        v = a["value"]
        text = str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)
        return f"const {text}" + (f"  ({a['param']})" if a.get("param") else "")
    args = ", ".join(f"%{x}" for x in d["args"])
    opts = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in a.items())
    return f"{d['op']} {args}" + (f" [{opts}]" if opts else "")


def print_ir(g) -> str:
    lines = []
    for n in order(g):
        d = g.nodes[n]
        lhs = f"%{n} : {d['level']}" if d.get("level") is not None else f"%{n}"
        loc = f"{d['span'].file.rsplit('/', 1)[-1]}:{d['span'].line}:{d['span'].col}" if d["span"] else ""
        name = f"  {d['name']}" if d["name"] else ""
        lines.append(f"{lhs:<28} = {_rhs(d):<46} # {loc}{name}".rstrip())
    if g.graph.get("loss") is not None:
        lines.append(f"loss = %{g.graph['loss']}")
    for k, v in g.graph["metrics"].items():
        lines.append(f"metric {k} = %{v}")
    return "\n".join(lines)
