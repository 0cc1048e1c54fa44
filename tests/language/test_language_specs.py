"""Specs the language must express before it is frozen: RLOO, PPO (value head +
GAE), GKD (vocabulary-level generalised JSD) and a Bradley–Terry reward model
(the library's methods/ cover SFT, DPO, IPO, KTO, ORPO, SimPO, GRPO, Dr. GRPO
and DAPO). Each must type-check, and each is compared in loss and gradient with
an independent plain-torch implementation of its METHODS.md formula."""
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st

import ptdsl
from ptdsl.equivalence.strategies import inputs as input_strategy, trainable_names
from tests.helpers import assert_close, loss_and_grads

SPECS = Path(__file__).parent / "specs"


def _compile(name, **params):
    return ptdsl.compile(str(SPECS / f"{name}.ptdsl"), **params)


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.ptdsl")), ids=lambda p: p.stem)
def test_spec_checks(path):
    m = ptdsl.load(str(path))
    assert m.stability == "experimental"


def _masked(x, m):
    return torch.where(m, x, torch.zeros_like(x))


# ---- independent references ----------------------------------------------------

def rloo_ref(x, n, beta=0.05, eps=0.2):
    m = x["mask(y)"]
    pol, old, ref = (_masked(x[k], m) for k in ("logprobs(policy, y)", "logprobs(old, y)", "logprobs(reference, y)"))
    shaped = x["r(y)"] - beta * (old - ref).sum(-1)
    adv = torch.empty_like(shaped)
    for i in range(len(shaped)):  # leave-one-out mean, computed directly
        g0 = (i // n) * n
        others = [shaped[j] for j in range(g0, g0 + n) if j != i]
        adv[i] = shaped[i] - sum(others) / len(others)
    ratio = torch.exp((pol - old).sum(-1))
    return torch.mean(-torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv))


def ppo_ref(x, kl_coef=0.05, clip=0.2, clip_v=0.2, vf_coef=0.1, gamma=1.0, lam=0.95):
    m = x["mask(y)"]
    B, T = m.shape
    pol, old, ref = (_masked(x[k], m) for k in ("logprobs(policy, y)", "logprobs(old, y)", "logprobs(reference, y)"))
    vold, v = _masked(x["values(old(value), y)"], m), _masked(x["values(value, y)"], m)
    rewards = -kl_coef * (old - ref)
    rewards = rewards.clone()
    for i in range(B):
        last = int(m[i].nonzero().max())
        rewards[i, last] = rewards[i, last] + x["rm_score(y)"][i]
    adv = torch.zeros(B, T, dtype=pol.dtype)
    for i in range(B):
        L = int(m[i].sum())
        running = 0.0
        for t in reversed(range(L)):
            nv = vold[i, t + 1] if t + 1 < L else 0.0
            running = rewards[i, t] + gamma * nv - vold[i, t] + gamma * lam * running
            adv[i, t] = running
    returns = adv + vold
    vals = adv[m]
    # one valid token: variance 0, so it whitens to 0 (the unbiased estimator would give 0/0)
    white = adv - vals.mean() if len(vals) == 1 else (adv - vals.mean()) / torch.sqrt(vals.var() + 1e-8)
    ratio = torch.exp(pol - old)
    pg = torch.max(-white * ratio, -white * torch.clamp(ratio, 1 - clip, 1 + clip))[m].mean()
    vc = torch.max(torch.min(v, vold + clip_v), vold - clip_v)
    vf = 0.5 * torch.max((v - returns) ** 2, (vc - returns) ** 2)[m].mean()
    return pg + vf_coef * vf


def gkd_ref(x, beta=0.5):
    m = x["mask(completion)"]
    ps = torch.softmax(torch.where(m[..., None], x["logits(policy, completion)"], 0), -1)
    pt = torch.softmax(torch.where(m[..., None], x["logits(teacher, completion)"], 0), -1)
    mix = beta * pt + (1 - beta) * ps
    kl_t = (pt * (pt.log() - mix.log())).sum(-1)
    kl_s = (ps * (ps.log() - mix.log())).sum(-1)
    jsd = beta * kl_t + (1 - beta) * kl_s
    return jsd[m].mean()


def rm_ref(x, eta=0.0):
    rw, rl = x["score(policy, chosen)"], x["score(policy, rejected)"]
    return torch.nn.functional.softplus(-(rw - rl - x["margin"])).mean() + eta * ((rw + rl) ** 2).mean()


CASES = [
    ("rloo", {}, lambda x, c: rloo_ref(x, c.group_size("y"))),
    ("rloo", {"num_generations": 4, "beta": 0.1}, lambda x, c: rloo_ref(x, 4, beta=0.1)),
    ("ppo", {}, lambda x, c: ppo_ref(x)),
    ("ppo", {"gamma": 0.9, "lam": 0.5}, lambda x, c: ppo_ref(x, gamma=0.9, lam=0.5)),
    ("gkd", {}, lambda x, c: gkd_ref(x)),
    ("gkd", {"beta": 0.2}, lambda x, c: gkd_ref(x, 0.2)),
    ("reward_model", {}, lambda x, c: rm_ref(x)),
    ("reward_model", {"center_rewards_coefficient": 0.01}, lambda x, c: rm_ref(x, 0.01)),
]


@pytest.mark.parametrize("name,params,ref", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@given(data=st.data())
def test_matches_reference(name, params, ref, data):
    c = _compile(name, **params)
    x = data.draw(input_strategy([c.graph]))
    names = trainable_names([c.graph])
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want, want_g = loss_and_grads(lambda i: ref(i, c), x, names)
    assert_close(got, want, what=f"{name} loss")
    for n in names:
        assert_close(got_g[n], want_g[n], what=f"{name} grad {n}")


def test_ppo_trains_policy_and_value_head():
    c = _compile("ppo")
    trainable = {i.name for i in c.inputs if i.trainable}
    assert trainable == {"logprobs(policy, y)", "values(value, y)"}
    kinds = {(q.model, q.output) for q in c.plan.queries}
    assert ("value", "values") in kinds and ("old(value)", "values") in kinds
