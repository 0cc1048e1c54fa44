"""grpo_tools: GRPO over tool-using episodes. Its loss is GRPO's on the policy's own tokens only:
the tool results and template tokens between its turns are holes in `mask(y)` (TRL 1.16's
`completion_mask * tool_mask`). Checked against the plain-torch GRPO reference on masks with
holes, and against TRL's `GRPOTrainer._compute_loss` given the same holes as its `tool_mask`."""
import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptdsl
from tests import trl_drivers as D
from tests.helpers import assert_close, assert_same, loss_and_grads, trainable
from tests.methods import references as R
from tests.methods import strategies as S
from tests.reference_cases import REFERENCE, TRL, checks
from tests.trl_harness import needs_trl

FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
PARAMS = [({}, {}), ({"beta": 0.04, "epsilon": 0.1, "epsilon_high": 0.3}, {"beta": 0.04, "epsilon": 0.1,
                                                                             "epsilon_high": 0.3})]


@functools.lru_cache(maxsize=None)
def _compiled(n: int, params: tuple):
    return ptdsl.compile("grpo_tools", num_generations=n, **dict(params))


@st.composite
def episode_inputs(draw, n: int):
    """GRPO inputs whose completions have holes where tools answered: the completion mask, thinned
    in the middle, keeping each row's first token (a policy's first turn is never empty); per-row
    tool calls and turns for the metrics."""
    x = draw(S.rollout_inputs(n))
    completion = x["mask(y)"]
    policy_tokens = draw(S.thinned(completion))
    first = completion.float().argmax(dim=1)
    policy_tokens[torch.arange(len(first)), first] = True
    rows = completion.shape[0]
    x["tool_calls(y)"] = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows)),
                                      dtype=x["r(y)"].dtype)
    x["turns(y)"] = x["tool_calls(y)"] + 1
    return x, completion, policy_tokens


@checks(REFERENCE, "grpo_tools")
@pytest.mark.parametrize("params, ref_params", PARAMS, ids=["defaults", "kl-and-clip"])
@FEW
@given(data=st.data(), n=st.integers(2, 4))
def test_grpo_tools_is_grpo_on_the_policys_tokens(params, ref_params, data, n):
    x, _, policy_tokens = data.draw(episode_inputs(n))
    x["mask(y)"] = policy_tokens
    c = _compiled(n, tuple(sorted(params.items())))
    names = trainable(c)
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want, want_g = loss_and_grads(lambda i: R.grpo(i, **{**R.DEFAULTS["grpo"], "n": n, **ref_params}), x, names)
    assert_close(got, want, rtol=1e-6, what="grpo_tools loss")
    for name in names:
        assert_close(got_g[name], want_g[name], rtol=1e-6, what=f"grpo_tools grad {name}")
    metrics = c.loss(x)[1]
    assert_close(metrics["tool_calls"], x["tool_calls(y)"].mean(), rtol=1e-12, what="tool_calls metric")
    assert_close(metrics["turns"], x["turns(y)"].mean(), rtol=1e-12, what="turns metric")


@needs_trl
@checks(TRL, "grpo_tools")
@FEW
@given(data=st.data(), n=st.integers(2, 4), beta=st.sampled_from([0.0, 0.04]))
def test_grpo_tools_against_trl_tool_mask(data, n, beta):
    """TRL's loss with `tool_mask` (TRL's own masking of tool tokens) equals the spec's with the
    policy's tokens as `mask(y)`."""
    x, completion, policy_tokens = data.draw(episode_inputs(n))
    adv = R._group_advantages(x["r(y)"], n, scale=True)
    trl_in = {**x, "mask(y)": completion}
    ours = {**x, "mask(y)": policy_tokens}
    c = _compiled(n, (("beta", beta),))
    names = trainable(c)
    theirs = loss_and_grads(lambda i: D.grpo_loss(i, adv, loss_type="grpo", beta=beta, tool_mask=policy_tokens),
                            trl_in, names)
    assert_same(loss_and_grads(lambda i: c.loss(i)[0], ours, names), theirs, names, 1e-6, 1e-9, "grpo_tools vs TRL")
