"""The built-in `calculator` environment (`environment("calculator")`): one tool that evaluates
integer arithmetic, for tasks where a tiny model cannot do multi-digit sums in its head.

It follows TRL's environment_factory convention (runtime/environments.py), so it also runs
unchanged under TRL's GRPOTrainer. The expression is parsed with `ast` and evaluated by walking
the tree, accepting only integer literals, unary + and -, and binary + - * // % — never `eval`,
since the text comes from the model. Operands and results are bounded so that a generated
`999999999*999999999*…` cannot stall a run.

The reward: `get_reward()` cannot see the policy's final answer (in TRL's convention it takes
no arguments and reads the instance's state), so the score of the final answer is the verifier
`answer_reward` below, in TRL's reward-function signature: 1.0 when the last integer in the
final assistant message equals the row's `answer`, else 0.0.
"""
from __future__ import annotations

import ast
import operator
import re

MAX_LENGTH = 200  # characters of an expression
MAX_DIGITS = 30  # of any operand or intermediate result
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_INTEGER = re.compile(r"-?\d+")


class Calculator:
    """An environment with a `calculate` tool; `calls` counts the tool's uses this episode."""

    def reset(self, **row) -> None:
        """Start an episode (the row's columns arrive as keyword arguments; none are needed)."""
        self.calls = 0

    def calculate(self, expression: str) -> str:
        """Evaluate an integer arithmetic expression and return the result.

        Args:
            expression: Integers combined with +, -, *, // (floor division), % and parentheses, e.g. "123 * (45 + 6)".
        """
        self.calls += 1
        try:
            return str(evaluate(expression))
        except ValueError as exc:  # the model's mistake: tell it, as a result rather than a tool failure
            return f"Error: {exc}"


def evaluate(expression: str) -> int:
    """The value of `expression`; ValueError saying what is not allowed."""
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"cannot read {expression!r} as arithmetic") from None
    return _value(tree.body)


def _value(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:  # not bool, float or str
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if right == 0 and isinstance(node.op, (ast.FloorDiv, ast.Mod)):
            raise ValueError("division by zero")
        return _bounded(_BINARY[type(node.op)](left, right))
    raise ValueError(f"only integers, + - * // % and parentheses are allowed, not {ast.unparse(node)!r}")


def _bounded(n: int) -> int:
    if len(str(abs(n))) > MAX_DIGITS:
        raise ValueError(f"a number has more than {MAX_DIGITS} digits")
    return n


def answer_reward(prompts, completions, answer, **kwargs) -> list[float]:
    """1.0 where the last integer of the final assistant message equals `answer`, else 0.0
    (TRL's reward-function signature; completions are message lists or strings)."""
    return [1.0 if _final_integer(c) == str(a).strip() else 0.0 for c, a in zip(completions, answer)]


def _final_integer(completion) -> str | None:
    if isinstance(completion, list):
        said = [m.get("content") or "" for m in completion if m.get("role") == "assistant"]
        completion = said[-1] if said else ""
    found = _INTEGER.findall(completion or "")
    return found[-1] if found else None
