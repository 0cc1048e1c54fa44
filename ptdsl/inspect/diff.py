"""What differs between two compiled methods.

Declarations are compared by name (header, data, roles, rewards, rollouts,
params, metrics). The loss graphs are compared structurally over the optimised
IR: nodes whose subexpressions hash alike (canon.py) are shared; of the rest, a
node of A and a node of B are the *same node changed* when they define the same
output or `let`, or sit at the same spec position with the same op, or have the
same op over operands that match. A changed node is reported when it changed
itself (its op, an attribute, a constant or an operand that is new); one that
changed only because an operand did is listed once, as a consequence. Nodes
left over are added (B) or removed (A); only the roots of such regions are
shown, as spec-like text, so `diff dpo cdpo` reads as one new term.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.inspect.canon import SILENT, expr_text, structural_hashes
from ptdsl.ir.graph import order, reachable
from ptdsl.syntax.resolve import data_summary


@dataclass(frozen=True)
class Change:
    section: str                 # header | data | roles | rewards | rollouts | params | metrics | inputs
    name: str
    a: str | None                # None: only in B (added)
    b: str | None                # None: only in A (removed)


@dataclass(frozen=True)
class NodeChange:
    kind: str                    # added | removed | changed
    where: str                   # spec position (B's, or A's for a removed node)
    a: str | None                # spec-like text in A
    b: str | None
    level: str
    label: str                   # the output or let it defines, if any ("loss", "metric x", "z")


@dataclass(frozen=True)
class MethodDiff:
    a: str
    b: str
    changes: tuple[Change, ...]
    nodes: tuple[NodeChange, ...]
    consequences: tuple[str, ...]  # nodes changed only through their operands
    shared: int
    total_a: int
    total_b: int

    @property
    def same(self) -> bool:
        return not self.changes and not self.nodes


def diff_methods(ca, cb, label_a: str | None = None, label_b: str | None = None) -> MethodDiff:
    da, db = declarations(ca), declarations(cb)
    changes = [Change(sec, name, da[sec].get(name), db[sec].get(name))
               for sec in da for name in _union(da[sec], db[sec]) if da[sec].get(name) != db[sec].get(name)]
    nodes, consequences, shared, na, nb = _graph_diff(ca.graph, cb.graph)
    return MethodDiff(label_a or ca.name, label_b or cb.name, tuple(changes), nodes, consequences, shared, na, nb)


def _fmt(v) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def declarations(c) -> dict[str, dict[str, str]]:
    """A compiled method's declarations as comparable text, section by section."""
    m, g = c.method, c.graph
    header = {"title": m.title, "paper": m.paper, "family": m.family, "stability": m.stability,
              "extends": m.extends}
    data = m.definition.data
    out = {
        "header": {k: v for k, v in header.items() if v},
        "data": {"kind": data_summary(m.definition), **({"fields": ", ".join(f.id for f in data.fields)} if data.fields else {})},
        "roles": {name: r.source for name, r in g.graph["roles"].items() if r.kind != "old"},
        "rewards": {name: " + ".join(f'{_fmt(t.weight)} * {t.kind}("{t.name}")' for t in terms)
                    for name, terms in g.graph["rewards"].items()},
        "rollouts": {name: f"{r.kind}({r.model}, " + (f'environment("{r.env}"), ' if r.env else "")
                     + ", ".join(f"{k} = {_fmt(v)}" for k, v in r.options.items()) + ")"
                     for name, r in g.graph["rollouts"].items()},
        "params": {name: _fmt(c.params[name]) + (f"  ({p.constraint})" if p.constraint else "")
                   for name, p in m.params.items()},
        "metrics": {name: "metric" for name in g.graph["metrics"]},
        "inputs": {i.name: i.level + (" trainable" if i.trainable else "") for i in c.inputs},
    }
    return out


def _union(x: dict, y: dict) -> list:
    return list(x) + [k for k in y if k not in x]


def _outputs(g) -> dict[int, str]:
    out = {v: f"metric {k}" for k, v in g.graph["metrics"].items()}
    if g.graph.get("loss") is not None:
        out[g.graph["loss"]] = "loss"
    return out


def _live(g) -> list[int]:
    keep = reachable(g)
    return [n for n in order(g) if n in keep and g.nodes[n]["op"] not in ("const", "leaf")]


def _graph_diff(ga, gb):
    ha, hb = structural_hashes(ga), structural_hashes(gb)
    live_a, live_b = _live(ga), _live(gb)
    in_a, in_b = {ha[n] for n in live_a}, {hb[n] for n in live_b}
    only_a = [n for n in live_a if ha[n] not in in_b]
    only_b = [n for n in live_b if hb[n] not in in_a]
    pairs = _pair(ga, gb, ha, hb, only_a, only_b)
    paired_a = {x for x, _ in pairs.items()}
    paired_b = {y: x for x, y in pairs.items()}
    outs_a, outs_b = _outputs(ga), _outputs(gb)
    added = [y for y in only_b if y not in paired_b]
    removed = [x for x in only_a if x not in paired_a]
    nodes, consequences = [], []
    for y in only_b:
        d = gb.nodes[y]
        label = outs_b.get(y) or d.get("name") or ""
        if y in paired_b:
            x = paired_b[y]
            text_a, text_b = expr_text(ga, x), expr_text(gb, y)
            # the same text means the change is inside a `let` it names, reported there
            if _local_change(ga, gb, ha, hb, x, y, pairs) and text_a != text_b:
                nodes.append(NodeChange("changed", _where(d), text_a, text_b, str(d["level"]), label))
            elif label:
                consequences.append(label)
    for y in _shown(gb, added):
        d = gb.nodes[y]
        nodes.append(NodeChange("added", _where(d), None, expr_text(gb, y), str(d["level"]),
                                outs_b.get(y) or d.get("name") or ""))
    for x in _shown(ga, removed):
        d = ga.nodes[x]
        nodes.append(NodeChange("removed", _where(d), expr_text(ga, x), None, str(d["level"]),
                                outs_a.get(x) or d.get("name") or ""))
    shared = len(live_b) - len(only_b)
    return tuple(nodes), tuple(dict.fromkeys(consequences)), shared, len(live_a), len(live_b)


def _pair(ga, gb, ha, hb, only_a, only_b) -> dict[int, int]:
    """Unmatched node of A → the node of B it became."""
    pairs: dict[int, int] = {}
    free_a = list(only_a)

    def take(y, test) -> None:
        for x in free_a:
            if test(x, y):
                pairs[x] = y
                free_a.remove(x)
                return

    outs_a, outs_b = _outputs(ga), _outputs(gb)
    for y in only_b:  # same output, or same `let`
        key = outs_b.get(y) or gb.nodes[y].get("name")
        if key:
            take(y, lambda x, y: (outs_a.get(x) or ga.nodes[x].get("name")) == key)
    for y in only_b:  # same op at the same spec position (a variant inherits its parent's spans)
        if y not in pairs.values():
            take(y, lambda x, y: ga.nodes[x]["op"] == gb.nodes[y]["op"] and ga.nodes[x]["span"] == gb.nodes[y]["span"])
    for y in only_b:  # same op over at least one matching operand 
        if y not in pairs.values():
            take(y, lambda x, y: ga.nodes[x]["op"] == gb.nodes[y]["op"] and
                 any(_same_operand(ha, hb, pairs, p, q) and not _weak(gb, q)
                     for p, q in zip(ga.nodes[x]["args"], gb.nodes[y]["args"])))
    return pairs


def _weak(g, n) -> bool:
    """Operands too common to tie two nodes together: constants, masks and list sizes."""
    d = g.nodes[n]
    return d["op"] == "const" or (d["op"] == "leaf" and d["attrs"]["kind"] in ("mask", "sizes"))


def _same_operand(ha, hb, pairs, p, q) -> bool:
    return ha[p] == hb[q] or pairs.get(p) == q


def _local_change(ga, gb, ha, hb, x, y, pairs) -> bool:
    dx, dy = ga.nodes[x], gb.nodes[y]
    if dx["op"] != dy["op"] or dx["attrs"] != dy["attrs"] or len(dx["args"]) != len(dy["args"]):
        return True
    return not all(_same_operand(ha, hb, pairs, p, q) for p, q in zip(dx["args"], dy["args"]))


def _shown(g, region_nodes: list) -> list[int]:
    """The nodes that stand for an added (or removed) region: its roots, except that a root
    joining old operands with new ones (cdpo's `… - 0.1 * logsigmoid(-z)`) is shown by its new
    operands, the joint itself being visible in the changed line of its user."""
    region = set(region_nodes)
    out: list[int] = []

    def visit(n):
        new = [a for a in g.nodes[n]["args"] if a in region]
        old = [a for a in g.nodes[n]["args"] if a not in region and g.nodes[a]["op"] != "const"]
        if new and old:
            for a in new:
                visit(a)
        elif n not in out and g.nodes[n]["op"] not in SILENT:
            out.append(n)
    for n in region_nodes:
        if not any(u in region for u in g.successors(n)):
            visit(n)
    return out


def _where(d) -> str:
    s = d["span"]
    return f"{s.file.rsplit('/', 1)[-1]}:{s.line}:{s.col}" if s else "?"
