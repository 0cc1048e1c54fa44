"""The "online" batch (REINFORCE-style estimators, PPO with a value head, GRPOTrainer
variants, squared-regression methods) against independent plain-torch references of
their METHODS.md formulas (references_online_batch.py): loss AND gradient, float64,
rtol 1e-6, on hypothesis inputs with ragged masks, garbage outside the masks and groups
of rollout rows.

Methods TRL 1.16 implements (GRPOTrainer settings: lite_ppo, two_grpo, grpo_delta, vespo,
gdpo, entropy_8020, and grpo, bnpo, dr_grpo, dapo, gspo, luspo, cispo, sapo on masks with
empty rows and holes) are also compared with TRL's own code, driven without a model
(tests/trl_drivers.py; RLOO and GMPO, which have trainers of their own, in test_rloo_gmpo_trl.py):

* advantages come from ``GRPOTrainer._generate_and_score_completions`` itself — a
  stand-in ``self`` whose ``_generate`` returns fixed token ids and whose
  ``_calculate_rewards`` returns the test's rewards, so TRL's group/batch scaling and
  its ``normalize_then_sum`` (GDPO) run unchanged;
* the loss comes from ``GRPOTrainer._compute_loss`` with a stand-in
  ``_get_per_token_logps_and_entropies`` returning the test's log-probs and entropies
  (0 on padding, as a real model returns finite values there), and TRL's own
  ``get_high_entropy_mask`` and ``get_gamma_weights``.

TRL's std takes its Bessel factor in float32 (``count / (count - 1)`` on integer
tensors), so TRL comparisons use rtol 1e-6 with atol 1e-9, like the rest.
"""
from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import ptdsl
from tests import trl_drivers as D
from tests.helpers import assert_close, loss_and_grads
from tests.methods import references_online as ON
from tests.methods import references_online_batch as REF
from tests.methods import strategies as S
from tests.reference_cases import REFERENCE, TRL, checks
from tests.trl_harness import TRL_VERSION, needs_trl, stub

F64 = torch.float64

# ======================================================================================
# Inputs
# ======================================================================================

_GRID = st.integers(0, 64).map(lambda k: k / 16)  # entropies on a 1/16 grid in [0, 4]


def _tokens(draw, mask, valid):
    return S._token_values(draw, mask, valid, F64)


@st.composite
def online_inputs(draw, n: int, extra: tuple[str, ...] = ()):
    """``rollout_inputs(n)`` plus the leaves a method needs beyond it:

    ``greedy``: r(greedy), one reward per prompt (ReMax's greedy answer);
    ``entropy``: entropy(policy, y) on a 1/16 grid (ties and exact quantiles happen);
    ``gdpo``: two rewards correct(y), format(y) instead of r(y);
    ``values``: values(value, y) and values(old(value), y) (equal, or within ±0.5), and
    the reward renamed rm(y) (PPO).
    """
    x = draw(S.rollout_inputs(n))
    mask, prompts = x["mask(y)"], x["r(y)"].numel() // n
    if "greedy" in extra:
        x["r(greedy)"] = torch.tensor(S._group_rewards(draw, prompts, 1), dtype=F64)
    if "entropy" in extra:
        x["entropy(policy, y)"] = _tokens(draw, mask, _GRID)
    if "gdpo" in extra:
        x["correct(y)"] = x.pop("r(y)")
        x["format(y)"] = torch.tensor(S._group_rewards(draw, prompts, n), dtype=F64)
    if "values" in extra:
        x["rm(y)"] = x.pop("r(y)")
        value = _tokens(draw, mask, st.floats(-2, 2, width=64))
        if draw(st.booleans()):
            old = value.clone()
        else:
            noise = _tokens(draw, mask, st.floats(-0.5, 0.5, width=64))
            old = torch.where(mask, value + noise, noise)
        x["values(value, y)"], x["values(old(value), y)"] = value, old
    return x


# ======================================================================================
# (a) every spec against its reference
# ======================================================================================

# (method, spec params, reference keywords, n, extra leaves)
CASES = [
    ("reinforce", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("reinforce", {"num_generations": 2, "beta": 0.1}, {"n": 2, "beta": 0.1}, 2, ()),
    ("remax", {}, {"n": 1}, 1, ("greedy",)),
    ("remax", {"num_generations": 3}, {"n": 3}, 3, ("greedy",)),
    ("reinforce_pp", {}, {}, 1, ()),
    ("reinforce_pp", {"num_generations": 2, "beta": 0.05, "gamma": 0.9, "epsilon_high": 0.28},
     {"beta": 0.05, "gamma": 0.9, "epsilon_high": 0.28}, 2, ()),
    ("reinforce_pp_baseline", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("reinforce_pp_baseline", {"num_generations": 2, "beta": 0.1, "epsilon": 0.1},
     {"n": 2, "beta": 0.1, "epsilon": 0.1, "epsilon_high": 0.1}, 2, ()),
    ("lite_ppo", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("lite_ppo", {"num_generations": 2, "beta": 0.04, "epsilon_high": 0.28},
     {"n": 2, "beta": 0.04, "epsilon_high": 0.28}, 2, ()),
    ("two_grpo", {}, {}, 2, ()),
    ("two_grpo", {"beta": 0.04, "epsilon": 0.1}, {"beta": 0.04, "epsilon": 0.1, "epsilon_high": 0.1}, 2, ()),
    ("grpo_delta", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("grpo_delta", {"num_generations": 2, "delta": 1.1, "beta": 0.04}, {"n": 2, "delta": 1.1, "beta": 0.04}, 2, ()),
    ("grpo_k1", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("grpo_k1", {"num_generations": 2, "beta": 0.5, "epsilon_high": 0.3},
     {"n": 2, "beta": 0.5, "epsilon_high": 0.3}, 2, ()),
    ("gspo_token", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("gspo_token", {"num_generations": 2, "beta": 0.04, "epsilon": 0.1, "epsilon_high": 0.2},
     {"n": 2, "beta": 0.04, "epsilon": 0.1, "epsilon_high": 0.2}, 2, ()),
    ("vespo", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("vespo", {"num_generations": 2, "beta": 0.04, "vespo_k_pos": 1.0, "vespo_lambda_neg": 0.5},
     {"n": 2, "beta": 0.04, "k_pos": 1.0, "lambda_neg": 0.5}, 2, ()),
    ("gdpo", {"num_generations": 3}, {"n": 3}, 3, ("gdpo",)),
    ("gdpo", {"num_generations": 2, "correct_weight": 2.0, "format_weight": 0.5, "beta": 0.04},
     {"n": 2, "correct_weight": 2.0, "format_weight": 0.5, "beta": 0.04}, 2, ("gdpo",)),
    ("entropy_8020", {"num_generations": 3}, {"n": 3}, 3, ("entropy",)),
    ("entropy_8020", {"num_generations": 2, "top_entropy_quantile": 0.5, "beta": 0.04},
     {"n": 2, "rho": 0.5, "beta": 0.04}, 2, ("entropy",)),
    ("gpg", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("gpg", {"num_generations": 2}, {"n": 2}, 2, ()),
    ("opo", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("ppo", {}, {}, 1, ("values",)),
    ("ppo", {"k3_kl": True, "gamma": 0.9, "lam": 0.5, "vf_coef": 0.5, "cliprange_value": 0.1},
     {"k3_kl": True, "gamma": 0.9, "lam": 0.5, "vf_coef": 0.5, "cliprange_value": 0.1}, 1, ("values",)),
    ("ppo_critic", {"critic_lr_scale": 2.0, "critic_warmup_steps": 3}, {}, 1, ("values",)),
    ("dual_clip_ppo", {}, {}, 1, ("values",)),
    ("dual_clip_ppo", {"clip_ratio_c": 1.05, "cliprange": 0.01},
     {"clip_ratio_c": 1.05, "cliprange": 0.01}, 1, ("values",)),
    ("kimi_k15", {"num_generations": 3}, {"n": 3}, 3, ()),
    ("kimi_k15", {"num_generations": 2, "tau": 0.5, "length_penalty": 0.3},
     {"n": 2, "tau": 0.5, "length_penalty": 0.3}, 2, ()),
    ("rebel", {}, {}, 2, ()),
    ("rebel", {"eta": 0.3, "beta": 0.0}, {"eta": 0.3, "beta": 0.0}, 2, ()),
]

# methods whose advantages are whitened over the batch's tokens (see test_whiten_of_a_single_token)
WHITENED = {"reinforce_pp": 1, "reinforce_pp_baseline": 2, "ppo": 1, "dual_clip_ppo": 1}


@functools.lru_cache(maxsize=None)
def _compiled(method, params):
    return ptdsl.compile(method, **dict(params))


def _check(c, reference, x, what, rtol=1e-6):
    names = [i.name for i in c.inputs if i.trainable]
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want, want_g = loss_and_grads(reference, x, names)
    assert_close(got, want, rtol=rtol, what=f"{what} loss")
    for n in names:
        assert_close(got_g[n], want_g[n], rtol=rtol, what=f"{what} grad {n}")


@checks(REFERENCE)
@pytest.mark.parametrize("method,params,ref,n,extra", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@given(data=st.data())
def test_matches_reference(method, params, ref, n, extra, data):
    x = data.draw(online_inputs(n, extra))
    c = _compiled(method, tuple(sorted(params.items())))
    _check(c, lambda i: getattr(REF, method)(i, **ref), x, method)


def test_headers():
    from ptdsl.compiler import define
    experimental = {name for name in {c[0] for c in CASES} if define(name).stability == "experimental"}
    assert experimental == {"reinforce_pp_baseline", "gpg", "grpo_k1", "kimi_k15", "ppo_critic",
                            # demoted by the graduation audit (docs/stability.md#graduation): no identity or near-miss
                            "gdpo", "reinforce_pp", "remax", "two_grpo"}


# ======================================================================================
# (b) TRL 1.16's own code
# ======================================================================================

if TRL_VERSION is not None:
    from trl.trainer.grpo_trainer import GRPOTrainer

FEW = settings(max_examples=25)


def _three_way(method, spec_params, ref_kw, x, trl_fn, reference=None):
    """TRL vs the reference, and the spec vs the reference, in loss and policy gradient
    (the reference: ``reference`` or this batch's own, references_online_batch)."""
    x = S.requires_grad_(x)
    policy = x["logprobs(policy, y)"]
    reference = reference or getattr(REF, method)
    trl_value = trl_fn(x)
    ref_value = reference(x, **ref_kw)
    # TRL's advantages pass through float32 (its rewards_per_func): each is off by ~1e-8 of its value,
    # which a loss whose terms nearly cancel shows as an absolute error of that size, hence the atol
    assert_close(trl_value.detach(), ref_value.detach(), rtol=1e-6, atol=1e-7, what=f"{method}: TRL vs reference loss")
    (g_trl,) = torch.autograd.grad(trl_value, policy)
    (g_ref,) = torch.autograd.grad(ref_value, policy)
    assert_close(g_trl, g_ref, rtol=1e-6, atol=1e-7, what=f"{method}: TRL vs reference grad")
    c = _compiled(method, tuple(sorted(spec_params.items())))
    _check(c, lambda i: reference(i, **ref_kw), {k: v.detach() for k, v in x.items()}, method)


_BETAS = st.sampled_from([0.0, 0.04, 0.5])
_CLIPS = st.sampled_from([(0.2, 0.2), (0.2, 0.28), (0.1, 0.5)])


def _rewards(x, key="r(y)"):
    return x[key].detach()[:, None]


@needs_trl
@checks(TRL, "lite_ppo")
@FEW
@given(data=st.data(), n=st.integers(2, 4), beta=_BETAS, clips=_CLIPS)
def test_trl_lite_ppo(data, n, beta, clips):
    """GRPOConfig(scale_rewards="batch", loss_type="dapo")."""
    x = data.draw(online_inputs(n))
    eps, eps_high = clips
    adv = D.grpo_advantages(_rewards(x), n, scale_rewards="batch")
    _three_way("lite_ppo", {"num_generations": n, "beta": beta, "epsilon": eps, "epsilon_high": eps_high},
               {"n": n, "beta": beta, "epsilon": eps, "epsilon_high": eps_high}, x,
               lambda i: D.grpo_loss(i, adv, loss_type="dapo", beta=beta, epsilon=eps, epsilon_high=eps_high))


@needs_trl
@checks(TRL, "two_grpo")
@FEW
@given(data=st.data(), beta=_BETAS, clips=_CLIPS)
def test_trl_two_grpo(data, beta, clips):
    """GRPOConfig(num_generations=2, loss_type="grpo")."""
    x = data.draw(online_inputs(2))
    eps, eps_high = clips
    adv = D.grpo_advantages(_rewards(x), 2)
    _three_way("two_grpo", {"beta": beta, "epsilon": eps, "epsilon_high": eps_high},
               {"beta": beta, "epsilon": eps, "epsilon_high": eps_high}, x,
               lambda i: D.grpo_loss(i, adv, loss_type="grpo", beta=beta, epsilon=eps, epsilon_high=eps_high))


@needs_trl
@checks(TRL, "grpo_delta")
@FEW
@given(data=st.data(), n=st.integers(2, 4), beta=_BETAS, delta=st.sampled_from([1.05, 1.3, 4.0]))
def test_trl_grpo_delta(data, n, beta, delta):
    """GRPOConfig(delta=δ, loss_type="grpo")."""
    x = data.draw(online_inputs(n))
    adv = D.grpo_advantages(_rewards(x), n)
    _three_way("grpo_delta", {"num_generations": n, "beta": beta, "delta": delta},
               {"n": n, "beta": beta, "delta": delta}, x,
               lambda i: D.grpo_loss(i, adv, loss_type="grpo", beta=beta, delta=delta))


@needs_trl
@checks(TRL, "vespo")
@FEW
@given(data=st.data(), n=st.integers(2, 4), beta=_BETAS,
       kernel=st.sampled_from([(2.0, 3.0, 3.0, 2.0), (1.0, 0.5, 0.0, 4.0)]),
       far=st.booleans())
def test_trl_vespo(data, n, beta, kernel, far):
    """GRPOConfig(loss_type="vespo", vespo_k_pos, vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg).
    ``far`` moves the old log-probs by up to ±12 per token so the sequence weight's clamps bind."""
    x = data.draw(online_inputs(n))
    if far:
        shift = S._token_values(data.draw, x["mask(y)"], st.floats(-12, 12, width=64), F64)
        x["logprobs(old, y)"] = torch.where(x["mask(y)"], x["logprobs(old, y)"] + shift, shift)
    k_pos, l_pos, k_neg, l_neg = kernel
    adv = D.grpo_advantages(_rewards(x), n)
    _three_way("vespo", {"num_generations": n, "beta": beta, "vespo_k_pos": k_pos, "vespo_lambda_pos": l_pos,
                         "vespo_k_neg": k_neg, "vespo_lambda_neg": l_neg},
               {"n": n, "beta": beta, "k_pos": k_pos, "lambda_pos": l_pos, "k_neg": k_neg, "lambda_neg": l_neg}, x,
               lambda i: D.grpo_loss(i, adv, loss_type="vespo", beta=beta, vespo=kernel))


@needs_trl
@checks(TRL, "gdpo")
@FEW
@given(data=st.data(), n=st.integers(2, 4), beta=_BETAS,
       weights=st.sampled_from([(1.0, 1.0), (2.0, 0.5), (1.0, -0.3)]))
def test_trl_gdpo(data, n, beta, weights):
    """GRPOConfig(multi_objective_aggregation="normalize_then_sum", loss_type="grpo"), two rewards."""
    x = data.draw(online_inputs(n, ("gdpo",)))
    rewards = torch.stack([x["correct(y)"], x["format(y)"]], dim=1)
    adv = D.grpo_advantages(rewards, n, aggregation="normalize_then_sum", weights=list(weights))
    _three_way("gdpo", {"num_generations": n, "beta": beta, "correct_weight": weights[0], "format_weight": weights[1]},
               {"n": n, "beta": beta, "correct_weight": weights[0], "format_weight": weights[1]}, x,
               lambda i: D.grpo_loss(i, adv, loss_type="grpo", beta=beta))


@needs_trl
@checks(TRL, "entropy_8020")
@FEW
@given(data=st.data(), n=st.integers(2, 4), beta=_BETAS, rho=st.sampled_from([0.2, 0.5, 0.9, 1.0]))
def test_trl_entropy_8020(data, n, beta, rho):
    """GRPOConfig(top_entropy_quantile=ρ, loss_type="dapo", epsilon_high=0.28) (TRL switches the mask
    off at ρ = 1; the spec's quantile-0 threshold keeps every token, the same loss)."""
    x = data.draw(online_inputs(n, ("entropy",)))
    adv = D.grpo_advantages(_rewards(x), n)
    _three_way("entropy_8020", {"num_generations": n, "beta": beta, "top_entropy_quantile": rho},
               {"n": n, "beta": beta, "rho": rho}, x,
               lambda i: D.grpo_loss(i, adv, loss_type="dapo", beta=beta, epsilon_high=0.28, top_entropy_quantile=rho))


@needs_trl
@checks(TRL, "gspo")
@FEW
@given(data=st.data(), n=st.integers(2, 4), beta=_BETAS)
def test_trl_gspo_adds_nothing_for_a_fully_masked_completion(data, n, beta):
    """GRPOConfig(importance_sampling_level="sequence", loss_type="grpo") on a batch where at least
    one completion has no token (a masked truncation) and others have holes: TRL multiplies the
    loss by the mask before each sequence's token mean, so an empty row adds 0 and still counts in
    the mean over rows. The spec used to add −min(r·A, clip(r)·A) = −A for it (r = 1)."""
    x = data.draw(online_inputs(n))
    x["mask(y)"] = data.draw(S.thinned(x["mask(y)"], empty_rows=1))
    adv = D.grpo_advantages(_rewards(x), n)
    _three_way("gspo", {"num_generations": n, "beta": beta}, {"n": n, "beta": beta}, x,
               lambda i: D.grpo_loss(i, adv, loss_type="grpo", beta=beta, epsilon=3e-4, epsilon_high=4e-4,
                                  importance_sampling_level="sequence"), reference=ON.gspo)


# GRPOTrainer settings of the stable specs TRL 1.16 implements with group-scaled advantages:
# (method, spec params, trl_loss keywords, TRL's scale_rewards)
TRL_GRPO_FAMILY = [
    ("grpo", {}, dict(loss_type="grpo"), "group"),
    ("two_grpo", {}, dict(loss_type="grpo"), "group"),
    ("bnpo", {}, dict(loss_type="bnpo"), "group"),
    ("dr_grpo", {"max_completion_length": 6}, dict(loss_type="dr_grpo", max_completion_length=6), "none"),
    ("dapo", {}, dict(loss_type="dapo", epsilon_high=0.28), "group"),
    ("gspo", {}, dict(loss_type="grpo", epsilon=3e-4, epsilon_high=4e-4, importance_sampling_level="sequence"),
     "group"),
    ("luspo", {}, dict(loss_type="luspo", importance_sampling_level="sequence"), "group"),
    ("cispo", {"epsilon_high": 5.0}, dict(loss_type="cispo", epsilon_high=5.0), "group"),
    ("sapo", {}, dict(loss_type="sapo"), "group"),
    ("vespo", {}, dict(loss_type="vespo"), "group"),
    ("grpo_delta", {}, dict(loss_type="grpo", delta=4.0), "group"),
    ("entropy_8020", {}, dict(loss_type="dapo", epsilon_high=0.28, top_entropy_quantile=0.2), "group"),
    # and away from the defaults
    ("bnpo", {"epsilon": 0.1, "epsilon_high": 0.28}, dict(loss_type="bnpo", epsilon=0.1, epsilon_high=0.28), "group"),
    ("luspo", {"epsilon": 0.1, "epsilon_high": 0.3}, dict(loss_type="luspo", epsilon=0.1, epsilon_high=0.3,
                                                          importance_sampling_level="sequence"), "group"),
    ("cispo", {"epsilon_high": 0.28}, dict(loss_type="cispo", epsilon_high=0.28), "group"),
    ("sapo", {"sapo_temperature_pos": 2.0, "sapo_temperature_neg": 0.5}, dict(loss_type="sapo", sapo=(2.0, 0.5)),
     "group"),
    ("gspo", {"epsilon": 0.1, "epsilon_high": 0.2}, dict(loss_type="grpo", epsilon=0.1, epsilon_high=0.2,
                                                         importance_sampling_level="sequence"), "group"),
]


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,params,trl_kw,scale", TRL_GRPO_FAMILY,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TRL_GRPO_FAMILY)])
@settings(max_examples=15)
@given(data=st.data(), beta=st.sampled_from([0.0, 0.04]))
def test_trl_grpo_family_on_masks_with_empty_rows_and_holes(method, params, trl_kw, scale, data, beta):
    """Every GRPOTrainer setting above against TRL itself on masks TRL can be given and the
    runtime produces (a fully masked completion: `mask_truncated`), and on holes and late starts
    (TRL's tool masks): loss and policy gradient, spec vs TRL directly."""
    n = 2 if method == "two_grpo" else data.draw(st.integers(2, 4), label="n")
    extra = ("entropy",) if method == "entropy_8020" else ()
    x = data.draw(online_inputs(n, extra))
    x["mask(y)"] = data.draw(S.thinned(x["mask(y)"], empty_rows=data.draw(st.integers(0, 2), label="empty rows")))
    adv = D.grpo_advantages(_rewards(x), n, scale_rewards=scale)
    spec_params = {**params, "beta": beta, **({} if method == "two_grpo" else {"num_generations": n})}
    c = _compiled(method, tuple(sorted(spec_params.items())))
    # TRL builds SAPO's τ with torch.where on Python floats, i.e. in float32 (1.05 to ~1e-8)
    _check(c, lambda i: D.grpo_loss(i, adv, beta=beta, **trl_kw), x, f"{method} vs TRL",
           rtol=1e-5 if method == "sapo" else 1e-6)


def _bf16_entropy_batch():
    """Two rows, two tokens each, bfloat16: entropies 1 and 1 + 2⁻⁷ (adjacent bfloat16 values). Their
    median (ρ = 0.5) is 1 + 2⁻⁸ in float32, which rounds to 1 in bfloat16 (ties to even)."""
    bf16 = torch.bfloat16
    return {"entropy(policy, y)": torch.tensor([[1.0, 1.0078125], [1.0078125, 1.0]], dtype=bf16),
            "logprobs(policy, y)": torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], dtype=bf16),
            "logprobs(old, y)": torch.tensor([[-1.25, -2.25], [-0.25, -1.0]], dtype=bf16),
            "mask(y)": torch.ones(2, 2, dtype=torch.bool), "r(y)": torch.tensor([1.0, 0.0], dtype=bf16)}


def _trl_forking(x, rho):
    return GRPOTrainer.get_high_entropy_mask(stub(), x["entropy(policy, y)"], x["mask(y)"].long(), 1 - rho)


@needs_trl
def test_trl_entropy_8020_in_bfloat16_compares_with_the_float32_quantile():
    """TRL takes the quantile in float32 and compares the entropies with it in float32, so it drops
    the two entropy-1 tokens; rounding the threshold back to bfloat16 (as token_quantile did) kept
    them. The interpreter, the reference semantics, keeps TRL's tokens."""
    x = _bf16_entropy_batch()
    trl_mask = _trl_forking(x, 0.5)
    assert trl_mask.tolist() == [[False, True], [True, False]]
    c = _compiled("entropy_8020", (("num_generations", 2), ("top_entropy_quantile", 0.5)))
    loss, metrics = c.interpret(x)
    assert metrics["forking_fraction"].item() == trl_mask.float().mean().item() == 0.5
    # TRL's loss on the same values (log-probs in float64, its entropy mask from the bfloat16
    # entropies): −0.085 with TRL's two tokens, −0.170 with all four; bfloat16 arithmetic ~1e-2
    wide = {k: v if k.startswith("entropy") or not v.is_floating_point() else v.double() for k, v in x.items()}
    wide["logprobs(reference, y)"] = wide["logprobs(policy, y)"]  # β = 0: unused
    trl_value = D.grpo_loss(wide, D.grpo_advantages(_rewards(wide), 2), loss_type="dapo", epsilon_high=0.28,
                         top_entropy_quantile=0.5)
    assert abs(trl_value.item() + 0.0848) < 1e-3
    assert_close(loss.double(), trl_value, rtol=2e-2, atol=0, what="entropy_8020 bf16 vs TRL loss")


@needs_trl
def test_generated_entropy_8020_in_bfloat16_compares_with_the_float32_quantile():
    x = _bf16_entropy_batch()
    c = _compiled("entropy_8020", (("num_generations", 2), ("top_entropy_quantile", 0.5)))
    (loss, metrics), (want, _) = c.loss(x), c.interpret(x)
    assert metrics["forking_fraction"].item() == _trl_forking(x, 0.5).float().mean().item()
    assert loss.item() == want.item()


@needs_trl
def test_trl_defaults_match_the_specs():
    """The params that are TRL 1.16 GRPOConfig fields keep TRL's defaults (grpo_delta's δ and the
    DAPO recipe of entropy_8020 are the papers' values; TRL leaves delta unset)."""
    import tempfile
    import warnings

    from trl import GRPOConfig

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = GRPOConfig(output_dir=tmp, use_cpu=True, bf16=False, report_to="none")
    vespo = ptdsl.load("vespo").params
    got = {p: vespo[p].default for p in ("vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg")}
    assert got == {p: getattr(cfg, p) for p in got}
    assert cfg.top_entropy_quantile == 1.0 and ptdsl.load("entropy_8020").params["top_entropy_quantile"].default == 0.2
    assert cfg.delta is None and cfg.multi_objective_aggregation == "sum_then_normalize"
    lite = ptdsl.load("lite_ppo").params
    assert (lite["beta"].default, lite["epsilon"].default, lite["num_generations"].default) == (
        cfg.beta, cfg.epsilon, cfg.num_generations)


# ======================================================================================
# (c) identities METHODS.md states between methods
# ======================================================================================


def _loss_and_policy_grad(method, params, x):
    c = _compiled(method, tuple(sorted(params.items())))
    names = [i.name for i in c.inputs if i.trainable]
    value, grads = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    return value, grads["logprobs(policy, y)"]


IDENTITIES = [
    # G16: with sequence-level advantages GSPO-token equals GSPO in value and gradient (β = 0)
    ("gspo_token", {"num_generations": 3}, "gspo", {"num_generations": 3}, 3, ()),
    # G29: a cap above every ratio is no cap
    ("grpo_delta", {"num_generations": 2, "delta": 1e6, "beta": 0.04}, "grpo", {"num_generations": 2, "beta": 0.04}, 2, ()),
    # G27: ρ = 1 keeps every token: DAPO
    ("entropy_8020", {"num_generations": 2, "top_entropy_quantile": 1.0}, "dapo", {"num_generations": 2}, 2, ("entropy",)),
    # G4: a dual-clip bound that never binds is PPO
    ("dual_clip_ppo", {"clip_ratio_c": 1e6}, "ppo", {}, 1, ("values",)),
]


@pytest.mark.parametrize("a,pa,b,pb,n,extra", IDENTITIES, ids=[f"{i[0]}={i[2]}" for i in IDENTITIES])
@given(data=st.data())
@settings(max_examples=20)
def test_identity(a, pa, b, pb, n, extra, data):
    x = data.draw(online_inputs(n, extra))
    va, ga = _loss_and_policy_grad(a, pa, x)
    vb, gb = _loss_and_policy_grad(b, pb, x)
    assert_close(va, vb, rtol=1e-6, what=f"{a} vs {b} loss")
    assert_close(ga, gb, rtol=1e-6, what=f"{a} vs {b} grad")


@given(data=st.data(), n=st.integers(2, 4))
@settings(max_examples=20)
def test_on_policy_gradients(data, n):
    """On-policy (ℓ_old = ℓ_θ): OPO's and GPG's gradients are REINFORCE's with their baselines and
    scales: Σ_{i,t} −A_i ∇ℓ_θ / N_tokens; and REBEL's is −2/η·(Δr)·(∇h(y) − ∇h(y′)) per pair."""
    x = data.draw(online_inputs(n))
    x["logprobs(old, y)"] = x["logprobs(policy, y)"].clone()
    r, m = x["r(y)"], x["mask(y)"]
    lengths = m.sum(-1).to(F64)
    groups = r.reshape(-1, n)
    baseline = ((lengths * r).reshape(-1, n).sum(1) / lengths.reshape(-1, n).sum(1)).repeat_interleave(n)
    _, g = _loss_and_policy_grad("opo", {"num_generations": n}, x)
    want = torch.where(m, -(r - baseline)[:, None] / m.sum(), torch.zeros((), dtype=F64))
    assert_close(g, want, rtol=1e-6, what="opo on-policy grad")
    centred = r - groups.mean(1).repeat_interleave(n)
    informative = (groups.max(1).values > groups.min(1).values).repeat_interleave(n)
    if informative.any():
        scale = r.numel() / int(informative.sum())
        _, g = _loss_and_policy_grad("gpg", {"num_generations": n}, x)
        want = torch.where(m & informative[:, None], -(centred * scale)[:, None] / m.sum(), torch.zeros((), dtype=F64))
        assert_close(g, want, rtol=1e-6, atol=1e-9, what="gpg grad")


def test_remax_baseline_is_the_greedy_reward():
    """A hand example: two prompts, one sample each; A = r(y) − r(greedy)."""
    x = {
        "logprobs(policy, y)": torch.tensor([[-1.0, -2.0], [-0.5, float("nan")]], dtype=F64),
        "mask(y)": torch.tensor([[True, True], [True, False]]),
        "r(y)": torch.tensor([1.0, 0.0], dtype=F64),
        "r(greedy)": torch.tensor([0.25, 0.5], dtype=F64),
    }
    loss, _ = _compiled("remax", ()).loss(x)
    # mean(−(1 − 0.25)·(−3), −(0 − 0.5)·(−0.5)) = mean(2.25, −0.25) = 1.0
    assert_close(loss, torch.tensor(1.0, dtype=F64), what="remax by hand")


@given(data=st.data(), n=st.integers(2, 4))
@settings(max_examples=20)
def test_opo_group_without_tokens(data, n):
    """A group whose every sample is masked has no length weights: its baseline (and the
    `mean_baseline` metric) is finite, 0 for that group, and the loss equals the reference."""
    x = data.draw(online_inputs(n))
    x["mask(y)"][:n] = False
    c = _compiled("opo", (("num_generations", n),))
    _check(c, lambda i: REF.opo(i, n=n), x, "opo")
    r, lengths = x["r(y)"], x["mask(y)"].sum(-1).to(F64)
    baseline = (lengths * r).reshape(-1, n).sum(1) / lengths.reshape(-1, n).sum(1).clamp(min=1)
    assert_close(c.loss(x)[1]["mean_baseline"], baseline.mean(), what="mean_baseline")


def test_ppo_gae_by_hand():
    """One row, three tokens, γ = 1, λ = 0.5, no KL: δ = (0 + 2 − 1, 0 + 3 − 2, 5 − 3) = (1, 1, 2);
    Â = (1 + 0.5·(1 + 0.5·2), 1 + 0.5·2, 2) = (2, 2, 2); returns = Â + V = (3, 4, 5). Whitened Â is
    0, so the loss is vf_coef · ½ · mean((V − G)²) with V = V_old."""
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)
    x = {
        "logprobs(policy, y)": torch.tensor([[-1.0, -1.0, -1.0]], dtype=F64),
        "logprobs(old, y)": torch.tensor([[-1.0, -1.0, -1.0]], dtype=F64),
        "logprobs(reference, y)": torch.tensor([[-1.0, -1.0, -1.0]], dtype=F64),
        "mask(y)": torch.ones(1, 3, dtype=torch.bool),
        "rm(y)": torch.tensor([5.0], dtype=F64),
        "values(value, y)": v, "values(old(value), y)": v.clone(),
    }
    loss, metrics = _compiled("ppo", (("gamma", 1.0), ("lam", 0.5), ("vf_coef", 1.0))).loss(x)
    assert_close(metrics["value_loss"], torch.tensor(0.5 * 4.0, dtype=F64), what="value loss")  # (V − G)² = 4 each
    assert_close(loss, torch.tensor(2.0, dtype=F64), what="ppo loss")


def _single_token_batch(method: str, n: int) -> dict:
    """n rows of width 3 (garbage outside the mask) in which only row 0's first token is valid."""
    nan = float("nan")
    mask = torch.zeros(n, 3, dtype=torch.bool)
    mask[0, 0] = True

    def tok(v):
        return torch.where(mask, torch.full((n, 3), v, dtype=F64), torch.full((n, 3), nan, dtype=F64))
    x = {"logprobs(policy, y)": tok(-0.7), "logprobs(old, y)": tok(-0.9), "logprobs(reference, y)": tok(-1.3),
         "mask(y)": mask, "r(y)": torch.linspace(1.0, 0.0, n, dtype=F64)}
    if method in ("ppo", "dual_clip_ppo"):
        x["rm(y)"] = x.pop("r(y)")
        x["values(value, y)"], x["values(old(value), y)"] = tok(0.4), tok(0.25)
    return x


@pytest.mark.parametrize("method", sorted(WHITENED))
def test_whiten_of_a_single_token(method):
    """A batch with one completion token (e.g. `--max-tokens 1 --batch-size 1`): the n − 1
    variance is 0/0, which used to make the loss NaN. One token has no spread: its whitened
    advantage is 0, so the policy term is 0 and (PPO) only the value loss trains. The spec
    agrees with the reference in loss and gradient, and generated code with the interpreter."""
    n = WHITENED[method]
    x = _single_token_batch(method, n)
    c = _compiled(method, (("num_generations", n),) if method == "reinforce_pp_baseline" else ())
    _check(c, lambda i: getattr(REF, method)(i, **({"n": n} if method == "reinforce_pp_baseline" else {})),
           x, method)
    loss, metrics = c.loss(x)
    assert_close(loss, c.interpret(x)[0], what="codegen vs interpreter")
    if method in ("ppo", "dual_clip_ppo"):
        # V_old = 0.25 on the last (only) token: Â = δ = score − c_KL·(ℓ_old − ℓ_ref) − V_old;
        # G = Â + V_old; L = c_vf · ½ · max((V − G)², (clip(V, V_old ± 0.2) − G)²)
        returns = 1.0 - 0.05 * (-0.9 + 1.3)
        want = 0.1 * 0.5 * max((0.4 - returns) ** 2, (0.45 - returns) ** 2)
        assert metrics["policy_loss"].item() == 0.0
        assert_close(loss, torch.tensor(want, dtype=F64), what=f"{method} value loss by hand")
    else:
        assert loss.item() == 0.0


@pytest.mark.integration
def test_ppo_trains_on_one_token_micro_batches(tmp_path):
    """The reproduction from issue 9: `ptdsl train ppo --max-tokens 1 --batch-size 1` stopped at
    step 1 with a NaN from `whiten`; now every step is finite and the value head trains."""
    r = subprocess.run([sys.executable, "-m", "ptdsl", "train", "ppo", "--max-tokens", "1", "--batch-size", "1",
                        "--steps", "4", "--max-examples", "8", "--output", str(tmp_path), "--quiet"],
                       cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        assert row["completion_length"] == 1.0 and row["policy_loss"] == 0.0
        assert math.isfinite(row["loss"]) and row["value_loss"] > 0 and math.isfinite(row["grad_norm"])
