"""The built-in calculator environment: safe integer arithmetic (checked against the value of an
expression tree computed independently), what it refuses, and the final-answer reward."""
from __future__ import annotations

import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptdsl.runtime import tools
from ptdsl.runtime.calculator import MAX_DIGITS, Calculator, answer_reward, evaluate

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "%": operator.mod}


def trees():
    leaves = st.integers(0, 10_000).map(lambda n: (str(n), n))

    def combine(children):
        def build(op, left, right):
            if op in ("//", "%") and right[1] == 0:
                right = ("1", 1)
            return f"({left[0]} {op} {right[0]})", OPS[op](left[1], right[1])
        return st.builds(build, st.sampled_from(sorted(OPS)), children, children)
    return st.recursive(leaves, combine, max_leaves=6)


@given(trees())
def test_evaluate_agrees_with_the_expression_tree(tree):
    text, value = tree
    assert evaluate(text) == value


def test_unary_minus_and_precedence():
    assert evaluate("-3 + 4 * 5") == 17 and evaluate("-(7 // 2)") == -3 and evaluate(" 12*34 ") == 408


@pytest.mark.parametrize("expression, message", [
    ("__import__('os').system('true')", "only integers, + - * // % and parentheses are allowed, not"),
    ("2 ** 10", "not '2 ** 10'"),
    ("1.5 + 2", "not '1.5'"),
    ("True + 1", "not 'True'"),
    ("x + 1", "not 'x'"),
    ("7 / 2", "not '7 / 2'"),
    ("7 // 0", "division by zero"),
    ("1 +", "cannot read '1 +' as arithmetic"),
    ("9" * (MAX_DIGITS + 1), f"a number has more than {MAX_DIGITS} digits"),
    (" * ".join(["99999999"] * 5), f"a number has more than {MAX_DIGITS} digits"),
    ("1+" * 150 + "1", "longer than 200 characters"),
])
def test_what_is_refused_is_said_to_the_model(expression, message):
    env = Calculator()
    env.reset()
    out = env.calculate(expression)
    assert out.startswith("Error: ") and message in out and env.calls == 1


def test_the_tool_schema_is_what_the_chat_template_shows():
    box = tools.toolbox(Calculator(), "calculator")
    (schema,) = box.schemas
    assert schema["function"]["name"] == "calculate"
    assert schema["function"]["parameters"]["properties"]["expression"]["type"] == "string"
    assert schema["function"]["parameters"]["required"] == ["expression"]


def test_answer_reward_reads_the_last_integer_of_the_final_assistant_message():
    conversation = [{"role": "assistant", "content": "", "tool_calls": []}, {"role": "tool", "content": "408"},
                    {"role": "assistant", "content": "So 12 * 34 = 408."}]
    wrong = conversation[:-1] + [{"role": "assistant", "content": "It is 407."}]
    assert answer_reward(prompts=[None] * 4, completions=[conversation, wrong, "= 408", []],
                         answer=["408", "408", 408, "1"]) == [1.0, 0.0, 1.0, 0.0]
