"""The DPO-family, reference-free, unpaired, reward-model and online-RL variants match
independent plain-torch references of their METHODS.md formulas (references_offline.py,
references_online.py), in loss and gradient, float64, rtol 1e-6, on hypothesis inputs
with ragged masks and garbage in masked-out positions."""
import functools

import pytest
import torch
from hypothesis import given, strategies as st

import ptdsl
from tests.helpers import assert_close, loss_and_grads
from tests.methods import references_offline as OFF
from tests.methods import references_online as ON
from tests.methods import strategies as S
from tests.reference_cases import REFERENCE, checks

# (method, spec params, reference keywords)
OFFLINE = [
    ("robust_dpo", {}, {}), ("robust_dpo", {"label_smoothing": 0.3, "beta": 0.5}, {"label_smoothing": 0.3, "beta": 0.5}),
    ("hinge", {}, {}), ("hinge", {"beta": 0.05}, {"beta": 0.05}),
    ("sigmoid_norm", {}, {}), ("sigmoid_norm", {"beta": 2.0}, {"beta": 2.0}),
    ("apo_zero", {}, {}), ("apo_down", {"beta": 0.3}, {"beta": 0.3}),
    ("sppo_hard", {}, {}), ("sppo_hard", {"beta": 0.5}, {"beta": 0.5}),
    ("cal_dpo", {}, {}), ("cal_dpo", {"beta": 0.1}, {"beta": 0.1}),
    ("bco_pair", {}, {}), ("nca_pair", {"beta": 0.2}, {"beta": 0.2}),
    ("exo_pair", {}, {}), ("exo_pair", {"label_smoothing": 0.2, "beta": 0.3}, {"label_smoothing": 0.2, "beta": 0.3}),
    ("dpop", {}, {}), ("dpop", {"dpop_lambda": 5.0, "label_smoothing": 0.1}, {"dpop_lambda": 5.0, "label_smoothing": 0.1}),
    ("r_dpo", {"alpha": 0.2}, {"alpha": 0.2}),
    ("rpo", {}, {}), ("rpo", {"alpha": 0.005, "beta": 0.01}, {"alpha": 0.005, "beta": 0.01}),
    ("irpo", {}, {}),
    ("mpo", {}, {}), ("mpo", {"dpo_weight": 1.0, "bco_weight": 0.5, "sft_weight": 0.1},
                      {"dpo_weight": 1.0, "bco_weight": 0.5, "sft_weight": 0.1}),
    ("cpo", {}, {}), ("cpo", {"cpo_alpha": 0.0, "label_smoothing": 0.2}, {"cpo_alpha": 0.0, "label_smoothing": 0.2}),
    ("cpo_simpo", {}, {}), ("cpo_simpo", {"cpo_alpha": 0.3, "gamma": 1.0}, {"cpo_alpha": 0.3, "gamma": 1.0}),
    ("alphapo", {}, {}), ("alphapo", {"alpha": 0.25, "beta": 2.5, "gamma": 0.1}, {"alpha": 0.25, "beta": 2.5, "gamma": 0.1}),
    ("fdpo_forward_kl", {}, {}), ("fdpo_js", {}, {}),
    ("fdpo_alpha", {}, {}), ("fdpo_alpha", {"alpha": 1.0}, {"alpha": 1.0}), ("fdpo_alpha", {"alpha": -0.5}, {"alpha": -0.5}),
    ("apo_zero_unpaired", {}, {}),
    ("apo_zero_unpaired", {"desirable_weight": 1.33, "undesirable_weight": 0.7, "beta": 0.4},
     {"desirable_weight": 1.33, "undesirable_weight": 0.7, "beta": 0.4}),
    ("tpo", {}, {}), ("tpo", {"tpo_alpha": 0.0, "label_smoothing": 0.1, "beta": 0.1},
                     {"tpo_alpha": 0.0, "label_smoothing": 0.1, "beta": 0.1}),
    ("tpo_l", {}, {}), ("tpo_l", {"tpo_l_gamma": 1.0, "beta": 2.0, "tpo_alpha": 0.5},
                       {"tpo_l_gamma": 1.0, "beta": 2.0, "tpo_alpha": 0.5}),
    ("reward_model", {}, {}), ("reward_model", {"center_rewards_coefficient": 0.01}, {"center_rewards_coefficient": 0.01}),
]

ONLINE = [
    ("bnpo", {"num_generations": 3}, {"n": 3}), ("bnpo", {"num_generations": 2, "beta": 0.04}, {"n": 2, "beta": 0.04}),
    ("gspo", {"num_generations": 3}, {"n": 3}),
    ("gspo", {"num_generations": 2, "beta": 0.04, "epsilon": 0.1, "epsilon_high": 0.2},
     {"n": 2, "beta": 0.04, "epsilon": 0.1, "epsilon_high": 0.2}),
    ("luspo", {"num_generations": 3}, {"n": 3}), ("luspo", {"num_generations": 2, "beta": 0.04}, {"n": 2, "beta": 0.04}),
    ("gmpo", {"num_generations": 3}, {"n": 3}), ("gmpo", {"num_generations": 2, "beta": 0.04}, {"n": 2, "beta": 0.04}),
    ("cispo", {"num_generations": 3}, {"n": 3}),
    ("cispo", {"num_generations": 2, "epsilon_high": 5.0, "beta": 0.04}, {"n": 2, "epsilon_high": 5.0, "beta": 0.04}),
    ("sapo", {"num_generations": 3}, {"n": 3}),
    ("sapo", {"num_generations": 2, "beta": 0.04, "sapo_temperature_pos": 2.0}, {"n": 2, "beta": 0.04, "tau_pos": 2.0}),
    ("rloo", {}, {"n": 2}), ("rloo", {"num_generations": 3, "beta": 0.0}, {"n": 3, "beta": 0.0}),
    ("rloo", {"num_generations": 4, "normalize_advantages": True, "epsilon_high": 0.28},
     {"n": 4, "normalize_advantages": True, "epsilon_high": 0.28}),
]


@st.composite
def _scores(draw):
    rows = draw(st.integers(1, 4))
    vals = st.floats(-3, 3, width=64)
    return {f"score(policy, {s})": torch.tensor(draw(st.lists(vals, min_size=rows, max_size=rows)),
                                                 dtype=torch.float64) for s in ("chosen", "rejected")}


@st.composite
def _triples(draw):
    x = draw(S.preference_inputs())
    x.update(S._sequence_set(draw, x["mask(chosen)"].shape[0], torch.float64, ("policy",), "gold"))
    return x


def _offline_strategy(method):
    if method == "reward_model":
        return _scores()
    if method in ("tpo", "tpo_l"):
        return _triples()
    return S.unpaired_inputs() if method == "apo_zero_unpaired" else S.preference_inputs()


@functools.lru_cache(maxsize=None)
def _compiled(method, params):
    return ptdsl.compile(method, **dict(params))


def _check(method, params, reference, x):
    c = _compiled(method, tuple(sorted(params.items())))
    names = [i.name for i in c.inputs if i.trainable]
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want, want_g = loss_and_grads(reference, x, names)
    assert_close(got, want, rtol=1e-6, what=f"{method} loss")
    for n in names:
        assert_close(got_g[n], want_g[n], rtol=1e-6, what=f"{method} grad {n}")


@checks(REFERENCE)
@pytest.mark.parametrize("method,params,ref", OFFLINE, ids=[f"{c[0]}-{i}" for i, c in enumerate(OFFLINE)])
@given(data=st.data())
def test_offline_variant_matches_reference(method, params, ref, data):
    x = data.draw(_offline_strategy(method))
    _check(method, params, lambda i: getattr(OFF, method)(i, **ref), x)


@checks(REFERENCE)
@pytest.mark.parametrize("method,params,ref", ONLINE, ids=[f"{c[0]}-{i}" for i, c in enumerate(ONLINE)])
@given(data=st.data())
def test_online_variant_matches_reference(method, params, ref, data):
    x = data.draw(S.rollout_inputs(ref["n"]))
    _check(method, params, lambda i: getattr(ON, method)(i, **ref), x)


def test_headers():
    from ptdsl.compiler import define
    assert all(define(n).stability == "experimental" for n in ("cal_dpo", "r_dpo"))
