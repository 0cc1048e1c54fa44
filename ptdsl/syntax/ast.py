"""The AST: frozen dataclasses with spans and no logic.

One class per grammar alias (see grammar/ptdsl.lark). Expressions and
statements are kept apart; a spec file is the ordered tuple of its statements.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ptdsl.diagnostics import Span
from ptdsl.syntax.features import EXPERIMENTAL_02, STABLE_01, STABLE_02, STABLE_03

# ---- expressions --------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: float | int
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class KwArg:
    name: str
    name_span: Span
    value: "Expr"
    span: Span


@dataclass(frozen=True)
class Call:
    func: str
    func_span: Span
    args: tuple["Expr", ...]
    kwargs: tuple[KwArg, ...]
    span: Span


@dataclass(frozen=True)
class Unary:
    op: str  # "-" | "not"
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / ^ and or < <= > >= == !=
    left: "Expr"
    right: "Expr"
    span: Span


Expr = Union[Number, String, Bool, Name, Call, Unary, Binary]

# ---- statements ---------------------------------------------------------------


@dataclass(frozen=True)
class MethodDecl:
    name: str
    extends: str | None
    extends_span: Span | None
    title: str | None
    span: Span


@dataclass(frozen=True)
class PaperDecl:
    text: str
    span: Span


@dataclass(frozen=True)
class FamilyDecl:
    text: str
    span: Span


@dataclass(frozen=True)
class StabilityDecl:
    value: str  # "stable" | "experimental"
    span: Span


@dataclass(frozen=True)
class RequiresDecl:
    """`requires ptdsl >= 0.2`: the language version this file's text needs."""
    package: Name        # `ptdsl`; anything else is an error of the check
    op: str              # `>=`; other comparisons are an error of the check
    version: str         # as written, e.g. "0.2"
    version_span: Span
    span: Span


@dataclass(frozen=True)
class DataDecl:
    kind: str
    fields: tuple[Name, ...]
    span: Span
    options: tuple[KwArg, ...] = ()   # e.g. `data ranked(size = 4)`
    name: Name | None = None          # a named source: `data retain: sft`
    renames: tuple[KwArg, ...] = ()   # `sft(completion = retained)`: each value a Name


@dataclass(frozen=True)
class PolicyDecl:
    span: Span


@dataclass(frozen=True)
class RoleDecl:
    name: str
    source: Call
    span: Span


@dataclass(frozen=True)
class RewardDecl:
    name: str
    expr: Expr
    span: Span


@dataclass(frozen=True)
class RolloutDecl:
    name: str
    call: Call
    span: Span


@dataclass(frozen=True)
class UpdateDecl:
    """`update passes = P, minibatches = M`: how each batch of experience is used."""
    options: tuple[KwArg, ...]
    span: Span


@dataclass(frozen=True)
class MixDecl:
    """`mix forget = 1, retain = 2`: each named source's rows per micro-batch, relative to the first's."""
    options: tuple[KwArg, ...]
    span: Span


@dataclass(frozen=True)
class Bound:
    op: str  # < <= > >= == !=
    value: Expr
    span: Span


@dataclass(frozen=True)
class Interval:
    low: Expr
    high: Expr
    low_closed: bool
    high_closed: bool
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    name: str
    default: Expr
    constraint: Bound | Interval | None
    doc: str | None
    span: Span


@dataclass(frozen=True)
class LetDecl:
    name: str
    expr: Expr
    span: Span


@dataclass(frozen=True)
class LossDecl:
    expr: Expr
    span: Span


@dataclass(frozen=True)
class MetricDecl:
    name: str
    expr: Expr
    span: Span


Statement = Union[MethodDecl, PaperDecl, FamilyDecl, StabilityDecl, RequiresDecl, DataDecl, PolicyDecl,
                  RoleDecl, RewardDecl, RolloutDecl, UpdateDecl, MixDecl, ParamDecl, LetDecl, LossDecl, MetricDecl]

# Each statement form's Feature (syntax/features.py), keyed by its grammar rule; a named data
# source (`data NAME: KIND`, with `mix`) is a form of its own. passes/features.py reads it.
STATEMENT_FORMS = {
    "method_decl": STABLE_01, "paper_decl": STABLE_01, "family_decl": STABLE_01, "stability_decl": STABLE_01,
    "requires_decl": STABLE_03, "data_decl": STABLE_01, "data_source": EXPERIMENTAL_02,
    "policy_decl": STABLE_01, "role_decl": STABLE_01, "reward_decl": STABLE_01, "rollout_decl": STABLE_01,
    "update_decl": STABLE_02, "mix_decl": EXPERIMENTAL_02, "param_decl": STABLE_01, "let_decl": STABLE_01,
    "loss_decl": STABLE_01, "metric_decl": STABLE_01,
}


@dataclass(frozen=True)
class SpecFile:
    path: str
    text: str
    statements: tuple[Statement, ...]
