"""The methods that read several datasets against plain-torch references written from
their papers (references_sources.py), loss and gradients, on hypothesis-drawn inputs:
npo (forget set), npo_rt (forget + retain: two row spaces with their own row counts) and
dpo_sft_mix (a preference source + an SFT source)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import ptdsl
from ptdsl.equivalence.strategies import inputs as graph_inputs
from tests.helpers import assert_close, compiled, loss_and_grads
from tests.methods import references_sources as R
from tests.reference_cases import REFERENCE, checks

FEW = settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _check(c, reference, data, **params):
    x = data.draw(graph_inputs([c.graph], dtype=torch.float64))
    names = [i.name for i in c.inputs if i.trainable]
    got = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want = loss_and_grads(lambda i: reference(i, **params), x, names)
    assert_close(got[0], want[0], rtol=1e-9, what="loss")
    for n in names:
        assert_close(got[1][n], want[1][n], rtol=1e-9, atol=1e-12, what=f"grad {n}")


@checks(REFERENCE, "npo")
@pytest.mark.parametrize("params", [{}, {"beta": 0.5}, {"beta": 2.0}], ids=str)
@FEW
@given(data=st.data())
def test_npo_matches_the_paper(params, data):
    _check(compiled("npo", **params), R.npo, data, **params)


@checks(REFERENCE, "npo_rt")
@pytest.mark.parametrize("params", [{}, {"beta": 0.5, "retain_coeff": 0.3}, {"npo_coeff": 2.0, "retain_coeff": 0.0}],
                         ids=str)
@FEW
@given(data=st.data())
def test_npo_rt_matches_the_paper(params, data):
    _check(compiled("npo_rt", **params), R.npo_rt, data, **params)


@checks(REFERENCE, "dpo_sft_mix")
@pytest.mark.parametrize("params", [{}, {"beta": 0.3, "alpha": 0.05}, {"label_smoothing": 0.2, "alpha": 2.0}],
                         ids=str)
@FEW
@given(data=st.data())
def test_dpo_sft_mix_is_dpo_plus_the_sft_sources_nll(params, data):
    _check(compiled("dpo_sft_mix", **params), R.dpo_sft_mix, data, **params)


def test_the_sources_are_row_spaces_of_their_own():
    """npo_rt's forget and retain rows are different examples: the compiled loss takes a
    different number of rows of each, and its inputs say which set each leaf is on."""
    c = ptdsl.compile("npo_rt")
    levels = {i.name: i.level for i in c.inputs}
    assert levels["logprobs(policy, completion)"] == "f32[token completion]"
    assert levels["logprobs(policy, retained)"] == "f32[token retained]"
    g = torch.Generator().manual_seed(0)
    x = {"logprobs(policy, completion)": -torch.rand(2, 3, generator=g, dtype=torch.float64),
         "logprobs(reference, completion)": -torch.rand(2, 3, generator=g, dtype=torch.float64),
         "mask(completion)": torch.tensor([[True, True, False], [True, False, False]]),
         "logprobs(policy, retained)": -torch.rand(5, 2, generator=g, dtype=torch.float64),
         "mask(retained)": torch.ones(5, 2, dtype=torch.bool)}
    loss, metrics = c.loss(x)
    assert_close(loss, R.npo_rt(x), rtol=1e-12, what="loss")
    assert_close(metrics["retain_nll"], -x["logprobs(policy, retained)"].mean(), rtol=1e-12, what="retain_nll")
