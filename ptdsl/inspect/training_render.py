"""A TrainingGraph as text, Graphviz DOT or Mermaid (SVG and PNG through render.graphviz).

The text is a schedule (DESIGN.md, "The training graph"): one line per thing the trainer
does, in order, labelled with its stage and tagged with when it happens. The diagrams
group the stages by phase (once before training; as each experience is made; every
optimizer step, looped passes × mini-batches times per experience), chain them in order,
and draw each model beside the stages it runs in: a solid blue edge where the loss's
gradient flows back through the forward, a dashed grey one where it runs without.
Deterministic, like the loss-graph renderers, so rendered docs can be diffed.
"""
from __future__ import annotations

from ptdsl.inspect.render import FROZEN, GRAD, _dot_str, _esc, _mm
from ptdsl.inspect.training import PHASES, Model, TrainingGraph

LABEL = 12          # width of the stage column
TAG_AT = 60         # the `[when]` tags line up here (or after a longer line)


def _title(t: TrainingGraph) -> str:
    return f"{t.method} — training graph"


def _model_text(m: Model) -> str:
    notes = (["trained"] if m.trained else []) + [f"with {h}" for h in m.heads]
    return (m.name if m.source == m.name else f"{m.name} = {m.source}") + (f" ({', '.join(notes)})" if notes else "")


# ---- text -------------------------------------------------------------------------------

def schedule_lines(t: TrainingGraph) -> list[str]:
    """The schedule without its title: `ptdsl show`'s "training graph" section."""
    rows = [("models", " · ".join(_model_text(m) for m in t.models), "")]
    for s in t.stages:
        rows += [(s.name if i == 0 else "", line.text, line.when) for i, line in enumerate(s.lines)]
    width = min(max(len(text) for _, text, when in rows if when), TAG_AT) if any(w for *_, w in rows) else 0
    return [(f"{label:<{LABEL}}{text:<{width}}  [{when}]" if when else f"{label:<{LABEL}}{text}").rstrip()
            for label, text, when in rows]


def to_text(t: TrainingGraph) -> str:
    return "\n".join([_title(t), *schedule_lines(t)])


# ---- the diagrams' shared shape ------------------------------------------------------------

def _flows(t: TrainingGraph) -> list[tuple[str, str, str, bool]]:
    """(from, to, label, loop-back) between stages: the pipeline, the cache into the step, and the
    loops back for the next mini-batch and the next experience."""
    made = [s.name for s in t.stages if s.phase != "setup"]
    out = [(a, b, "", False) for a, b in zip(made, made[1:])]
    if t.stage("precompute"):
        out.append(("precompute", "forward" if t.stage("forward") else "optimize", "cached", False))
    if t.steps_per_experience != "1":
        out.append(("optimize", "reuse", f"next mini-batch ({t.steps_per_experience} steps per experience)", True))
    out.append(("optimize", "sources", "next experience", True))
    return out


def _cluster_label(phase: str, t: TrainingGraph) -> str:
    if phase != "step":
        return PHASES[phase]
    return f"{PHASES[phase]} ({t.steps_per_experience} per experience)"


def _stage_text(s, sep: str, esc) -> str:
    return sep.join([esc(s.name)] + [esc(line.text + (f"  [{line.when}]" if line.when else "")) for line in s.lines])


def _model_edges(t: TrainingGraph):
    """(model, stage, label, grad) for each forward and sampling in a stage."""
    for s in t.stages:
        for r in s.runs:
            yield r.model, s.name, ("samples " if s.name == "sample" else "on ") + ", ".join(r.sets), r.grad


# ---- Graphviz DOT ----------------------------------------------------------------------------

def to_dot(t: TrainingGraph) -> str:
    out = [f"digraph {_dot_str(t.method)} {{", f"  label={_dot_str(_title(t))};",
           '  labelloc=t; rankdir=TB; fontname="Helvetica"; fontsize=12; compound=true;',
           '  node [fontname="Helvetica", fontsize=10]; edge [fontname="Helvetica", fontsize=9, arrowsize=0.7];']
    for i, phase in enumerate(PHASES):
        stages = [s for s in t.stages if s.phase == phase]
        if not stages:
            continue
        out += [f"  subgraph cluster_{i} {{", f"    label={_dot_str(_cluster_label(phase, t))};",
                '    style="rounded,dashed"; color="#8c959f";']
        for s in stages:
            shape = "hexagon" if s.name == "reuse" else "box"
            out.append(f'    "s_{s.name}" [label="{_stage_text(s, chr(92) + "l", _esc)}\\l", shape={shape}, '
                       f'style="rounded,filled", fillcolor="#f6f8fa"];')
        out.append("  }")
    for m in t.models:
        color = GRAD if m.trained else FROZEN
        out.append(f'  "m_{m.name}" [label={_dot_str(_model_text(m))}, shape=ellipse, color="{color}", '
                   f'fontcolor="{color}"];')
    for a, b, label, back in _flows(t):
        attrs = [f"label={_dot_str(label)}"] if label else []
        attrs += ["style=dashed", "constraint=false"] if back else []
        out.append(f'  "s_{a}" -> "s_{b}"' + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    for model, stage, label, grad in _model_edges(t):
        style = f'color="{GRAD}", penwidth=1.8' if grad else f'color="{FROZEN}", style=dashed'
        out.append(f'  "m_{model}" -> "s_{stage}" [label={_dot_str(label)}, {style}];')
    out.append("}")
    return "\n".join(out) + "\n"


# ---- Mermaid ----------------------------------------------------------------------------------

def to_mermaid(t: TrainingGraph) -> str:
    out = ["flowchart TB"]
    for i, phase in enumerate(PHASES):
        stages = [s for s in t.stages if s.phase == phase]
        if not stages:
            continue
        out.append(f'  subgraph p{i}["{_mm(_cluster_label(phase, t))}"]')
        for s in stages:
            text = _stage_text(s, "<br/>", _mm)
            out.append(f'    s_{s.name}{{{{"{text}"}}}}' if s.name == "reuse" else f'    s_{s.name}["{text}"]')
        out.append("  end")
    for m in t.models:
        out.append(f'  m_{m.name}(["{_mm(_model_text(m))}"]):::{"trained" if m.trained else "fixed"}')
    links, grad_links = [], []
    for a, b, label, back in _flows(t):
        arrow = "-.->" if back else "-->"
        links.append(f"  s_{a} {arrow}" + (f'|"{_mm(label)}"|' if label else "") + f" s_{b}")
    for model, stage, label, grad in _model_edges(t):
        if grad:
            grad_links.append(len(links))
        links.append(f'  m_{model} {"==>" if grad else "-.->"}|"{_mm(label)}"| s_{stage}')
    out += links
    out += [f"  classDef trained fill:#dbeafe,stroke:{GRAD},stroke-width:2px,color:#24292f",
            f"  classDef fixed fill:#f3f4f6,stroke:{FROZEN},stroke-dasharray:4 3,color:#57606a"]
    if grad_links:
        out.append(f"  linkStyle {','.join(map(str, grad_links))} stroke:{GRAD},stroke-width:2px")
    return "\n".join(out) + "\n"


FORMATS = {"text": to_text, "dot": to_dot, "mermaid": to_mermaid}
