"""Level checking: every node gets a level (ir/types.py); mixing incompatible
levels, row spaces or sequence sets is a compile error with a span.

The result is a new, explicit graph: masked reductions get their set's mask as
an operand, coarser operands of elementwise ops are wrapped in `expand`, and
booleans used as numbers in `to_real`. Codegen and the interpreter then need no
broadcasting logic of their own.
"""
from __future__ import annotations

import networkx as nx

from ptdsl.diagnostics import Label, Sink, error
from ptdsl.ir import builtins as B
from ptdsl.ir.graph import add, new_graph, order
from ptdsl.ir.ops import GROUPED, MASKED, OPS
from ptdsl.ir.datakinds import DATA_KINDS, EXAMPLES
from ptdsl.ir.types import SCALAR, Level, LevelMismatch, join


class _Skip(Exception):
    """An operand already failed; do not report this node again."""


class _Checker:
    def __init__(self, g: nx.DiGraph, sink: Sink):
        self.g, self.sink = g, sink
        self.h = new_graph(g.graph["method"], g.graph["file"], g.graph["sets"], g.graph["rows"])
        for k, v in g.graph.items():
            if k not in ("loss", "metrics"):
                self.h.graph[k] = v
        self.new: dict[int, int] = {}
        self.masks: dict[str, int] = {}
        self.sizes_of: dict[str, int] = {}
        kind = DATA_KINDS.get(g.graph.get("data"))
        self.ragged = {kind.list_rows} if kind is not None and kind.list_rows else set()

    def lv(self, nid: int) -> Level:
        return self.h.nodes[nid]["level"]

    def emit(self, op, args, attrs, span, level, name=None) -> int:
        return add(self.h, op, args, attrs, span, name, level)

    def run(self) -> nx.DiGraph:
        for n in order(self.g):
            d = self.g.nodes[n]
            if any(a not in self.new for a in d["args"]):
                continue  # an operand failed
            try:
                self.new[n] = self.node(n, d)
            except _Skip:
                continue
            except LevelMismatch as exc:
                self.sink.add(error("E0301", str(exc), d["span"], "these cannot be combined",
                                    extra=self._operand_labels(d), help=self._sources_help(d) or exc.help))
        self._outputs()
        return self.h

    def _sources_help(self, d) -> str | None:
        """Rows of two data sources (ir/sources.py) are different examples: say so."""
        sources = self.g.graph.get("sources", {})
        rows = {self.lv(self.new[a]).rows for a in d["args"] if a in self.new} & set(sources)
        if len(rows) < 2:
            return None
        a, b = sorted(rows)
        return (f"rows of the sources `{a}` and `{b}` are different examples, not aligned: reduce each over its "
                f"own rows first (e.g. `mean(...)` of each) and combine the scalars")

    def _operand_labels(self, d) -> tuple[Label, ...]:
        out = []
        for a in dict.fromkeys(d["args"]):
            sp = self.g.nodes[a]["span"]
            if a in self.new and sp is not None and sp != d["span"]:
                out.append(Label(sp, f"this is {self.lv(self.new[a])}", primary=False))
        return tuple(out)

    def _outputs(self) -> None:
        g, h = self.g, self.h
        loss = g.graph["loss"]
        if loss is not None and loss in self.new:
            nid = self.new[loss]
            lvl = self.lv(nid)
            if lvl.kind != "scalar":
                self.sink.add(error("E0302", "`loss` must be a scalar", g.nodes[loss]["span"],
                                    f"this is {_per(lvl)}: {lvl}", help=_reduce_help(lvl, "loss")))
            elif lvl.dtype == "bool":
                self.sink.add(error("E0302", "`loss` must be a number, not a boolean", g.nodes[loss]["span"]))
            h.graph["loss"] = nid
        for name, m in g.graph["metrics"].items():
            if m not in self.new:
                continue
            nid = self.new[m]
            lvl = self.lv(nid)
            if lvl.kind != "scalar":
                self.sink.add(error("E0303", f"metric `{name}` must be a scalar", g.nodes[m]["span"],
                                    f"this is {_per(lvl)}: {lvl}", help=_reduce_help(lvl, f"metric {name}")))
            h.graph["metrics"][name] = self.real(nid, g.nodes[m]["span"])

    # ---- helpers -------------------------------------------------------------
    def real(self, nid: int, span) -> int:
        lvl = self.lv(nid)
        if lvl.dtype != "bool":
            return nid
        return self.emit("to_real", (nid,), None, span, lvl.with_dtype("real"))

    def to(self, nid: int, level: Level, span) -> int:
        """Cast to real and expand to `level` where the operand is coarser."""
        nid = self.real(nid, span)
        lvl = self.lv(nid)
        if lvl.kind == "scalar" or lvl.kind == level.kind:
            return nid
        return self.emit("expand", (nid,), {"to": level.kind}, span, level.with_dtype("real"))


    def mask(self, set_name: str, span) -> int:
        if set_name not in self.masks:
            rows = self.g.graph["sets"][set_name].rows
            attrs = dict(name=f"mask({set_name})", kind="mask", level="token", model=None, set=set_name,
                         rows=rows, dtype="bool", trainable=False)
            self.masks[set_name] = self.emit("leaf", (), attrs, span, Level("token", rows, set_name, "bool"))
        return self.masks[set_name]

    def _with_sizes(self, args, rows: str, span) -> list:
        """A group op's operands, and the list sizes when its rows are ragged (K varies per example:
        a per-example leaf `sizes(R)` the runtime supplies, as it does masks)."""
        if rows not in self.ragged:
            return list(args)
        if rows not in self.sizes_of:
            attrs = dict(name=f"sizes({rows})", kind="sizes", level="seq", model=None, set=None,
                         rows=EXAMPLES, dtype="real", trainable=False)
            self.sizes_of[rows] = self.emit("leaf", (), attrs, span, Level("seq", EXAMPLES))
        return list(args) + [self.sizes_of[rows]]

    def need(self, nid, kinds, d, what, help=None):
        lvl = self.lv(nid)
        if lvl.kind not in kinds:
            self.sink.add(error("E0304", f"`{_spec_name(d)}` needs {what}, got {lvl}", d["span"],
                                f"its operand is {_per(lvl)}", help=help or _reduce_help(lvl, None, kinds)))
            raise _Skip()
        return lvl

    def need_bool(self, nid, d):
        if self.lv(nid).dtype != "bool":
            operand = self.g.nodes[d["args"][0]]["span"]
            extra = (Label(operand, f"this is a number: {self.lv(nid)}", primary=False),) \
                if operand is not None and operand != d["span"] else ()
            self.sink.add(error("E0306", f"`{_spec_name(d)}` needs a boolean condition", d["span"],
                                "condition is not a boolean", extra=extra,
                                help="compare it, e.g. `x > 0`"))
            raise _Skip()

    # ---- the level rules, one per op rule -----------------------------------
    def node(self, n: int, d) -> int:
        op, span = d["op"], d["span"]
        args = [self.new[a] for a in d["args"]]
        rule = OPS[op].rule
        if op in MASKED and op not in ("at_last",):
            args = args[: OPS[op].arity - 1]  # the mask operand is added here
        if op in GROUPED:
            args = args[: OPS[op].arity]  # and the list sizes, on ragged rows
        out = getattr(self, f"rule_{rule}")(op, args, d)
        if isinstance(out, tuple):
            args, level = out
            if op in GROUPED:
                args = self._with_sizes(args, level.rows if op == "expand_rows" else self.lv(args[0]).rows, span)
            return self.emit(op, args, d["attrs"], span, level, d["name"])
        return out

    def rule_leaf(self, op, args, d):
        a = d["attrs"]
        return [], Level(a["level"], a["rows"], a["set"] if a["level"] in ("token", "vocab") else None,
                         a["dtype"])

    def rule_const(self, op, args, d):
        return [], (Level("scalar", dtype="bool") if isinstance(d["attrs"]["value"], bool) else SCALAR)

    # `to_real` and `expand` are what this pass inserts; re-checking a typed graph keeps them
    def rule_to_real(self, op, args, d):
        return args, self.lv(args[0]).with_dtype("real")

    def rule_expand(self, op, args, d):
        return args, d["level"]  # only typed graphs hold `expand`, with the level it was given

    def rule_map(self, op, args, d):
        x = self.real(args[0], d["span"])
        return [x], self.lv(x)

    def _joined(self, args, d):
        args = self._rows_broadcast(args, d)
        level = self.lv(args[0])
        for a in args[1:]:
            level = join(level, self.lv(a))
        return [self.to(a, level, d["span"]) for a in args], level.with_dtype("real")

    def _rows_broadcast(self, args, d):
        """A per-example value meets a rollout's rows: repeat it for each of the n samples
        (rollout rows are the examples' rows, n at a time)."""
        grouped = {self.lv(a).rows for a in args if self.lv(a).kind != "scalar"
                   and self.g.graph["rows"].get(self.lv(a).rows)}
        if len(grouped) != 1:
            return args
        target = grouped.pop()
        out = []
        for a in args:
            lvl = self.lv(a)
            if lvl.kind == "seq" and lvl.rows == EXAMPLES:
                a = self.emit("expand_rows", self._with_sizes((a,), target, d["span"]),
                              {"n": self.g.graph["rows"][target]}, d["span"], Level("seq", target, None, lvl.dtype))
            out.append(a)
        return out

    def rule_map2(self, op, args, d):
        return self._joined(args, d)

    rule_map3 = rule_map2

    def rule_compare(self, op, args, d):
        out, level = self._joined(args, d)
        return out, level.with_dtype("bool")

    def rule_logic(self, op, args, d):
        for a in args:
            self.need_bool(a, d)
        args = self._rows_broadcast(args, d)
        level = join(self.lv(args[0]), self.lv(args[1]))
        return [self._expand_bool(a, level, d) for a in args], level.with_dtype("bool")

    def _expand_bool(self, a, level, d):
        # (a per-row value meeting pairs stands for row i: `x` with `other(x)`)
        lvl = self.lv(a)
        if lvl.kind in ("scalar", level.kind):
            return a
        return self.emit("expand", (a,), {"to": level.kind}, d["span"], level.with_dtype("bool"))

    def rule_not(self, op, args, d):
        self.need_bool(args[0], d)
        return args, self.lv(args[0])

    def rule_where(self, op, args, d):
        self.need_bool(args[0], d)
        args = self._rows_broadcast(args, d)  # as arithmetic does: per-example values meet grouped rows
        level = join(join(self.lv(args[0]), self.lv(args[1])), self.lv(args[2]))
        cond = self._expand_bool(args[0], level, d)
        return [cond] + [self.to(a, level, d["span"]) for a in args[1:]], level.with_dtype("real")

    def rule_sum_tokens(self, op, args, d):
        lvl = self.need(args[0], ("token",), d, "a per-token value")
        return [self.real(args[0], d["span"]), self.mask(lvl.set, d["span"])], lvl.at("seq").with_dtype("real")

    def rule_length(self, op, args, d):
        return args, self.lv(args[0]).at("seq").with_dtype("real")

    def rule_rows(self, op, args, d):
        self.need(args[0], ("seq",), d, "a per-sequence value",
                  help=None if self.lv(args[0]).kind != "token" else
                  f"reduce the tokens first: per sequence, e.g. `{op}(mean_tokens(x))` or "
                  f"`{op}(sum_tokens(x))`; or over all tokens of the batch, `token_mean(x)`")
        return [self.real(args[0], d["span"])], SCALAR

    def rule_token_reduce(self, op, args, d):
        lvl = self.need(args[0], ("token",), d, "a per-token value")
        return [self.real(args[0], d["span"]), self.mask(lvl.set, d["span"])], SCALAR

    def rule_group(self, op, args, d):
        lvl = self.need(args[0], ("seq",), d, "a per-sequence value of a rollout")
        n = self.g.graph["rows"].get(lvl.rows)
        if n is None:
            self.sink.add(error("E0305", f"`{_spec_name(d)}` needs rows drawn in groups by a rollout, "
                                         f"but these are {lvl}", d["span"], "these rows are not groups",
                                help="group statistics work on rollout rows, e.g. `group_mean(r(y))` "
                                     "with `rollout y = sample(policy, n = 8)`"))
            raise _Skip()
        if op == "group_std" and n < 2:
            self.sink.add(error("E0307", f"`group_std` needs groups of at least 2 samples; `{lvl.rows}` "
                                         f"draws n = {n}", d["span"], help="raise the rollout's `n`"))
            raise _Skip()
        return [self.real(args[0], d["span"])], lvl.with_dtype("real")

    def rule_group_reduce(self, op, args, d):
        """`sum_group(x)`, `mean_group(x)`: a group's rows → one value per example (a list's loss)."""
        lvl = self.need(args[0], ("seq",), d, "a per-sequence value of grouped rows")
        if not self.g.graph["rows"].get(lvl.rows):
            self.sink.add(error("E0305", f"`{op}` reduces the rows of each group to their example, but these "
                                         f"are {lvl}", d["span"], "these rows are not groups",
                                help="groups are a rollout's samples (`n ≥ 2`) or a ranked list's responses"))
            raise _Skip()
        return [self.real(args[0], d["span"])], Level("seq", EXAMPLES)

    def rule_vocab_map(self, op, args, d):
        lvl = self.need(args[0], ("vocab",), d, "a per-vocabulary value, e.g. `logits(policy, S)`")
        return [self.real(args[0], d["span"])], lvl

    def rule_sum_vocab(self, op, args, d):
        lvl = self.need(args[0], ("vocab",), d, "a per-vocabulary value, e.g. `logits(policy, S)`")
        return [self.real(args[0], d["span"])], lvl.at("token")

    def rule_at_last(self, op, args, d):
        x, mask = args
        lvl = self.need(x, ("seq", "scalar"), d, "a per-sequence value")
        m = self.lv(mask)
        if lvl.kind == "seq" and lvl.rows != m.rows:
            raise LevelMismatch(f"`at_last` places {lvl} on tokens of `{m.set}`, whose rows differ",
                                "use a set with the same rows as the value")
        return [self.real(x, d["span"]), mask], m.with_dtype("real")

    def rule_gae(self, op, args, d):
        out, level = self._joined(args, d)
        if level.kind != "token":
            self.need(args[0], ("token",), d, "per-token rewards and values")
        return out + [self.mask(level.set, d["span"])], level

    def rule_gae_varying(self, op, args, d):
        # γ and λ computed by the loss: a scalar (e.g. of `progress`), one per row, or one per token
        # of the same set; each broadcasts over its row's tokens like any operand
        for a in args[2:]:
            self.need(a, ("scalar", "seq", "token"), d, "a `gamma` and `lam` per step, row or token")
        return self.rule_gae(op, args, d)

    def rule_scan(self, op, args, d):
        lvl = self.need(args[0], ("token",), d, "a per-token value")
        return [self.real(args[0], d["span"]), self.mask(lvl.set, d["span"])], lvl.with_dtype("real")

    rule_whiten = rule_scan

    def rule_pair_other(self, op, args, d):
        lvl = self.need(args[0], ("seq",), d, "a per-sequence value of grouped rows")
        if not self.g.graph["rows"].get(lvl.rows):
            self.sink.add(error("E0305", f"`other` pairs a row with the rows of its group, but {lvl} has no "
                                         "groups", d["span"], "these rows are not groups",
                                help="pairs exist within a rollout's samples or a ranked list"))
            raise _Skip()
        return [self.real(args[0], d["span"])], lvl.at("pair").with_dtype("real")

    def rule_sum_pairs(self, op, args, d):
        lvl = self.need(args[0], ("pair",), d, "a pairwise value (built with `other(x)`)")
        return [self.real(args[0], d["span"])], lvl.at("seq").with_dtype("real")

    def rule_positions(self, op, args, d):
        return args, self.lv(args[0]).with_dtype("real")

    def rule_sort_rows(self, op, args, d):
        lvl = self.need(args[0], ("seq",), d, "a per-sequence value")
        return [self.real(args[0], d["span"])], lvl.with_dtype("real")

    def rule_expand_rows(self, op, args, d):
        return args, d["level"]  # inserted by this pass with its level

    def rule_running_mean(self, op, args, d):
        self.need(args[0], ("seq", "scalar"), d, "a per-sequence value or a scalar")
        return [self.real(args[0], d["span"])], SCALAR

    def rule_random(self, op, args, d):
        """`uniform(x)` becomes a leaf at x's level (x only gives the shape): the runtime draws it."""
        lvl = self.need(args[0], ("scalar", "seq", "token"), d, "a scalar, per-sequence or per-token value "
                        "(the draws take its level)", help="e.g. `uniform(mask(y))` for one draw per token of `y`")
        a = dict(name=d["attrs"]["name"], kind="uniform", level=lvl.kind, model=None, set=lvl.set,
                 rows=lvl.rows, dtype="real", trainable=False)
        return self.emit("leaf", (), a, d["span"], Level(lvl.kind, lvl.rows, lvl.set), d["name"])


def _per(lvl: Level) -> str:
    return {"scalar": "one number", "seq": "one number per sequence", "token": "one number per token",
            "vocab": "one number per token and vocabulary entry",
            "pair": "one number per pair of rows of a group"}[lvl.kind]


def _spec_name(d) -> str:
    """The name the spec wrote for an op (`other` for pair_other, `max` for maximum, …)."""
    return _SPEC_NAMES.get(d["op"], d["op"])


_SPEC_NAMES = {op: name for name, op in B.OPS.items() if name != op} | {v: k for k, v in B.VARYING_SCANS.items()}


def _reduce_help(lvl: Level, what, kinds=("scalar",)) -> str | None:
    if lvl.kind == "seq" and "scalar" in kinds:
        return "reduce it over the batch, e.g. `mean(...)`" + (f" in the {what}" if what else "")
    if lvl.kind == "token" and "seq" in kinds:
        return None
    if lvl.kind == "token":
        return "reduce the tokens first: `mean(mean_tokens(...))` (per-sequence mean) or `token_mean(...)`"
    if lvl.kind == "vocab":
        return "reduce the vocabulary first with `sum_vocab(...)`"
    if lvl.kind == "pair":
        return "reduce the pairs of each group first with `sum_pairs(...)`"
    if lvl.kind == "scalar" and "seq" in kinds:
        return "this is already one number for the batch"
    if lvl.kind == "seq" and "token" in kinds:
        return "this is already one number per sequence"
    return None


def check_levels(g: nx.DiGraph, sink: Sink) -> nx.DiGraph:
    return _Checker(g, sink).run()
