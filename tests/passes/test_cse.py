"""Common-subexpression elimination keeps constants apart by their exact value: 0.0 and -0.0
compare equal in Python but differ as divisors (x / -0.0 = -inf)."""
import torch

import ptdsl


def test_signed_zeros_are_not_merged(tmp_path):
    f = tmp_path / "nz.ptdsl"
    f.write_text('method nz "signed zeros"\ndata sft\npolicy\nlet x = logp(policy, completion)\n'
                 "loss -mean(x)\nmetric a = mean(exp(x) / -0.0)\nmetric b = mean(exp(x) / 0.0)\n")
    c = ptdsl.compile(str(f))
    x = {"logprobs(policy, completion)": torch.zeros(1, 1, dtype=torch.float64),
         "mask(completion)": torch.ones(1, 1, dtype=torch.bool)}
    for metrics in (c.interpret(x)[1], c.loss(x)[1]):
        assert metrics["a"].item() == float("-inf") and metrics["b"].item() == float("inf")


def test_equal_constants_are_still_shared(tmp_path):
    f = tmp_path / "eq.ptdsl"
    f.write_text('method eq "shared"\ndata sft\npolicy\nlet x = logp(policy, completion)\n'
                 "loss -mean(x * 0.5) - mean(exp(x) * 0.5)\n")
    g = ptdsl.compile(str(f)).graph
    assert sum(1 for _, d in g.nodes(data=True) if d["op"] == "const" and d["attrs"]["value"] == 0.5) == 1
