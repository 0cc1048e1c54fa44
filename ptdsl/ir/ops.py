"""The closed op table: every IR op once, grouped, with its level rule and which
operands it is differentiable in.

Per-op semantics live in three more tables keyed by the same names — the level
checker (passes/levels.py), the interpreter (codegen/interpret.py) and the torch
emitter (codegen/python.py); tests/ir/test_ops.py checks that every op has a row
in each. Spec-level builtins (`logp`, `mean_logp`, …) that are sugar over these
ops are expanded by the lowering (ir/builtins.py), not here.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.syntax.features import EXPERIMENTAL_02, STABLE_01, STABLE_02, Feature


@dataclass(frozen=True)
class Op:
    name: str
    arity: int
    rule: str                 # level rule, see passes/levels.py
    diff: tuple[int, ...]     # operand positions gradients flow through
    doc: str
    # Level and version (syntax/features.py). A spec reaches an op through the builtin that
    # spells it (ir/builtins.py has that builtin's feature); this one is checked for ops the
    # lowering picks by the form of the arguments (gae_varying). Unstated: an op of 0.1.
    feature: Feature = STABLE_01


def _ops(rule: str, arity: int, diff, rows: list[tuple[str, str]], feature: Feature = STABLE_01) -> list[Op]:
    return [Op(name, arity, rule, tuple(diff), doc, feature) for name, doc in rows]


OPS: dict[str, Op] = {op.name: op for op in [
    # -- leaves: model queries, masks, rewards and data fields (the loss's inputs); constants
    Op("leaf", 0, "leaf", (), "an input tensor, named by its canonical query text"),
    Op("const", 0, "const", (), "a number or boolean (parameters are bound to constants)"),

    # -- elementwise, one real operand
    *_ops("map", 1, (0,), [
        ("neg", "-x"), ("exp", "e^x"), ("log", "natural log"), ("log1p", "log(1 + x)"),
        ("expm1", "e^x - 1"), ("sigmoid", "1 / (1 + e^-x)"),
        ("logsigmoid", "log σ(x) = -softplus(-x), finite where σ underflows"),
        ("softplus", "log(1 + e^x), stable"), ("relu", "max(x, 0)"), ("abs", "|x|"),
        ("sqrt", "√x"), ("square", "x²"), ("tanh", "tanh x"),
        ("log1mexp", "log(1 - e^x) for x < 0, stable on both sides of -log 2"),
    ]),
    *_ops("map", 1, (), [
        ("sign", "sign of x (no gradient)"),
        ("stopgrad", "x in value, no gradient (detach)"),
    ]),
    # -- elementwise, two or three real operands (levels broadcast, see ir/types.join)
    *_ops("map2", 2, (0, 1), [
        ("add", "a + b"), ("sub", "a - b"), ("mul", "a * b"), ("div", "a / b"), ("pow", "a ^ b"),
        ("minimum", "min(a, b)"), ("maximum", "max(a, b)"), ("logaddexp", "log(e^a + e^b), stable"),
    ]),
    Op("clip", 3, "map3", (0,), "min(max(x, lo), hi)"),
    Op("where", 3, "where", (1, 2), "a where the condition holds, else b"),
    # -- comparisons and logic: boolean results, no gradient
    *_ops("compare", 2, (), [("lt", "a < b"), ("le", "a <= b"), ("gt", "a > b"), ("ge", "a >= b"),
                             ("eq", "a == b"), ("ne", "a != b")]),
    *_ops("logic", 2, (), [("and", "a and b"), ("or", "a or b")]),
    Op("not", 1, "not", (), "not a"),
    # -- explicit conversions inserted by the level checker
    Op("to_real", 1, "to_real", (), "boolean → 0/1 real"),
    Op("expand", 1, "expand", (0,), "broadcast to a finer level (seq → token, token → vocab)"),

    # -- token → sequence reductions, masked by the set's completion mask (operand 1)
    *_ops("sum_tokens", 2, (0,), [("sum_tokens", "Σ_t m_t x_t"), ("mean_tokens", "Σ_t m_t x_t / Σ_t m_t")]),
    Op("length", 1, "length", (), "number of completion tokens |y| = Σ_t m_t"),
    # -- batch reductions to a scalar
    *_ops("rows", 1, (0,), [("mean", "mean over rows"), ("sum", "sum over rows"),
                            ("std", "Bessel-corrected std over rows"),
                            ("max_rows", "max over rows"), ("min_rows", "min over rows")]),
    *_ops("token_reduce", 2, (0,), [("token_mean", "Σ_{i,t} m x / Σ_{i,t} m over the whole batch"),
                                    ("token_sum", "Σ_{i,t} m x over the whole batch")]),
    # -- group statistics over the n rows a rollout draws per prompt (broadcast back to rows)
    *_ops("group", 1, (0,), [("group_mean", "mean of the row's group"),
                             ("group_std", "Bessel-corrected std of the row's group"),
                             ("group_sum", "sum of the row's group"),
                             ("group_max", "max of the row's group"), ("group_min", "min of the row's group"),
                             ("group_logsumexp", "log Σ exp over the row's group (softmax normaliser)"),
                             ("group_suffix_logsumexp",
                              "log Σ exp over this row and the rows after it in its group (Plackett–Luce)")]),
    # -- a group's rows → one value per example (a list's loss is the sum over its responses)
    *_ops("group_reduce", 1, (0,), [("sum_group", "Σ over the rows of each example's group: seq[R] → seq[examples]"),
                                    ("mean_group", "mean over the rows of each example's group: seq[R] → seq[examples]")],
          STABLE_02),
    # -- vocabulary level
    *_ops("vocab_map", 1, (0,), [("softmax", "softmax over the vocabulary"),
                                 ("log_softmax", "log-softmax over the vocabulary")]),
    Op("sum_vocab", 1, "sum_vocab", (0,), "Σ_v x_v: vocabulary → token"),
    # -- sequence structure
    Op("at_last", 2, "at_last", (0,), "a per-sequence value placed at the last completion token, 0 elsewhere"),
    Op("gae", 3, "gae", (0, 1), "generalised advantage estimate: reverse scan δ_t + γλ Â_{t+1} (attrs gamma, lam)"),
    Op("gae_varying", 5, "gae_varying", (0, 1),
       "gae whose γ and λ are operands 2 and 3 (per step, row or token; broadcast over the row's tokens)",
       EXPERIMENTAL_02),
    Op("discounted_sum", 2, "scan", (0,), "reverse discounted cumulative sum Σ_{s≥t} γ^{s-t} x_s (attr gamma)"),
    Op("whiten", 2, "whiten", (0,), "(x - mean) / std over the batch's completion tokens"),
    Op("positions", 1, "positions", (), "each completion token's index 0, 1, … within its sequence"),
    Op("token_quantile", 2, "token_reduce", (), "the q-quantile of x over the batch's completion tokens (attr q)"),
    # -- rows
    Op("sort_rows", 1, "sort_rows", (0,), "the per-sequence values sorted ascending over the batch"),
    Op("row_rank", 1, "sort_rows", (), "0-based rank of the row's value among the batch's rows, largest first",
       EXPERIMENTAL_02),
    Op("num_rows", 1, "rows", (), "the number of rows in the batch", EXPERIMENTAL_02),
    Op("token_rank", 2, "scan", (), "0-based rank of each completion token's value within its row, largest first",
       EXPERIMENTAL_02),
    Op("expand_rows", 1, "expand_rows", (0,), "a per-example value repeated for each of a rollout's n samples"),
    # -- pairs within a group (a ranked list, a rollout's samples): row i with each row j of its group
    Op("pair_other", 1, "pair_other", (0,), "x_j: for row i, the value of each row j of its group"),
    Op("sum_pairs", 1, "sum_pairs", (0,), "Σ_j over the pairs (i, j) of row i's group: pair → seq"),
    Op("group_rank", 1, "group", (), "0-based rank of the row's value within its group, largest first"),
    # -- state kept across steps (keyed by the call site, attr key; no gradient)
    Op("running_mean", 1, "running_mean", (), "mean of every value seen so far, this batch included"),
    Op("running_var", 1, "running_mean", (), "Bessel-corrected variance of every value seen so far, this batch included",
       EXPERIMENTAL_02),
    Op("ema", 1, "running_mean", (), "exponential moving average of the batch means (attrs decay, init)",
       EXPERIMENTAL_02),
    # -- random draws: U[0, 1) at the operand's level; the level checker replaces the op by a
    #    leaf of that level, which the runtime supplies (seeded), so codegen stays pure
    Op("uniform", 1, "random", (), "independent U[0, 1) draws, one per element of the operand's level",
       EXPERIMENTAL_02),
]}

# Named op sets, used by passes instead of repeated tuples.
MASKED = frozenset({"sum_tokens", "mean_tokens", "token_mean", "token_sum", "at_last", "gae", "gae_varying",
                    "discounted_sum", "whiten", "token_quantile", "token_rank"})
# Ops that read a row space's groups. On a ragged one (ranked lists: K varies per example) the
# level checker gives them the list sizes, a per-example leaf `sizes(R)`, as their last operand.
GROUPED = frozenset({"group_mean", "group_std", "group_sum", "group_max", "group_min", "group_logsumexp",
                     "group_suffix_logsumexp", "group_rank", "sum_group", "mean_group", "pair_other",
                     "sum_pairs", "expand_rows"})
STATEFUL = frozenset({"running_mean", "running_var", "ema"})  # keep state across steps, keyed by call site
ELEMENTWISE = frozenset(n for n, o in OPS.items() if o.rule in ("map", "map2", "map3", "where",
                                                                 "compare", "logic", "not"))
COMMUTATIVE = frozenset({"add", "mul", "minimum", "maximum", "logaddexp", "eq", "ne", "and", "or"})
NONDIFF_RESULT = frozenset(n for n, o in OPS.items() if not o.diff and o.name not in ("leaf",))
