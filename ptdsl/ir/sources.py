"""Data sources: the datasets a method reads, each with its kind, sets and fields, and
the mixing rule that fills a micro-batch from them.

A one-source spec (`data preference`) has one source on the row space `examples`.
Named sources (`data forget: sft`, `data retain: sft`) each get a row space named after
the source, so per-row values of two sources never combine elementwise (the levels pass
rejects it, as it does for two rollouts); reductions to scalars combine freely. Sets and
fields keep one namespace across sources, so an expression names a set without
qualifying it; a source renames the kind's sets and fields where two would clash
(`data retain: sft(completion = retained)`: the set `retained` reads the column
`completion`). `mix forget = 1, retain = 2` gives each source's rows per micro-batch
relative to the first source's (--batch-size); a source it does not name has weight 1.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.diagnostics import Label, Sink, Span, did_you_mean, error
from ptdsl.ir.consteval import NotConstant, const_eval
from ptdsl.ir.datakinds import DATA_KINDS, EXAMPLES
from ptdsl.ir.graph import SetInfo
from ptdsl.syntax import ast


@dataclass(frozen=True)
class Source:
    """One dataset. `rows` is its row space (`examples`, or the source's name); `sets` and
    `fields` pair each spec name with the kind's set or field it reads; `extra` are the numeric
    columns the spec adds (`data preference(margin)`); `weight` its rows per micro-batch relative
    to the first source's."""

    rows: str
    kind: str
    sets: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, str], ...] = ()
    extra: tuple[str, ...] = ()
    weight: float = 1.0
    named: bool = False

    @property
    def name(self) -> str:
        return self.rows

    def spec_name(self, kind_name: str) -> str:
        """The spec's name of one of the kind's sets or fields (renamed or not)."""
        back = {k: s for s, k in self.sets + self.fields}
        return back.get(kind_name, kind_name)

    def describe(self) -> str:
        renamed = [f"{k} = {s}" for s, k in self.sets + self.fields if s != k]
        inner = ", ".join(list(self.extra) + renamed)
        kind = f"{self.kind}({inner})" if inner else self.kind
        return f"{self.rows}: {kind}" if self.named else kind


def declare_sources(m, decl, options, lookup, sink: Sink) -> None:
    """Fill `decl` (ir/declare.Declarations) with every source's sets, rows and fields, then
    the mixing weights. `options(call, allowed, what)` checks a data line's options;
    `lookup` resolves params in constant expressions."""
    lines = list(m.datasets.values()) or ([m.data] if m.data is not None else [])
    if m.datasets:
        del decl.rows[EXAMPLES]  # every row space is a source's own
        for line in lines:
            if line.name.id == EXAMPLES:
                sink.add(error("E0220", f"`{EXAMPLES}` is the row space of a spec's one unnamed dataset",
                               line.name.span, "not a source name", help="choose another name, e.g. `main`"))
    owner: dict[str, tuple[str, Span]] = {}  # set or field → (its source, where it is named)
    for line in lines:
        if line.kind not in DATA_KINDS:
            sink.add(error("E0207", f"unknown data kind `{line.kind}`", line.span, "unknown",
                           help=did_you_mean(line.kind, DATA_KINDS) or f"data kinds: {', '.join(DATA_KINDS)}"))
            continue
        source = _declare_one(line, decl, options, owner, sink)
        if source is not None:
            decl.sources[source.rows] = source
    _declare_mix(m, decl, lookup, sink)
    if len(lines) > 1:
        for name, r in m.rollouts.items():
            sink.add(error("E0220", "a rollout samples the prompts of the one dataset; with several sources it "
                                    "would not know which", r.span, f"rollout `{name}`",
                           help="read one dataset in a method that samples (several sources with rollouts are "
                                "not in the language yet)"))


def _declare_one(line: ast.DataDecl, decl, options, owner: dict, sink: Sink) -> Source | None:
    kind = DATA_KINDS[line.kind]
    named = line.name is not None
    rows_name = line.name.id if named else EXAMPLES
    what = f"data {line.name.id}: {kind.name}" if named else f"data {kind.name}"
    opts = {**dict(kind.options), **options(ast.Call(line.kind, line.span, (), line.options, line.span),
                                            dict.fromkeys(dict(kind.options), "int"), what)}
    if kind.list_rows and named:
        sink.add(error("E0220", f"a `{kind.name}` list cannot be one of several sources yet", line.span,
                       help="its rows are grouped per example; read it as the spec's one dataset"))
        return None
    renames = _renames(line, kind, sink)
    rows = kind.list_rows or rows_name
    decl.rows[rows_name] = None
    if kind.list_rows:  # each example holds a list of `size` sequences, grouped like a rollout
        if opts["size"] < 2:
            sink.add(error("E0403", "a ranked list needs at least 2 responses", line.span))
        decl.rows[rows] = max(int(opts["size"]), 2)

    def claim(name: str, span: Span) -> bool:
        if name in owner:
            other, first = owner[name]
            where = "by another source" if other != rows_name else "twice in this source"
            sink.add(error("E0220", f"`{name}` is named {where}", span, "named again here",
                           extra=(Label(first, "first named here", primary=False),),
                           help="sets and fields share one namespace across sources: rename one, e.g. "
                                f"`data {rows_name}: {kind.name}({_member(kind, name)} = {rows_name}_{name})`"))
            return False
        owner[name] = (rows_name, span)
        return True

    sets, fields = [], []
    for s in kind.sets:
        spec, span = renames.get(s, (s, line.span))
        if claim(spec, span):
            decl.sets[spec] = SetInfo(spec, rows, "data")
            sets.append((spec, s))
    for f, dtype in kind.fields:
        spec, span = renames.get(f, (f, line.span))
        if claim(spec, span):
            decl.fields[spec], decl.field_rows[spec] = dtype, rows
            fields.append((spec, f))
    for f, s, dtype in kind.token_fields:
        spec, span = renames.get(f, (f, line.span))
        if claim(spec, span):
            decl.fields[spec], decl.field_rows[spec] = dtype, rows
            decl.field_sets[spec] = renames.get(s, (s,))[0]
            fields.append((spec, f))
    extra = []
    for f in line.fields:
        if claim(f.id, f.span):
            decl.fields[f.id], decl.field_rows[f.id] = "real", rows_name
            extra.append(f.id)
    return Source(rows_name, kind.name, tuple(sets), tuple(fields), tuple(extra), named=named)


def _member(kind, name: str) -> str:
    """The kind's set or field a spec name stands for (for help text)."""
    members = list(kind.sets) + [f for f, _ in kind.fields] + [f for f, _, _ in kind.token_fields]
    return name if name in members else members[0] if members else name


def _renames(line: ast.DataDecl, kind, sink: Sink) -> dict[str, tuple[str, Span]]:
    """`sft(completion = retained)`: the kind's member → (the spec's name for it, where)."""
    members = list(kind.sets) + [f for f, _ in kind.fields] + [f for f, _, _ in kind.token_fields]
    out: dict[str, tuple[str, Span]] = {}
    for kw in line.renames:
        if kw.name not in members:
            sink.add(error("E0209", f"`{kind.name}` has no set or field `{kw.name}` to rename", kw.name_span,
                           help=did_you_mean(kw.name, members) or
                           (f"its sets and fields: {', '.join(members)}" if members else
                            f"`{kind.name}` has no sets or fields")))
            continue
        if kw.name in out:
            sink.add(error("E0209", f"`{kw.name}` is renamed twice", kw.name_span, help="rename it once"))
            continue
        out[kw.name] = (kw.value.id, kw.value.span)
    return out


def _declare_mix(m, decl, lookup, sink: Sink) -> None:
    """`mix SOURCE = WEIGHT, …`: constant weights > 0 of declared named sources."""
    if m.mix is None:
        return
    if not m.datasets:
        sink.add(error("E0221", "`mix` weighs several named sources, and this method reads one dataset",
                       m.mix.span, "nothing to mix", help="remove the `mix` line, or name the sources: "
                                                          "`data forget: sft`, `data retain: sft`"))
        return
    seen: dict[str, Span] = {}
    for kw in m.mix.options:
        if kw.name not in decl.sources or not decl.sources[kw.name].named:
            sink.add(error("E0221", f"`mix` names `{kw.name}`, which is not a data source", kw.name_span,
                           "not a source", help=did_you_mean(kw.name, m.datasets) or
                           f"the sources: {', '.join(f'`{s}`' for s in m.datasets)}"))
            continue
        if kw.name in seen:
            sink.add(error("E0221", f"`mix` weighs `{kw.name}` twice", kw.name_span, "again here",
                           extra=(Label(seen[kw.name], "first here", primary=False),), help="give each weight once"))
            continue
        seen[kw.name] = kw.name_span
        weight = _weight(kw, lookup, sink)
        if weight is not None:
            s = decl.sources[kw.name]
            decl.sources[kw.name] = Source(s.rows, s.kind, s.sets, s.fields, s.extra, weight, s.named)


def _weight(kw: ast.KwArg, lookup, sink: Sink) -> float | None:
    from ptdsl.ir.declare import option_message
    try:
        value = const_eval(kw.value, lookup)
    except NotConstant as exc:
        sink.add(error(exc.code, option_message(kw.name, exc).replace("option", "the weight of", 1),
                       exc.span, exc.what))
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        sink.add(error("E0403", f"the weight of `{kw.name}` must be a number > 0, got {value!r}", kw.span,
                       help="a weight is the source's rows per micro-batch relative to the first source's"))
        return None
    return float(value)
