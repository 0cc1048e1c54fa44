"""vapo (arXiv:2504.05118, METHODS.md G33) against a plain-torch reference written from the
paper's formulas, in loss and gradients (policy log-probs and the critic's values), on
hypothesis-generated rollouts; and ppo_critic is ppo's loss exactly (the critic changes who
computes the values, not the loss)."""
import functools

import pytest
import torch
from hypothesis import given, settings, strategies as st

import ptdsl
from tests.helpers import assert_close, loss_and_grads
from tests.methods import strategies as S
from tests.reference_cases import REFERENCE, checks

F64 = torch.float64


def _zero():
    return torch.zeros((), dtype=F64)


def _gae_rows(m, rewards, values, gamma, lam_of):
    """Â_t = δ_t + γ λ_i Â_{t+1}, δ_t = r_t + γ V_{t+1} − V_t, V = 0 past the last valid token;
    an explicit loop per row (λ per row)."""
    out = []
    for i in range(m.shape[0]):
        n = int(m[i].sum())
        col, following = [_zero()] * m.shape[1], _zero()
        for t in range(n - 1, -1, -1):
            next_value = values[i, t + 1] if t + 1 < n else _zero()
            following = rewards[i, t] + gamma * next_value - values[i, t] + gamma * lam_of(i) * following
            col[t] = following
        out.append(torch.stack(col))
    return torch.stack(out)


def vapo_reference(x, *, alpha=0.05, gamma=1.0, lam_critic=1.0, eps_low=0.2, eps_high=0.28, nll_coef=0.1,
                   correct=1.0, vf_coef=0.1, cliprange_value=0.2):
    """L = L_PPO + μ·L_NLL + c_vf·L_V with
    - decoupled, length-adaptive GAE: Â from λ_policy,i = max(0, 1 − 1/(α·|o_i|)) over the critic's
      old values, whitened over the batch's tokens; targets R = GAE(λ_critic) + V_old;
    - token-level clip-higher: L_PPO = −Σ_{i,t} min(ρÂ, clip(ρ, 1 − ε_low, 1 + ε_high)Â) / Σ_i |o_i|;
    - positive examples T = {i : R_i ≥ correct}: L_NLL = −Σ_{i∈T} Σ_t log π_θ / Σ_{i∈T} |o_i| (0 if T = ∅);
    - L_V = ½ token mean of max((V − R)², (clip(V, V_old ± ε_v) − R)²) (ppo's value loss)."""
    m = x["mask(y)"]
    lengths = m.sum(-1).to(F64)
    keep = lambda t: torch.where(m, t, _zero())  # noqa: E731
    last = torch.arange(m.shape[1])[None, :] == (m.sum(-1) - 1)[:, None]
    score = torch.where(last, x["rm(y)"][:, None], _zero())
    old_v = keep(x["values(old(value), y)"])
    lam_policy = torch.clamp(1 - 1 / (alpha * lengths), min=0)
    raw = _gae_rows(m, score, old_v, gamma, lambda i: lam_policy[i])
    returns = _gae_rows(m, score, old_v, gamma, lambda i: lam_critic) + old_v
    valid = raw[m]
    var = ((valid - valid.mean()) ** 2).sum() / (valid.numel() - 1) if valid.numel() > 1 else _zero()
    adv = (raw - valid.mean()) / torch.sqrt(var + 1e-8)
    lp, old_lp = keep(x["logprobs(policy, y)"]), keep(x["logprobs(old, y)"])
    ratio = torch.exp(lp - old_lp)
    per_token = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    tokens = m.sum()
    pg = keep(per_token).sum() / tokens
    positive = x["rm(y)"] >= correct
    nll = -keep(lp)[positive].sum() / torch.clamp(lengths[positive].sum(), min=1)
    v = keep(x["values(value, y)"])
    v_clipped = torch.clamp(v, old_v - cliprange_value, old_v + cliprange_value)
    vf = 0.5 * keep(torch.maximum((v - returns) ** 2, (v_clipped - returns) ** 2)).sum() / tokens
    return pg + nll_coef * nll + vf_coef * vf


@st.composite
def vapo_inputs(draw, n):
    x = draw(S.rollout_inputs(n))
    mask = x["mask(y)"]
    x["rm(y)"] = x.pop("r(y)")
    x.pop("logprobs(reference, y)")
    values = S._token_values(draw, mask, st.floats(-2, 2, width=64), F64)
    noise = S._token_values(draw, mask, st.floats(-0.5, 0.5, width=64), F64)
    x["values(value, y)"], x["values(old(value), y)"] = values, torch.where(mask, values + noise, noise)
    return x


@functools.lru_cache(maxsize=None)
def _compiled(method, params):
    return ptdsl.compile(method, **dict(params))


# (spec params, reference keywords, n): the defaults; a large α so short rows get 0 < λ < 1
CASES = [
    ({"num_generations": 2}, {}, 2),
    ({"num_generations": 3, "alpha": 0.5, "correct_reward": 0.5, "nll_coef": 1.0, "lam_critic": 0.8, "gamma": 0.9},
     {"alpha": 0.5, "correct": 0.5, "nll_coef": 1.0, "lam_critic": 0.8, "gamma": 0.9}, 3),
    ({"num_generations": 2, "alpha": 0.3, "epsilon_high": 0.5, "cliprange": 0.1, "vf_coef": 1.0},
     {"alpha": 0.3, "eps_high": 0.5, "eps_low": 0.1, "vf_coef": 1.0}, 2),
]


@checks(REFERENCE, "vapo")
@pytest.mark.parametrize("params,ref,n", CASES, ids=[f"vapo-{i}" for i in range(len(CASES))])
@settings(deadline=None)
@given(data=st.data())
def test_vapo_matches_the_papers_formulas(params, ref, n, data):
    x = data.draw(vapo_inputs(n))
    c = _compiled("vapo", tuple(sorted(params.items())))
    names = [i.name for i in c.inputs if i.trainable]
    assert set(names) == {"logprobs(policy, y)", "values(value, y)"}
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want, want_g = loss_and_grads(lambda i: vapo_reference(i, **ref), x, names)
    assert_close(got, want, what="vapo loss")
    for name in names:
        assert_close(got_g[name], want_g[name], what=f"vapo grad {name}")


def test_vapo_reads_a_separate_critic_and_no_reference_by_default():
    c = ptdsl.compile("vapo")
    roles = c.graph.graph["roles"]
    assert roles["value"].kind == "critic" and roles["value"].source == "critic(policy)"
    assert [(learner.name, learner.lr_scale, learner.warmup_steps) for learner in c.plan.learners] == [("value", 2.0, 50)]
    assert "reference" not in c.plan.forwards and set(c.plan.forwards) == {"policy", "value"}


@settings(deadline=None)
@given(data=st.data())
def test_ppo_critic_is_ppos_loss(data):
    """Same leaves, same loss and gradients: the separate critic changes the network behind
    `values(value, y)`, not the formula."""
    x = data.draw(vapo_inputs(1))
    x["logprobs(reference, y)"] = x["logprobs(old, y)"] - 0.25
    a, b = _compiled("ppo", ()), _compiled("ppo_critic", ())
    assert {i.name for i in a.inputs} == {i.name for i in b.inputs}
    names = [i.name for i in a.inputs if i.trainable]
    got, got_g = loss_and_grads(lambda i: b.loss(i)[0], x, names)
    want, want_g = loss_and_grads(lambda i: a.loss(i)[0], x, names)
    assert torch.equal(got, want)
    for name in names:
        assert torch.equal(got_g[name], want_g[name])
