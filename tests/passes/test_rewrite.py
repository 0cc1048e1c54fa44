"""Each stable-math rule fires on its pattern, agrees with the naive form where
that is finite, and stays finite (and right) where the naive form is not."""
import math

import pytest
import torch

import ptdsl
from ptdsl.passes.rewrite import RULES, STABLE_MATH


def _spec(tmp_path, expr):
    f = tmp_path / "r.ptdsl"
    f.write_text(f'method r "rewrite"\ndata sft\npolicy\nlet x = mean_logp(policy, completion)\n'
                 f'loss -mean({expr})\n')
    return ptdsl.compile(str(f))


def _inputs(values):
    t = torch.tensor(values, dtype=torch.float64)[:, None]
    return {"logprobs(policy, completion)": t, "mask(completion)": torch.ones_like(t, dtype=torch.bool)}


CASES = [  # rule, expression, exact function of x, a value where the naive form fails
    ("log_sigmoid", "log(sigmoid(x))", lambda x: -math.log1p(math.exp(-x)) if x > -30 else x, -800.0),
    ("log_one_minus_sigmoid", "log(1 - sigmoid(x))", lambda x: -math.log1p(math.exp(x)) if x < 30 else -x, 40.0),
    ("softplus", "log(1 + exp(x))", lambda x: math.log1p(math.exp(x)) if x < 30 else x, 800.0),
    ("log1mexp", "log(1 - exp(x))", lambda x: math.log(-math.expm1(x)), -1e-20),
    ("log1p_exp", "log1p(exp(x))", lambda x: math.log1p(math.exp(x)) if x < 30 else x, 800.0),
    ("log_exp", "log(exp(x))", lambda x: x, 800.0),
]


@pytest.mark.parametrize("rule,expr,exact,hard", CASES, ids=[c[0] for c in CASES])
def test_stable_rewrite(tmp_path, rule, expr, exact, hard):
    c = _spec(tmp_path, expr)
    assert rule in c.rewrites
    easy = -0.7
    x = _inputs([easy, hard])
    loss = c.loss(x)[0]
    want = -(exact(easy) + exact(hard)) / 2
    assert math.isfinite(loss.item()) and abs(loss.item() - want) <= 1e-9 * max(1, abs(want))
    naive = c.interpret(x, optimised=False)[0]
    assert not math.isfinite(naive.item()) or abs(naive.item() - want) > 1e-9 * max(1, abs(want))
    x1 = _inputs([easy])
    assert abs(c.loss(x1)[0].item() - c.interpret(x1, optimised=False)[0].item()) < 1e-12


def test_log_softmax_rule(tmp_path):
    f = tmp_path / "s.ptdsl"
    f.write_text('method s "x"\ndata sft\npolicy\n'
                 'loss -token_mean(sum_vocab(log(softmax(logits(policy, completion)))))\n')
    c = ptdsl.compile(str(f))
    assert "log_softmax" in c.rewrites
    z = torch.tensor([[[0.0, 900.0, -900.0]]], dtype=torch.float64)
    x = {"logits(policy, completion)": z, "mask(completion)": torch.ones(1, 1, dtype=torch.bool)}
    assert torch.isfinite(c.loss(x)[0]) and not torch.isfinite(c.interpret(x, optimised=False)[0])


def test_rules_are_named_rows_with_identities():
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    assert all(r.identity for r in RULES)
    assert {r.name for r in STABLE_MATH} >= {"log_sigmoid", "softplus", "log1mexp", "log_softmax"}


def test_zero_weighted_terms_disappear():
    c = ptdsl.compile("cdpo", label_smoothing=0.0)
    assert "sub_zero_term" in c.rewrites
    # the dropped term's logsigmoid(-z) is gone: one logsigmoid left
    assert sum(d["op"] == "logsigmoid" for _, d in c.graph.nodes(data=True)) == 1
