"""A compiled method's declarations as comparable text, section by section
(what `ptdsl diff` compares by name before it compares the loss graphs)."""
from __future__ import annotations


def _fmt(v) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def declarations(c) -> dict[str, dict[str, str]]:
    m, g = c.method, c.graph
    header = {"title": m.title, "paper": m.paper, "family": m.family, "stability": m.stability,
              "extends": m.extends}
    data = m.definition.data
    out = {
        "header": {k: v for k, v in header.items() if v},
        "data": {"kind": data.kind, **({"fields": ", ".join(f.id for f in data.fields)} if data.fields else {})},
        "roles": {name: r.source for name, r in g.graph["roles"].items() if r.kind != "old"},
        "rewards": {name: " + ".join(f'{_fmt(t.weight)} * {t.kind}("{t.name}")' for t in terms)
                    for name, terms in g.graph["rewards"].items()},
        "rollouts": {name: f"sample({r.model}, " + ", ".join(f"{k} = {_fmt(v)}" for k, v in r.options.items()) + ")"
                     for name, r in g.graph["rollouts"].items()},
        "params": {name: _fmt(c.params[name]) + (f"  ({p.constraint})" if p.constraint else "")
                   for name, p in m.params.items()},
        "metrics": {name: "metric" for name in g.graph["metrics"]},
        "inputs": {i.name: i.level + (" trainable" if i.trainable else "") for i in c.inputs},
    }
    return out
