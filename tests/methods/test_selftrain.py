"""The self-training batch (DFT, RAFT, ReST-EM) against plain-torch references of their
METHODS.md formulas (references_selftrain.py): loss AND gradient, float64, rtol 1e-6, on
hypothesis inputs from the equivalence engine's strategy (ragged masks, garbage outside
them). DFT, which TRL 1.16 implements (SFTConfig(loss_type="dft")), is also compared with
SFTTrainer.compute_loss (tests/trl_drivers.py). RAFT's best-of-K pick is the runtime's
pick_sets, checked here for K > 2."""
from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptdsl
from ptdsl.equivalence.strategies import inputs as graph_inputs
from tests import trl_drivers as D
from tests.helpers import assert_close, assert_same, loss_and_grads, trainable
from tests.methods import references_selftrain as R
from tests.methods import strategies as strat
from tests.reference_cases import REFERENCE, TRL, checks
from tests.trl_harness import needs_trl

SETTINGS = settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
CASES = [("dft", {}), ("raft", {}), ("raft", {"num_generations": 3}), ("rest_em", {}),
         ("rest_em", {"threshold": 0.5}), ("rest_em", {"threshold": -1.0})]
ROLLOUT_ONLY = {"num_generations"}  # the inputs carry the effect of rollout options


@functools.lru_cache(maxsize=None)
def _compiled(method: str, params: tuple = ()):
    return ptdsl.compile(method, **dict(params))


@checks(REFERENCE)
@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
@SETTINGS
@given(data=st.data())
def test_matches_reference(method, params, data):
    c = _compiled(method, tuple(sorted(params.items())))
    x = data.draw(graph_inputs([c.graph]))
    if "r(y)" in x:  # rewards on a grid, so that "reward ≥ threshold" hits ties and both sides
        x["r(y)"] = torch.tensor(data.draw(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]),
                                                    min_size=len(x["r(y)"]), max_size=len(x["r(y)"]))),
                                 dtype=torch.float64)
    names = [i.name for i in c.inputs if i.trainable]
    ref_params = {k: v for k, v in params.items() if k not in ROLLOUT_ONLY}
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want, want_g = loss_and_grads(lambda i: R.METHODS[method](i, **ref_params), x, names)
    assert_close(got, want, rtol=1e-6, what=f"{method} loss")
    for n in names:
        assert_close(got_g[n], want_g[n], rtol=1e-6, what=f"{method} grad {n}")


def test_rest_em_with_nothing_kept_is_zero_without_nan():
    c = _compiled("rest_em", (("num_generations", 1),))
    x = {"logprobs(policy, y)": torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True),
         "mask(y)": torch.tensor([[True, True]]), "r(y)": torch.tensor([0.0], dtype=torch.float64)}
    loss, metrics = c.loss(x)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x["logprobs(policy, y)"].grad, torch.zeros(1, 2, dtype=torch.float64))
    assert metrics["kept_fraction"].item() == 0.0


@settings(max_examples=60, deadline=None, database=None)
@given(k=st.integers(2, 8), prompts=st.integers(1, 3), data=st.data())
def test_raft_keeps_the_first_highest_scored_sample_of_each_group(k, prompts, data):
    from ptdsl.runtime.batch import Batch, SetRows
    from ptdsl.runtime.step import pick_sets
    scores = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=k * prompts, max_size=k * prompts))
    batch = Batch(examples=[None] * prompts, sets={"y": SetRows([[0]] * (k * prompts), [[i] for i in range(k * prompts)])})
    batch.rewards = {"r(y)": scores}
    pick_sets(_compiled("raft", (("num_generations", k),)), batch)
    picked = [ids[0] for ids in batch.sets["best(y, r)"].completion_ids]
    expected = [g * k + max(range(k), key=lambda j: (scores[g * k + j], -j)) for g in range(prompts)]
    assert picked == expected
    assert batch.rewards["r(best(y, r))"] == [scores[i] for i in expected]


@needs_trl
@checks(TRL, "dft")
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(strat.sft_inputs())
def test_trl_dft(x):
    """TRL 1.16 SFTTrainer with loss_type="dft" against the reference and the spec."""
    c = _compiled("dft")
    names = trainable(c)
    theirs = loss_and_grads(lambda i: D.sft_loss(i["logprobs(policy, completion)"], i["mask(completion)"], "dft"),
                            x, names)
    assert_same(loss_and_grads(R.dft, x, names), theirs, names, 1e-9, 1e-11, "dft reference vs TRL")
    assert_same(loss_and_grads(lambda i: c.loss(i)[0], x, names), theirs, names, 1e-6, 1e-9, "dft spec vs TRL")
