"""Which language features a method uses, and where each use is written.

The walk reads the resolved definition (statements and expressions, with spans that point
into the file each line came from, a parent's included) and, for the few features that are
a form of arguments rather than a name, the lowered graph (`gae` with options the loss
computes lowers to its own op). Each feature's level and version come from the table that
defines it (syntax/features.py); passes/features.py judges the uses.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.diagnostics import Span
from ptdsl.ir import builtins as B
from ptdsl.ir.datakinds import DATA_KINDS
from ptdsl.ir.ops import OPS
from ptdsl.syntax import ast
from ptdsl.syntax.features import STABLE_01, Feature
from ptdsl.syntax.resolve import MethodDef


@dataclass(frozen=True)
class Use:
    name: str        # how the feature is written, e.g. "step", "update", "old(policy)"
    kind: str        # what it is, e.g. "time name", "statement", "`critic` option"
    feature: Feature
    span: Span
    node: object = None  # the AST node written there (for `ptdsl migrate`), when there is one
    text: str | None = None  # how messages name it, where `KIND `NAME`` would not say it
    within: str | None = None  # an option's statement or call (its title): judged with it first

    @property
    def title(self) -> str:
        return self.text or f"{self.kind} `{self.name}`"


_STATEMENTS = {ast.RoleDecl: "role_decl", ast.RewardDecl: "reward_decl", ast.RolloutDecl: "rollout_decl",
               ast.ParamDecl: "param_decl", ast.LetDecl: "let_decl", ast.MetricDecl: "metric_decl",
               ast.LossDecl: "loss_decl", ast.UpdateDecl: "update_decl", ast.MixDecl: "mix_decl",
               ast.PolicyDecl: "policy_decl", ast.RequiresDecl: "requires_decl"}
_FORM_TEXT = {"data_source": "data NAME: KIND", "role_decl": "NAME = SOURCE"}
_OPTIONS = {"sample": ("`sample` option", B.SAMPLE_OPTIONS), "episode": ("`episode` option", B.EPISODE_OPTIONS),
            "frozen": ("`frozen` option", B.FROZEN_OPTIONS),
            "critic": ("`critic` option", B.CRITIC_OPTIONS),
            "geometric_mixture": ("`geometric_mixture` option", B.MIXTURE_OPTIONS)}
_CALLS = [(label, table) for label, table in B.FEATURE_TABLES
          if table is not B.ROLES and table is not B.TIME and not label.endswith("option")]
# Ops a builtin spells: their use is reported as the builtin's, where it is written.
_SPELLED = (set(B.OPS.values()) | {scan[0] for scan in B.SCANS.values()} | set(B.RANDOM)
            | {B.AT_LAST, "leaf", "const"})


def feature_uses(m: MethodDef, graph=None) -> list[Use]:
    """Every feature use in `m` (its parents' lines included), in source order."""
    uses: list[Use] = []
    for stmt in _statements(m):
        uses += _statement_uses(stmt)
    if graph is not None:
        uses += _graph_uses(graph)
    return sorted(uses, key=lambda u: (u.span.file != m.path, u.span.file, u.span.line, u.span.col))


def _statements(m: MethodDef) -> list:
    singles = [m.policy, m.loss, m.update, m.mix, *m.requires.values()]
    datas = list(m.datasets.values()) or ([m.data] if m.data else [])
    named = [*m.roles.values(), *m.rewards.values(), *m.rollouts.values(), *m.params.values(),
             *m.lets.values(), *m.metrics.values()]
    return [s for s in singles + datas + named if s is not None]


def _statement_uses(stmt) -> list[Use]:
    if isinstance(stmt, ast.DataDecl):
        return _data_uses(stmt)
    form = _STATEMENTS[type(stmt)]
    keyword = _FORM_TEXT.get(form, form.removesuffix("_decl"))
    width = len(stmt.name) if isinstance(stmt, ast.RoleDecl) else len(keyword)
    uses = [Use(keyword, "statement", ast.STATEMENT_FORMS[form], _head(stmt.span, width), stmt)]
    if isinstance(stmt, (ast.UpdateDecl, ast.MixDecl)):
        if isinstance(stmt, ast.UpdateDecl):
            uses += _options(stmt.options, "`update` option", B.UPDATE_OPTIONS, uses[0].title)
        for kw in stmt.options:
            uses += _expr_uses(kw.value)
    elif isinstance(stmt, ast.ParamDecl):
        uses += _expr_uses(stmt.default)
        c = stmt.constraint
        uses += _expr_uses(c.value) if isinstance(c, ast.Bound) else \
            (_expr_uses(c.low) + _expr_uses(c.high)) if isinstance(c, ast.Interval) else []
    elif isinstance(stmt, (ast.RoleDecl, ast.RolloutDecl)):
        uses += _expr_uses(stmt.source if isinstance(stmt, ast.RoleDecl) else stmt.call)
    elif isinstance(stmt, (ast.RewardDecl, ast.LetDecl, ast.MetricDecl, ast.LossDecl)):
        uses += _expr_uses(stmt.expr)
    return uses


def _head(span: Span, width: int) -> Span:
    """The statement's first word, for a use of the statement form itself."""
    return Span(span.file, span.line, span.col, span.line, span.col + width)


def _data_uses(d: ast.DataDecl) -> list[Use]:
    form = "data_source" if d.name is not None else "data_decl"
    uses = [Use(_FORM_TEXT.get(form, "data"), "statement", ast.STATEMENT_FORMS[form], _head(d.span, 4), d)]
    kind = DATA_KINDS.get(d.kind)
    if kind is not None:
        uses.append(Use(d.kind, "data kind", kind.feature, d.span, d))
    return uses


def _options(kwargs, kind: str, table, within: str) -> list[Use]:
    return [Use(kw.name, kind, table.features[kw.name], kw.name_span, kw, within=within) for kw in kwargs
            if kw.name in table.features]


def _expr_uses(e) -> list[Use]:
    """Builtins, time names and roles an expression uses (iteratively: expressions may nest deeply)."""
    uses, todo = [], [e]
    while todo:
        e = todo.pop()
        if isinstance(e, ast.Name):
            uses += _name_use(e)
        elif isinstance(e, ast.Call):
            uses += _call_uses(e)
            todo += list(e.args) + [kw.value for kw in e.kwargs]
        elif isinstance(e, ast.Unary):
            todo.append(e.operand)
        elif isinstance(e, ast.Binary):
            todo += [e.left, e.right]
    return uses


def _name_use(e: ast.Name) -> list[Use]:
    if e.id in B.TIME.features:
        return [Use(e.id, "time name", B.TIME.features[e.id], e.span, e)]
    if e.id in B.ROLES.features:
        return [Use(e.id, "role", B.ROLES.features[e.id], e.span, e)]
    return []


def _call_uses(c: ast.Call) -> list[Use]:
    if c.func == "old" and len(c.args) == 1 and isinstance(c.args[0], ast.Name) and c.args[0].id == "policy":
        return [Use("old(policy)", "role", B.ROLES.features["old(policy)"], c.span, c)]
    uses = [Use(c.func, label, table.features[c.func], c.func_span, c)
            for label, table in _CALLS if c.func in table.features][:1]
    if c.func in _OPTIONS and uses:
        uses += _options(c.kwargs, *_OPTIONS[c.func], uses[0].title)
    return uses


def _graph_uses(g) -> list[Use]:
    """Ops the lowering picks by the form of the arguments, e.g. `gae` with computed options."""
    uses = []
    for n, data in g.nodes(data=True):
        op = OPS.get(data["op"])
        if op is None or op.name in _SPELLED or op.feature == STABLE_01 or data["span"] is None:
            continue
        scan = next((s for s, varying in B.VARYING_SCANS.items() if varying == op.name), None)
        text = f"`{scan}` with options the loss computes" if scan else None
        uses.append(Use(op.name, "operation", op.feature, data["span"], text=text))
    return uses
