"""`gae` with options computed by the loss (issue 10 item 7): a per-row λ (VAPO's
λ = 1 − 1/(α·length(y))), a per-token λ, a γ and λ of the training time, against a direct
per-row recursion written here from the definition, in loss and gradient, through the
generated code and the interpreter; constant options keep the `gae` op and its fast path;
bad levels are diagnosed."""
import pytest
import torch

import ptdsl
from ptdsl.diagnostics import SpecError
from tests.helpers import assert_close, loss_and_grads

HEAD = """method gae_{name} "gae options"
experimental
data prompts
policy
value = value_head(policy)
reward rm = verifier("accuracy")
param alpha = 0.5 > 0
rollout y = sample(policy, n = 2)
"""
F64 = torch.float64


def _compile(tmp_path, name, body):
    p = tmp_path / f"gae_{name}.ptdsl"
    p.write_text(HEAD.format(name=name) + body)
    return ptdsl.compile(str(p))


def _x(**extra):
    """Two prompts × 2 samples, ragged masks with garbage where masked."""
    mask = torch.tensor([[True, True, True, False], [True, False, False, False],
                         [True, True, True, True], [True, True, False, False]])
    g = torch.Generator().manual_seed(3)
    x = {"mask(y)": mask, "rm(y)": torch.tensor([1.0, 0.0, 0.5, 2.0], dtype=F64),
         "values(value, y)": torch.where(mask, torch.randn(4, 4, generator=g, dtype=F64), torch.tensor(1e30, dtype=F64)),
         "logprobs(policy, y)": torch.where(mask, -torch.rand(4, 4, generator=g, dtype=F64), torch.tensor(float("nan"), dtype=F64))}
    return {**x, **extra}


def _direct(x, gamma_of, lam_of):
    """Â_t = δ_t + γ_{i,t} λ_{i,t} Â_{t+1}, δ_t = r_t + γ_{i,t} V_{t+1} − V_t, with V = 0 and
    Â = 0 past the row's last valid token; the reward sits on the last valid token. A loop per
    row and token, with γ and λ given per (row, token)."""
    m, v = x["mask(y)"], x["values(value, y)"]
    out = torch.zeros(v.shape, dtype=F64)
    rows = []
    for i in range(v.shape[0]):
        n = int(m[i].sum())
        col, following = [torch.zeros((), dtype=F64)] * v.shape[1], torch.zeros((), dtype=F64)
        for t in range(n - 1, -1, -1):
            r_t = x["rm(y)"][i] if t == n - 1 else torch.zeros((), dtype=F64)
            next_v = v[i, t + 1] if t + 1 < n else torch.zeros((), dtype=F64)
            g, lam = gamma_of(i, t), lam_of(i, t)
            following = r_t + g * next_v - v[i, t] + g * lam * following
            col[t] = following
        rows.append(torch.stack(col))
    return out + torch.stack(rows)


def _loss_ref(x, gamma_of, lam_of):
    adv = _direct(x, gamma_of, lam_of)
    m = x["mask(y)"]
    lp = torch.where(m, x["logprobs(policy, y)"], torch.zeros((), dtype=F64))
    return (torch.where(m, adv, torch.zeros((), dtype=F64)) * lp).sum() / m.sum()


def _check(c, x, gamma_of, lam_of):
    names = [i.name for i in c.inputs if i.trainable]
    for run, what in ((lambda i: c.loss(i)[0], "generated"), (lambda i: c.interpret(i)[0], "interpreter")):
        got, got_g = loss_and_grads(run, x, names)
        want, want_g = loss_and_grads(lambda i: _loss_ref(i, gamma_of, lam_of), x, names)
        assert_close(got, want, what=f"{what} loss")
        for n in names:
            assert_close(got_g[n], want_g[n], what=f"{what} grad {n}")


def _lengths(x):
    return x["mask(y)"].sum(-1).to(F64)


def test_per_row_lambda_matches_a_direct_recursion(tmp_path):
    """VAPO's length-adaptive λ = 1 − 1/(α·|y|), per row: lengths 3, 1, 4, 2 with α = 0.5 give
    λ = 1/3, −1 → clipped to 0, 1/2, 0."""
    c = _compile(tmp_path, "row", "let lam_policy = max(0, 1 - 1 / (alpha * length(y)))\n"
                                  "let adv = gae(at_last(rm(y), y), values(value, y), gamma = 0.9, lam = lam_policy)\n"
                                  "loss token_mean(adv * logprobs(policy, y))\n")
    assert "gae_varying" in {c.graph.nodes[n]["op"] for n in c.graph}
    x = _x()
    lam = torch.clamp(1 - 1 / (0.5 * _lengths(x)), min=0)
    assert lam.tolist() == pytest.approx([1 / 3, 0.0, 0.5, 0.0])
    _check(c, x, lambda i, t: 0.9, lambda i, t: lam[i])


def test_per_token_lambda_and_gamma_of_the_training_time(tmp_path):
    c = _compile(tmp_path, "tok", "let adv = gae(at_last(rm(y), y), values(value, y), gamma = 1 - 0.5 * progress, "
                                  "lam = sigmoid(values(value, y)))\n"
                                  "loss token_mean(adv * logprobs(policy, y))\n")
    for progress in (0.0, 0.6):
        x = _x(progress=torch.tensor(progress, dtype=F64))
        sig = torch.sigmoid(x["values(value, y)"])
        # λ is an option: no gradient flows through it into the values (they are differentiated as V only)
        _check(c, x, lambda i, t: 1 - 0.5 * progress, lambda i, t: sig[i, t].detach())


def test_constant_options_keep_the_gae_op(tmp_path):
    c = _compile(tmp_path, "const", "let adv = gae(at_last(rm(y), y), values(value, y), gamma = alpha, lam = 2 * alpha)\n"
                                    "loss token_mean(adv * logprobs(policy, y))\n")
    ops = {c.graph.nodes[n]["op"]: c.graph.nodes[n]["attrs"] for n in c.graph}
    assert "gae_varying" not in ops and ops["gae"] == {"gamma": 0.5, "lam": 1.0}
    _check(c, _x(), lambda i, t: 0.5, lambda i, t: 1.0)


def test_a_lambda_that_is_not_per_row_or_token_is_e0304(tmp_path):
    with pytest.raises(SpecError) as e:
        _compile(tmp_path, "vocab", "let adv = gae(at_last(rm(y), y), values(value, y), gamma = 1, "
                                    "lam = softmax(logits(policy, y)))\nloss token_mean(adv * logprobs(policy, y))\n")
    assert [d.code for d in e.value.diagnostics] == ["E0304"]
    assert "`gae` needs a `gamma` and `lam` per step, row or token" in e.value.diagnostics[0].message


def test_constant_lambda_out_of_range_is_still_e0403(tmp_path):
    with pytest.raises(SpecError) as e:
        _compile(tmp_path, "range", "let adv = gae(at_last(rm(y), y), values(value, y), gamma = 1, lam = 1.5)\n"
                                    "loss token_mean(adv * logprobs(policy, y))\n")
    assert [d.code for d in e.value.diagnostics] == ["E0403"]


def test_other_scans_still_need_constants(tmp_path):
    """Only gae's options may be computed: discounted_sum's γ of the training time stays E0405."""
    with pytest.raises(SpecError) as e:
        _compile(tmp_path, "disc", "loss token_mean(discounted_sum(at_last(rm(y), y), gamma = progress) "
                                   "* logprobs(policy, y))\n")
    assert [d.code for d in e.value.diagnostics] == ["E0405"]
