"""Rewrite rules as data: pattern → replacement, each with a name and its identity.

A pattern is a nested tuple `(op, sub, …)`; a string binds any node, a number
matches a constant of that value. Commutative ops match in either order. A
replacement is a tuple tree over the bound names; new nodes inherit the span of
the node they replace, so diagnostics and generated comments still point at the
spec line the user wrote. Rules run to a fixpoint, with an iteration cap.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.ir.graph import add, copy, order, replace_uses
from ptdsl.ir.ops import COMMUTATIVE


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: tuple
    replacement: object   # a tuple tree, or a bound name
    identity: str
    # "same_level:<name>": the bound node has the level of the node replaced, so users that
    # were typed against that level see the same shape
    guard: str | None = None


STABLE_MATH = [
    Rule("log_sigmoid", ("log", ("sigmoid", "x")), ("logsigmoid", "x"),
         "log σ(x) = logsigmoid(x): finite where σ(x) underflows to 0"),
    Rule("log_one_minus_sigmoid", ("log", ("sub", 1, ("sigmoid", "x"))), ("logsigmoid", ("neg", "x")),
         "log(1 − σ(x)) = log σ(−x): no cancellation when σ(x) → 1"),
    Rule("softplus", ("log", ("add", 1, ("exp", "x"))), ("softplus", "x"),
         "log(1 + eˣ) = softplus(x): no overflow for large x"),
    Rule("log1p_exp", ("log1p", ("exp", "x")), ("softplus", "x"),
         "log1p(eˣ) = softplus(x): no overflow for large x"),
    Rule("log1mexp", ("log", ("sub", 1, ("exp", "x"))), ("log1mexp", "x"),
         "log(1 − eˣ) = log1mexp(x): accurate as x → 0⁻ and for x ≪ 0"),
    Rule("log1p_neg_exp", ("log1p", ("neg", ("exp", "x"))), ("log1mexp", "x"),
         "log1p(−eˣ) = log1mexp(x)"),
    Rule("log_softmax", ("log", ("softmax", "x")), ("log_softmax", "x"),
         "log softmax(x) = log_softmax(x): finite where a probability underflows"),
    Rule("log_exp", ("log", ("exp", "x")), "x", "log eˣ = x (exact, and no overflow)"),
]

ALGEBRA = [
    Rule("neg_neg", ("neg", ("neg", "x")), "x", "−(−x) = x"),
    Rule("mul_one", ("mul", "x", 1), "x", "x · 1 = x", "same_level:x"),
    Rule("div_one", ("div", "x", 1), "x", "x / 1 = x", "same_level:x"),
    Rule("add_zero", ("add", "x", 0), "x", "x + 0 = x", "same_level:x"),
    Rule("sub_zero", ("sub", "x", 0), "x", "x − 0 = x", "same_level:x"),
    Rule("pow_one", ("pow", "x", 1), "x", "x¹ = x", "same_level:x"),
    Rule("add_zero_term", ("add", "x", ("mul", 0, "y")), "x",
         "x + 0·y = x: a term weighted by a zero parameter disappears, and its inputs with it",
         "same_level:x"),
    Rule("sub_zero_term", ("sub", "x", ("mul", 0, "y")), "x", "x − 0·y = x", "same_level:x"),
    Rule("zero_term_sub", ("sub", ("mul", 0, "y"), "x"), ("neg", "x"), "0·y − x = −x", "same_level:x"),
    Rule("zero_factor", ("mul", ("mul", 0, "x"), "y"), ("mul", 0, "y"), "(0·x)·y = 0·y",
         "same_level:y"),
    Rule("where_true", ("where", True, "a", "b"), "a", "where(true, a, b) = a", "same_level:a"),
    Rule("where_false", ("where", False, "a", "b"), "b", "where(false, a, b) = b", "same_level:b"),
]

RULES = STABLE_MATH + ALGEBRA
MAX_ITERATIONS = 20


def _match(h, pat, n, env) -> bool:
    d = h.nodes[n]
    if isinstance(pat, str):
        if pat in env:
            return env[pat] == n
        env[pat] = n
        return True
    if isinstance(pat, (bool, int, float)):
        if d["op"] != "const":
            return False
        v = d["attrs"]["value"]
        return isinstance(v, bool) == isinstance(pat, bool) and v == pat
    op, *subs = pat
    if d["op"] != op or len(d["args"]) != len(subs):
        return False
    orders = [d["args"]]
    if op in COMMUTATIVE:
        orders.append(tuple(reversed(d["args"])))
    for args in orders:
        trial = dict(env)
        if all(_match(h, p, a, trial) for p, a in zip(subs, args)):
            env.update(trial)
            return True
    return False


def _build(h, tree, env, span, level) -> int:
    if isinstance(tree, str):
        return env[tree]
    if isinstance(tree, (int, float)):
        from ptdsl.ir.types import SCALAR
        return add(h, "const", (), {"value": float(tree)}, span, None, SCALAR)
    op, *subs = tree
    args = [_build(h, s, env, span, None) for s in subs]
    # inner replacement nodes are maps over bound nodes: they take their last operand's level
    lvl = level if level is not None else h.nodes[args[-1]]["level"]
    return add(h, op, args, None, span, None, lvl)


def _guard_ok(h, rule: Rule, env, n) -> bool:
    if rule.guard is None:
        return True
    _, name = rule.guard.split(":")
    return h.nodes[env[name]]["level"] == h.nodes[n]["level"]


def rewrite(g, rules=RULES):
    """Apply every rule to a fixpoint. Returns (graph, diagnostics, changed, applied)."""
    h = copy(g)
    applied: list[str] = []
    for _ in range(MAX_ITERATIONS):
        fired = False
        for n in order(h):
            if n not in h:
                continue
            for rule in rules:
                env: dict = {}
                if _match(h, rule.pattern, n, env) and _guard_ok(h, rule, env, n):
                    d = h.nodes[n]
                    new = _build(h, rule.replacement, env, d["span"], d["level"])
                    if h.nodes[new]["name"] is None:
                        h.nodes[new]["name"] = d["name"]
                    replace_uses(h, n, new)
                    h.remove_node(n)  # no users left; its operands go with dead-node elimination
                    applied.append(rule.name)
                    fired = True
                    break
        if not fired:
            break
    return (h if applied else g), [], bool(applied), applied
