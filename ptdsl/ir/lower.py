"""MethodDef + bound params → IR graph (untyped).

Resolves every name in the loss, lets and metrics (lets, params, data fields,
roles, sets, rewards — the latter declared by ir/declare.py), expands builtin
sugar into IR ops, and turns each model query into a leaf named by its canonical
text. Levels are not computed here (passes/levels.py does that); names are.
"""
from __future__ import annotations

from pathlib import Path

import networkx as nx

from ptdsl.diagnostics import Sink, Span, did_you_mean, error
from ptdsl.ir import builtins as B
from ptdsl.ir.datakinds import EXAMPLES
from ptdsl.ir.declare import Role, declare, option_message, role_help
from ptdsl.ir.graph import SetInfo, add, new_graph
from ptdsl.ir.ops import OPS, STATEFUL
from ptdsl.ir.consteval import NotConstant, Schedule, const_eval
from ptdsl.syntax import ast
from ptdsl.syntax.deps import dependency_order, names_used
from ptdsl.syntax.resolve import MethodDef


class LoweringError(Exception):
    """Raised inside the lowering to abandon one expression; already reported."""


_BINOPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "^": "pow", "<": "lt", "<=": "le",
           ">": "gt", ">=": "ge", "==": "eq", "!=": "ne", "and": "and", "or": "or"}


class _Lowerer:
    def __init__(self, m: MethodDef, params: dict, decl, sink: Sink):
        self.m, self.params, self.sink = m, params, sink
        self.sets, self.rows, self.fields = decl.sets, decl.rows, decl.fields
        self.field_rows, self.field_sets = decl.field_rows, decl.field_sets
        self.roles, self.rewards, self.rollouts = decl.roles, decl.rewards, decl.rollouts
        self.taken = decl.taken
        self.sources = decl.sources
        self.g: nx.DiGraph | None = None
        self.let_nodes: dict[str, int] = {}
        self.schedule_nodes: dict[str, int] = {}
        self.let_failed: set[str] = set()  # reported once; later uses fail silently
        self.lowering: list[str] = []

    def _param_lookup(self, name: str, span: Span):
        if name in self.params:
            return self.params[name]
        raise NotConstant(span, f"`{name}` is not a parameter")

    def build(self) -> nx.DiGraph:
        g = self.g = new_graph(self.m.name, self.m.path, self.sets, self.rows)
        self._check_time_names()
        for name in self._let_order():  # every let is checked, used or not
            try:
                self.let(name, self.m.lets[name].span)
            except LoweringError:
                pass
        if self.m.loss is not None:
            g.graph["loss"] = self._lower_or_none(self.m.loss.expr)
        for name, decl in self.m.metrics.items():
            nid = self._lower_or_none(decl.expr)
            if nid is not None:
                g.graph["metrics"][name] = nid
        g.graph.update(data=self.m.data.kind, sources=self.sources, sets=self.sets, rows=self.rows, roles=self.roles,
                       rewards=self.rewards, rollouts=self.rollouts, params=dict(self.params))
        return g

    def _check_time_names(self) -> None:
        """`step`, `progress` and `epoch` are the training time (B.TIME): a definition may not
        take their names (params are checked where they are bound, passes/params.py)."""
        m = self.m
        named = [(d.span, "let") for d in m.lets.values()] + [(d.span, "role") for d in m.roles.values()] \
            + [(d.span, "reward") for d in m.rewards.values()] + [(d.span, "rollout") for d in m.rollouts.values()]
        names = list(m.lets) + list(m.roles) + list(m.rewards) + list(m.rollouts)
        for name, (span, what) in zip(names, named):
            if name in B.TIME:
                self.sink.add(error("E0202", f"`{name}` is a built-in value (the training time) and cannot be "
                                             f"rebound", span, f"a {what} named `{name}`", help=_rename_help(name)))
        lines = list(m.datasets.values()) or ([m.data] if m.data else [])  # every source's data line
        for f in (f for line in lines for f in line.fields):
            if f.id in B.TIME:
                self.sink.add(error("E0202", f"`{f.id}` is a built-in value (the training time) and cannot name "
                                             "a data field", f.span, "a data field", help=_rename_help(f.id)))

    def _let_order(self) -> list[str]:
        """The lets, each after the lets it uses, so that lowering one finds those done (no
        recursion through a chain of lets). A cycle is reported as lowering would meet it."""
        found = dependency_order(self.m.lets, lambda name: [
            u for u in names_used(self.m.lets[name].expr, self._value_args) if u.id in self.m.lets])
        for cycle, span in found.cycles:
            self.sink.add(error("E0211", f"`{cycle[0]}` is defined in terms of itself ({' → '.join(cycle)})",
                                span, "used here"))
        self.let_failed |= found.failed
        return found.done

    def _value_args(self, c: ast.Call) -> tuple:
        """The arguments of a call that `call` lowers as values (the others name models and sets)."""
        f = c.func
        if f in self.rewards or f in B.QUERIES or f in B.SUGAR or f in B.SET_FUNCS or f in B.EPISODE_FUNCS:
            return ()
        if f == B.AT_LAST:
            return tuple(c.args[:1])
        return tuple(c.args) if f in B.OPS or f in B.SCANS or f in B.RANDOM else ()

    def _lower_or_none(self, e: ast.Expr):
        try:
            return self.expr(e)
        except LoweringError:
            return None

    def fail(self, code: str, message: str, span: Span, label: str = "", help: str | None = None,
             notes=()):
        self.sink.add(error(code, message, span, label, help=help, notes=notes))
        raise LoweringError()

    def expr(self, e: ast.Expr) -> int:
        if isinstance(e, ast.Number):
            return add(self.g, "const", (), {"value": e.value}, e.span)
        if isinstance(e, ast.Bool):
            return add(self.g, "const", (), {"value": e.value}, e.span)
        if isinstance(e, ast.String):
            self.fail("E0210", "a string cannot be used as a value", e.span, "string",
                      help="strings name verifiers, reward models and models: `verifier(\"accuracy\")`")
        if isinstance(e, ast.Name):
            return self.name(e)
        if isinstance(e, ast.Unary):
            x = self.expr(e.operand)
            return add(self.g, "neg" if e.op == "-" else "not", (x,), None, e.span)
        if isinstance(e, ast.Binary):
            a, b = self.expr(e.left), self.expr(e.right)
            return add(self.g, _BINOPS[e.op], (a, b), None, e.span)
        return self.call(e)

    def name(self, e: ast.Name) -> int:
        n = e.id
        if n in self.m.lets:
            return self.let(n, e.span)
        if n in self.params:
            if isinstance(self.params[n], Schedule):
                return self.scheduled(n)
            return add(self.g, "const", (), {"value": self.params[n], "param": n}, e.span)
        if n in B.TIME:  # training time: a scalar the runtime supplies at every optimizer step
            return self.leaf(e.span, n, "time", "scalar", None, None, None)
        if n in self.fields:
            s = self.field_sets.get(n)  # a per-token field, aligned with its set's mask
            return self.leaf(e.span, n, "field", "token" if s else "seq", None, s, self.field_rows[n],
                             dtype=self.fields[n])
        what = ("a sequence set" if n in self.sets else "a model role" if n in self.roles
                else "a reward" if n in self.rewards else None)
        if what:
            help = {"a sequence set": f"query it, e.g. `logp(policy, {n})` or `length({n})`",
                    "a model role": f"query it, e.g. `logp({n}, chosen)`",
                    "a reward": f"apply it to a rollout set, e.g. `{n}(y)`"}[what]
            self.fail("E0210", f"`{n}` is {what}, not a value", e.span, what, help=help)
        known = list(self.m.lets) + list(self.params) + list(self.fields) + list(B.TIME)
        self.fail("E0201", f"unknown name `{n}`", e.span, "not defined",
                  help=did_you_mean(n, known + list(self.sets) + list(self.roles)) or
                  "define it with `let` or `param`")

    def scheduled(self, name: str) -> int:
        """A scheduled param (`param beta = 0.1 * (1 - progress)`) is its expression, lowered
        once where it is first used; bind checked that it reads only params and time."""
        if name not in self.schedule_nodes:
            nid = self.expr(self.params[name].expr)
            if self.g.nodes[nid]["name"] is None:
                self.g.nodes[nid]["name"] = name
            self.schedule_nodes[name] = nid
        return self.schedule_nodes[name]

    def let(self, name: str, span: Span) -> int:
        if name in self.let_nodes:
            return self.let_nodes[name]
        if name in self.let_failed:
            raise LoweringError()
        if name in self.lowering:
            cycle = " → ".join(self.lowering[self.lowering.index(name):] + [name])
            self.fail("E0211", f"`{name}` is defined in terms of itself ({cycle})", span, "used here")
        self.lowering.append(name)
        try:
            nid = self.expr(self.m.lets[name].expr)
        except LoweringError:
            self.let_failed.add(name)
            raise
        finally:
            self.lowering.pop()
        # the let names its node; a let that is just another name keeps the first name
        if self.g.nodes[nid]["name"] is None:
            self.g.nodes[nid]["name"] = name
        self.let_nodes[name] = nid
        return nid

    # ---- calls -------------------------------------------------------------------
    def call(self, c: ast.Call) -> int:
        f = c.func
        if f in self.rewards:
            return self.reward(c)
        if f in B.QUERIES or f in B.SUGAR:
            return self.query(c)
        if f in B.SET_FUNCS:
            self._arity(c, 1)
            s = self.set_arg(c.args[0])
            mask = self.mask(s, c.span)
            if f == "mask":
                return mask
            return add(self.g, "length" if f == "length" else "positions", (mask,), None, c.span)
        if f in B.EPISODE_FUNCS:
            return self.episode_value(c)
        if f in B.OPS:
            op = B.OPS[f]
            want = OPS[op].arity - (1 if op in ("sum_tokens", "mean_tokens", "token_mean", "token_sum",
                                                 "whiten", "token_rank") else 0)
            self._arity(c, want)
            # a running statistic keeps state across steps, keyed by where it is written
            attrs = {"key": _site(c.span)} if op in STATEFUL else None
            return add(self.g, op, [self.expr(a) for a in c.args], attrs, c.span)
        if f in B.SCANS:
            return self.scan(c)
        if f in B.RANDOM:
            return self.draw(c)
        if f == B.AT_LAST:
            self._arity(c, 2)
            x = self.expr(c.args[0])
            s = self.set_arg(c.args[1])
            return add(self.g, "at_last", (x, self.mask(s, c.args[1].span)), None, c.span)
        where = ("a role line (`name = frozen(policy)`)" if f in B.ROLE_SOURCES else
                 "a `reward` line" if f in B.REWARD_SOURCES else "a `rollout` line" if f in B.ROLLOUTS
                 else "the set argument of a query, e.g. `logp(policy, mismatched(completion))`"
                 if f in B.SET_BUILDERS else None)
        if where:
            self.fail("E0210", f"`{f}(…)` is only allowed in {where}", c.func_span, "not a value")
        self.fail("E0208", f"unknown function `{f}`", c.func_span, "not a builtin",
                  help=did_you_mean(f, B.ALL + list(self.rewards)) or "see docs/language.md for the builtins")

    def _arity(self, c: ast.Call, n: int, kwargs: tuple[str, ...] = ()) -> None:
        if len(c.args) != n:
            self.fail("E0209", f"`{c.func}` takes {n} argument{'s' if n != 1 else ''}, got {len(c.args)}",
                      c.span, "wrong number of arguments")
        for kw in c.kwargs:
            if kw.name not in kwargs:
                self.fail("E0209", f"`{c.func}` has no option `{kw.name}`", kw.name_span, "unknown option",
                          help=did_you_mean(kw.name, kwargs) or
                          (f"options: {', '.join(kwargs)}" if kwargs else f"`{c.func}` takes no options"))

    def scan(self, c: ast.Call) -> int:
        op, nargs, opts = B.SCANS[c.func]
        self._arity(c, nargs, opts)
        attrs, varying = {}, {}
        for kw in c.kwargs:
            try:
                attrs[kw.name] = float(const_eval(kw.value, self._param_lookup))
            except NotConstant as exc:
                if c.func in B.VARYING_SCANS and exc.code in ("E0403", "E0405"):
                    # an expression (VAPO's λ = 1 − 1/(α·length(y))): a value the loss computes
                    varying[kw.name] = self.expr(kw.value)
                    continue
                self.fail(exc.code, option_message(kw.name, exc), exc.span, exc.what)
            bad = B.option_range_error(kw.name, attrs[kw.name])
            if bad:
                self.fail("E0403", bad, kw.span)
        missing = [o for o in opts if o not in attrs and o not in varying and o not in B.OPTIONAL]
        if missing:
            self.fail("E0209", f"`{c.func}` needs option{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(f'`{o} = …`' for o in missing)}", c.span)
        if op in STATEFUL:
            attrs = {"key": _site(c.span), **{o: attrs.get(o) for o in opts}}
        operands = [self.expr(a) for a in c.args]
        if varying:  # every option becomes an operand; constant ones keep their value as a const node
            operands += [varying[o] if o in varying else add(self.g, "const", (), {"value": attrs[o]}, c.span)
                         for o in opts]
            return add(self.g, B.VARYING_SCANS[c.func], operands, None, c.span)
        return add(self.g, op, operands, attrs, c.span)

    def draw(self, c: ast.Call) -> int:
        """`uniform(x)`: U[0, 1) draws at x's level, one per element (x gives only the shape);
        `bernoulli(p, x)` = `uniform(x) < p`. Each call site is its own draw, named by where it is
        written (`uniform@sampo:14:30`), which keys its seed at run time."""
        self._arity(c, B.RANDOM[c.func])
        shape = self.expr(c.args[-1])
        u = add(self.g, "uniform", (shape,), {"name": f"uniform@{_site(c.span)}"}, c.span)
        if c.func == "uniform":
            return u
        return add(self.g, "lt", (u, self.expr(c.args[0])), None, c.span)

    def reward(self, c: ast.Call) -> int:
        self._arity(c, 1)
        s = self.set_arg(c.args[0])
        if self.sets[s].source not in ("rollout", "picked"):
            # the trainer scores completions as it samples them; dataset completions are never scored
            self.fail("E0210", f"reward `{c.func}` is applied to `{s}`, which is not sampled", c.args[0].span,
                      "a dataset set", help="rewards score rollouts and their picks, e.g. "
                      f"`{c.func}(y)` with `rollout y = sample(policy, n = 2)`")
        self._check_environment(c, s)
        return self.leaf(c.span, f"{c.func}({s})", "reward", "seq", None, s, self.sets[s].rows,
                         reward=c.func)

    def episode_value(self, c: ast.Call) -> int:
        """`turns(y)`, `tool_calls(y)` (per row) and `turn(y)` (per token) of an episode set."""
        self._arity(c, 1)
        s = self.set_arg(c.args[0])
        base = self.sets[s].base if self.sets[s].source == "picked" else s
        rollout = self.rollouts.get(base)
        if rollout is None or rollout.kind != "episode":
            self.fail("E0210", f"`{c.func}` reads what an episode did, and `{s}` is not an episode", c.args[0].span,
                      "not an episode set", help=f'e.g. `{c.func}(y)` with `rollout y = episode(policy, '
                                                 f'environment("NAME"), …)`')
        return self.leaf(c.span, f"{c.func}({s})", "episode", B.EPISODE_FUNCS[c.func], None, s, self.sets[s].rows)

    def _check_environment(self, c: ast.Call, s: str) -> None:
        """An `environment("NAME")` term scores episodes with NAME: the set must be (picked from) one."""
        base = self.sets[s].base if self.sets[s].source == "picked" else s
        rollout = self.rollouts.get(base)
        for term in self.rewards.get(c.func, ()):
            if term.kind == "environment" and (rollout is None or rollout.kind != "episode"
                                               or rollout.env != term.name):
                have = f"`{base}` is sampled by `{rollout.kind}`" if rollout is not None and rollout.kind != "episode" \
                    else f"`{base}` plays environment `{rollout.env}`" if rollout is not None else f"`{base}` is not a rollout"
                self.fail("E0210", f"reward `{c.func}` reads environment `{term.name}`'s reward, and {have}",
                          c.args[0].span, "not an episode of that environment",
                          help=f'apply it to `rollout {base} = episode(policy, environment("{term.name}"), …)`')

    def query(self, c: ast.Call) -> int:
        self._arity(c, 2)
        model = self.model_arg(c.args[0])
        s = self.set_arg(c.args[1])
        kind_name = "logprobs" if c.func in B.SUGAR else c.func
        level, kind = B.QUERIES[kind_name]
        role = self._role_of(model)
        self._check_query(c, kind, model, role, s)
        trainable = role.trainable and role.kind != "old"
        leaf = self.leaf(c.span, f"{kind}({model}, {s})", kind, level, model, s, self.sets[s].rows,
                         trainable=trainable)
        if c.func in B.SUGAR:
            return add(self.g, B.SUGAR[c.func], (leaf,), None, c.span)
        return leaf

    def _role_of(self, model: str) -> Role:
        if model.startswith("old(") or model == "old":
            base = model[4:-1] if model != "old" else "policy"
            return Role(model, "old", False, model, base)
        return self.roles[model]

    def _check_query(self, c, kind, model, role, s):
        if role.kind == "mixture":
            self.fail("E0210", f"`{model}` is a geometric mixture: it can be sampled from, not queried",
                      c.args[0].span, "a sampler",
                      help=f"query its parts, e.g. `{kind}({role.of}, {s})`")
        base_kind = self.roles[role.of].kind if role.kind == "old" else role.kind
        if kind == "values" and base_kind not in ("value_head", "critic"):
            self.fail("E0210", f"`values` needs a value head or a critic, and `{model}` is neither", c.args[0].span,
                      help="declare one with `value = value_head(policy)` or `value = critic(policy)` and query "
                           "`values(value, y)`")
        if kind != "values" and base_kind in ("value_head", "critic"):
            what = "a value head" if base_kind == "value_head" else "a critic"
            self.fail("E0210", f"`{model}` is {what}; it has values, not {kind}", c.args[0].span,
                      help=f"use `values({model}, {s})`")
        if role.kind == "sampler":
            self._check_sampler(c, kind, s)
        if role.kind == "old" and self.sets[s].source != "rollout":
            self.fail("E0210", f"`{model}` exists only for rollout sets, and `{s}` comes from the dataset",
                      c.args[1].span, "not a rollout",
                      help="behaviour log-probs are recorded when a `rollout` samples; use `reference` "
                           "for a frozen model's log-probs on data")

    def _check_sampler(self, c, kind, s):
        """`logprobs(sampler, y)`: the log-probs a rollout's generator drew y's tokens with, recorded
        as it sampled; nothing else about the generator is kept, and a batch must have sampled."""
        if kind != "logprobs":
            self.fail("E0210", f"the sampler records only the log-probs of the tokens it drew, not {kind}",
                      c.span, help=f"`logprobs(sampler, {s})`")
        rollout = self.rollouts.get(s)
        if self.sets[s].source != "rollout" or rollout is None:
            self.fail("E0210", f"`sampler` exists only for rollout sets, and `{s}` is not one", c.args[1].span,
                      "not a rollout", help="the sampler's log-probs are recorded when a `rollout` samples")
        if "on_policy" in rollout.options:
            self.fail("E0210", f"`{s}` holds the dataset's completions in batches that do not sample "
                               "(`on_policy`), which no sampler drew", c.args[1].span,
                      help="drop `on_policy`, or use `logprobs(old, …)`")

    def model_arg(self, e: ast.Expr) -> str:
        if isinstance(e, ast.Name) and e.id in self.roles:
            return e.id
        if isinstance(e, ast.Call) and e.func == "old" and len(e.args) == 1 and isinstance(e.args[0], ast.Name):
            inner = e.args[0].id
            if inner in self.roles and self.roles[inner].trainable:
                return "old" if inner == "policy" else f"old({inner})"
            self.fail("E0210", f"`old(…)` takes a trainable role, not `{inner}`", e.args[0].span,
                      help="`old` snapshots a trainable model (the policy or a value head) at sampling time")
        name = e.id if isinstance(e, ast.Name) else getattr(e, "func", "?")
        self.fail("E0210", f"`{name}` is not a model role", e.span, "expected a model",
                  help=role_help(name, self.roles, self.taken) if isinstance(e, ast.Name) else
                  f"model roles here: {', '.join(f'`{r}`' for r in self.roles)}")

    def set_arg(self, e: ast.Expr) -> str:
        if isinstance(e, ast.Name) and e.id in self.sets:
            return e.id
        if isinstance(e, ast.Call) and e.func in ("best", "worst"):
            return self.picked_set(e)
        if isinstance(e, ast.Call) and e.func == "mismatched":
            if len(e.args) == 1 and not e.kwargs and isinstance(e.args[0], ast.Name) and e.args[0].id in self.sets:
                base = e.args[0].id
                # one completion per example row: a ranked list's responses have rows of their own
                if self.sets[base].source != "data" or self.rows.get(self.sets[base].rows) is not None:
                    self.fail("E0210", "`mismatched` pairs dataset prompts with another row's completion",
                              e.span, help="use a set with one completion per dataset row, e.g. "
                                           "`mismatched(completion)`")
                name = f"mismatched({base})"
                self.sets.setdefault(name, SetInfo(name, self.sets[base].rows, "derived", base))
                return name
            self.fail("E0209", "`mismatched` takes one sequence set and no options", e.span)
        name = e.id if isinstance(e, ast.Name) else getattr(e, "func", "?")
        self.fail("E0210", f"`{name}` is not a sequence set", e.span, "expected a set",
                  help=did_you_mean(name, self.sets) or
                  (f"sets here: {', '.join(f'`{s}`' for s in self.sets)}" if self.sets else
                   "this method has no sequence sets: its data has none and it declares no rollout"))

    def picked_set(self, e: ast.Call) -> str:
        """`best(y, r)` / `worst(y, r)`: per prompt, the sample of rollout y that reward r ranks
        highest / lowest (ties: the first for best, the last for worst)."""
        ok = (len(e.args) == 2 and all(isinstance(a, ast.Name) for a in e.args) and not e.kwargs)
        if not ok or e.args[0].id not in self.rollouts or e.args[1].id not in self.rewards:
            self.fail("E0209", f"`{e.func}` takes a rollout set and a reward, e.g. `{e.func}(y, r)`", e.span,
                      help="declare them with `rollout y = sample(policy, n = 2)` and `reward r = verifier(…)`")
        base, by = e.args[0].id, e.args[1].id
        if self.rows.get(self.sets[base].rows) is None:
            self.fail("E0210", f"`{e.func}` picks among a prompt's samples, but `{base}` draws one per prompt",
                      e.args[0].span, help="sample at least two per prompt: `sample(policy, n = 2)`")
        name = f"{e.func}({base}, {by})"
        self.sets.setdefault(name, SetInfo(name, EXAMPLES, "picked", base, by, e.func))
        return name

    def mask(self, s: str, span: Span) -> int:
        return self.leaf(span, f"mask({s})", "mask", "token", None, s, self.sets[s].rows, dtype="bool")

    def leaf(self, span, name, kind, level, model, s, rows, dtype="real", trainable=False, **extra) -> int:
        attrs = dict(name=name, kind=kind, level=level, model=model, set=s, rows=rows, dtype=dtype,
                     trainable=trainable, **extra)
        return add(self.g, "leaf", (), attrs, span)

def _site(span: Span) -> str:
    """Where a call is written, `FILE-STEM:LINE:COL`: the key of a running statistic's state and
    of a random draw's seed (an inherited let keeps its parent's file)."""
    return f"{Path(span.file).stem}:{span.line}:{span.col}"


def _rename_help(name: str) -> str:
    return f"choose another name, e.g. `{name}_`; `{name}` itself reads the training time in any expression"


def lower(m: MethodDef, params: dict, sink: Sink) -> nx.DiGraph | None:
    decl = declare(m, params, sink)
    if sink.has_errors:
        return None
    g = _Lowerer(m, params, decl, sink).build()
    if g is not None:
        g.graph["update"] = decl.update  # the training graph's schedule, read by plan.py
    return None if sink.has_errors else g
