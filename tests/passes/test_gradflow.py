"""The loss that runs must train the policy: a gradient check after optimisation catches
a loss whose only trainable term is multiplied by a parameter equal to 0 (found by the
fuzzer: it compiled, then backward() failed, "element 0 of tensors does not require grad")."""
import pytest

import ptdsl

SPEC = '''method rm0 "reward model, main term detached"
data preference
policy
param weight = {w} >= 0
let margin = score(policy, chosen) - score(policy, rejected)
loss stopgrad(mean(-logsigmoid(margin))) + weight * mean((score(policy, chosen) + score(policy, rejected)) ^ 2)
'''


def _compile(tmp_path, w):
    f = tmp_path / "rm0.ptdsl"
    f.write_text(SPEC.format(w=w))
    return ptdsl.compile(str(f))


def test_a_zero_weight_on_the_only_trainable_term_is_e0501(tmp_path):
    with pytest.raises(ptdsl.SpecError) as info:
        _compile(tmp_path, "0.0")
    (d,) = info.value.diagnostics
    assert d.code == "E0501" and d.message.endswith("with these parameter values")
    assert [label.text for label in d.labels[1:]] == ["`weight` is 0"]


def test_a_non_zero_weight_trains(tmp_path):
    import torch
    c = _compile(tmp_path, "0.01")
    x = {"score(policy, chosen)": torch.tensor([0.5], dtype=torch.float64, requires_grad=True),
         "score(policy, rejected)": torch.tensor([0.1], dtype=torch.float64)}
    loss, _ = c.loss(x)
    loss.backward()
    assert x["score(policy, chosen)"].grad.item() == pytest.approx(0.01 * 2 * 0.6)
