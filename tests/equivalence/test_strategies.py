"""Input strategies: shapes follow the graphs, values follow the leaf kinds, and each
condition draws only inputs that satisfy it."""
import math

import pytest
import torch
from hypothesis import given, strategies as st

import ptdsl
from ptdsl.equivalence.conditions import ConditionError, parse
from ptdsl.equivalence.strategies import GARBAGE, LOGPROB_MAX, inputs, leaf_table

DPO = ptdsl.compile("dpo").graph
GRPO = ptdsl.compile("grpo", num_generations=3, beta=0.04).graph
KTO = ptdsl.compile("kto").graph


def _valid(x, s, model="policy"):
    return x[f"logprobs({model}, {s})"][x[f"mask({s})"]]


def _garbage_only_outside(x, s, model):
    m, v = x[f"mask({s})"], x[f"logprobs({model}, {s})"]
    outside = v[~m]
    assert all(math.isnan(g) or g in GARBAGE for g in outside.tolist())
    assert len(set(str(g) for g in outside.tolist())) <= 1  # one fill value per tensor


@given(st.data())
def test_default_draw_is_ragged_negative_and_garbled(data):
    x = data.draw(inputs([DPO]))
    assert set(x) == set(leaf_table([DPO]))
    for s in ("chosen", "rejected"):
        m = x[f"mask({s})"]
        assert m.dtype == torch.bool and m[:, 0].all()          # every row has ≥ 1 token, left-aligned
        assert (m.long().diff(dim=1) <= 0).all()
        for model in ("policy", "reference"):
            assert (_valid(x, s, model) <= LOGPROB_MAX).all() and (_valid(x, s, model) >= -8).all()
            _garbage_only_outside(x, s, model)
    assert x["mask(chosen)"].shape[0] == x["mask(rejected)"].shape[0]  # one row space


@given(st.data())
def test_rollout_rows_come_in_groups_and_rewards_are_per_row(data):
    x = data.draw(inputs([GRPO]))
    rows = x["mask(y)"].shape[0]
    assert rows % 3 == 0 and x["r(y)"].shape == (rows,)
    assert set(x) == {"logprobs(policy, y)", "logprobs(old, y)", "logprobs(reference, y)", "mask(y)", "r(y)"}


@given(st.data())
def test_on_policy_equal_lengths_and_rows(data):
    x = data.draw(inputs([GRPO], conditions=("on_policy", "length=4", "rows=2")))
    m = x["mask(y)"]
    assert m.shape == (6, 4) and m.all()
    assert torch.equal(x["logprobs(old, y)"], x["logprobs(policy, y)"])


@given(st.data())
def test_off_policy_never_copies_the_policy_exactly_by_construction(data):
    x = data.draw(inputs([GRPO], conditions=("off_policy",)))
    m = x["mask(y)"]
    noise = (x["logprobs(old, y)"] - x["logprobs(policy, y)"])[m]
    assert (noise.abs() <= 0.4 + 1e-12).all()


@given(st.data())
def test_reference_conditions(data):
    x = data.draw(inputs([DPO], conditions=("reference_below_policy=chosen", "equal_lengths")))
    assert (_valid(x, "chosen", "reference") < _valid(x, "chosen")).all()
    assert x["mask(chosen)"].all() and x["mask(chosen)"].shape == x["mask(rejected)"].shape
    z = data.draw(inputs([DPO], conditions="reference_zero"))
    assert (_valid(z, "chosen", "reference") == 0).all() and (_valid(z, "rejected", "reference") == 0).all()
    k = data.draw(inputs([KTO], conditions="reference_equals_policy=mismatched(completion)"))
    s = "mismatched(completion)"
    assert torch.equal(_valid(k, s, "reference"), _valid(k, s))
    assert k["label"].dtype == torch.bool


def test_condition_parsing_and_errors():
    c = parse(("on_policy", "length=3", "reference_equals_policy=chosen"))
    assert c.on_policy and c.equal_lengths and c.length == 3 and c.reference_equals_policy == ("chosen",)
    for bad, msg in (("length=0", "≥ 1"), ("length", "needs `=VALUE`"), ("on_policy=1", "takes no"),
                     ("lenght=2", "did you mean `length`")):
        with pytest.raises(ConditionError, match=msg):
            parse(bad)
    with pytest.raises(ConditionError, match="contradict"):
        parse(("on_policy", "off_policy"))
    with pytest.raises(ConditionError, match="neither method reads"):
        inputs([DPO], conditions="reference_equals_policy=y")


TIME_STATE = ptdsl.compile(str(__import__("pathlib").Path(__file__).parents[1] / "runtime" / "specs"
                               / "time_state.ptdsl")).graph
SAMPO = ptdsl.compile("sampo").graph


@given(st.data())
def test_time_is_drawn_as_the_runtime_gives_it_and_draws_in_the_unit_interval(data):
    """`step` and `epoch` whole numbers ≥ 0, `progress` in [0, 1]; random draws in [0, 1), per
    element of their level (token draws aligned with their set's mask)."""
    x = data.draw(inputs([TIME_STATE]))
    for name in ("step", "epoch"):
        assert x[name].dim() == 0 and x[name] >= 0 and float(x[name]).is_integer()
    assert 0 <= x["progress"] <= 1
    (draw,) = [k for k in x if k.startswith("uniform@")]
    assert x[draw].shape == x["mask(chosen)"].shape[:1] and ((x[draw] >= 0) & (x[draw] < 1)).all()
    y = data.draw(inputs([SAMPO]))
    for s in ("chosen", "rejected"):
        (name,) = [k for k, a in leaf_table([SAMPO]).items() if a["kind"] == "uniform" and a["set"] == s]
        m = y[f"mask({s})"]
        assert y[name].shape == m.shape and ((y[name][m] >= 0) & (y[name][m] < 1)).all()
