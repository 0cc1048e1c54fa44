"""Soft SPPO (METHODS.md O4, experimental): the loss against an independent plain-torch
reference of its formula — per prompt, P̂(yᵢ ≻ π_t) = (1/K)·Σⱼ σ(r(yᵢ) − r(yⱼ)) over the K
samples, then mean over samples of (log π_θ/π_t − (P̂ − ½)/β)²."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import ptdsl
from tests.helpers import assert_close, compiled, loss_and_grads
from tests.methods import strategies as S
from tests.reference_cases import REFERENCE, checks

LP = "logprobs(policy, y)"


def sppo_reference(x, n, beta):
    m = x["mask(y)"]
    ratio = (torch.where(m, x[LP], 0.0) - torch.where(m, x["logprobs(reference, y)"], 0.0)).sum(1)
    r = x["r(y)"].view(-1, n)
    win = torch.sigmoid(r[:, :, None] - r[:, None, :]).mean(2).reshape(-1)
    return ((ratio - (win - 0.5) / beta) ** 2).mean()


@checks(REFERENCE, "sppo")
@pytest.mark.parametrize("n,beta", [(5, 0.001), (2, 0.5), (3, 2.0)])
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_sppo_matches_reference(n, beta, data):
    x = data.draw(S.rollout_inputs(n))
    x = {k: v for k, v in x.items() if k != "logprobs(old, y)"}
    c = compiled("sppo", num_samples=n, beta=beta)
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, [LP])
    want, want_g = loss_and_grads(lambda i: sppo_reference(i, n, beta), x, [LP])
    assert_close(got, want, rtol=1e-6, what="sppo loss")
    assert_close(got_g[LP], want_g[LP], rtol=1e-6, what="sppo grad")


def test_previous_iterate_follows_the_policy_every_iteration():
    role = ptdsl.compile("sppo", iteration_steps=100).graph.graph["roles"]["reference"]
    assert dict(role.options)["sync_steps"] == 100
