"""RLOO and GMPO against the trainers TRL 1.16 gives them (RLOOTrainer, GMPOTrainer), driven
without a model: the spec against TRL, and TRL against the plain-torch reference of
references_online.py, in loss and in the gradient w.r.t. the policy log-probs.

* RLOO: ``RLOOTrainer._generate_and_score_completions`` on a stand-in whose generation
  returns completions of the batch's lengths, whose reward function returns the test's
  rewards and whose ``_get_per_token_logps_and_entropies`` returns the test's old and
  reference log-probs (0 on padding), so TRL's KL-shaped reward, leave-one-out baseline and
  optional whitening run unchanged; then ``RLOOTrainer._compute_loss`` with the policy's.
* GMPO: ``GMPOTrainer._compute_loss`` through tests/trl_drivers.py's GRPO stand-in, with
  advantages from GRPOTrainer's own ``_generate_and_score_completions``, on ragged masks and
  on masks with empty rows and holes.

TRL passes rewards and std factors through float32: rtol 1e-6, atol 1e-7.
"""
from __future__ import annotations

import functools
import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptdsl
from tests import trl_drivers as D
from tests.helpers import assert_same, loss_and_grads, trainable
from tests.methods import references_online as ON
from tests.methods import strategies as S
from tests.reference_cases import TRL, checks
from tests.trl_harness import TRL_VERSION, Accelerator, metrics, needs_trl, zero_outside

if TRL_VERSION is not None:
    from trl.experimental.gmpo import GMPOTrainer
    from trl.trainer.rloo_trainer import RLOOTrainer

F64 = torch.float64
LP = "logprobs(policy, y)"
FEW = settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
TOL = dict(rtol=1e-6, atol=1e-7)


@functools.lru_cache(maxsize=None)
def _compiled(method, params):
    return ptdsl.compile(method, **dict(params))


def _three_way(method, spec_params, ref_kw, x, trl_fn, reference):
    c = _compiled(method, tuple(sorted(spec_params.items())))
    names = trainable(c)
    theirs = loss_and_grads(trl_fn, x, names)
    assert_same(loss_and_grads(lambda i: reference(i, **ref_kw), x, names), theirs, names, what=f"{method} reference vs TRL",
                **TOL)
    assert_same(loss_and_grads(lambda i: c.loss(i)[0], x, names), theirs, names, what=f"{method} spec vs TRL", **TOL)


# --- RLOOTrainer -------------------------------------------------------------------------


def _rloo_stub(x, n, beta, epsilon, epsilon_high, normalize_advantages, policy_model):
    mask = x["mask(y)"]
    rows = mask.shape[0]
    lengths = mask.sum(1).tolist()
    model, ref_model = SimpleNamespace(training=True, is_gradient_checkpointing=False), object()
    logps = {id(model): zero_outside(mask, x["logprobs(old, y)"]), id(ref_model): zero_outside(mask, x["logprobs(reference, y)"]),
             id(policy_model): zero_outside(mask, x[LP])}

    def per_token(m, ids, attention, logits_to_keep, *a, **k):
        values = logps[id(m)][:, :logits_to_keep]
        return values, torch.zeros_like(values), None

    def generate(prompts):  # prompt ids, completion ids (the batch's lengths, no EOS), texts
        return [[1]] * rows, [[2] * length for length in lengths], ["c"] * rows

    return SimpleNamespace(
        accelerator=Accelerator(), model=model, ref_model=ref_model, _generate=generate,
        _get_per_token_logps_and_entropies=per_token, _tokenizer=SimpleNamespace(pad_token_id=0),
        pad_to_multiple_of=None, mask_truncated_completions=False, eos_token_ids=[3], beta=beta,
        args=SimpleNamespace(per_device_train_batch_size=rows, gradient_checkpointing_kwargs=None),
        _calculate_rewards=lambda inputs, prompts, completions, ids: x["r(y)"].detach()[:, None].clone(),
        num_generations=n, reward_weights=torch.ones(1, dtype=F64), reward_clip_range=None,
        normalize_advantages=normalize_advantages, reward_func_names=["r"], _metrics=metrics(),
        _logs={"prompt": [], "completion": [], "rewards": defaultdict(list), "advantages": [],
               "extra": defaultdict(list), "images": []},
        _pending_extra_logs={}, _pending_metrics={}, log_multimodal=False, epsilon_low=epsilon,
        epsilon_high=epsilon_high, aux_loss_enabled=False)


def rloo_loss(x, *, n, beta, epsilon, epsilon_high, normalize_advantages):
    """RLOOTrainer: advantages from `_generate_and_score_completions`, then `_compute_loss`."""
    policy_model = object()
    this = _rloo_stub(x, n, beta, epsilon, epsilon_high, normalize_advantages, policy_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = RLOOTrainer._generate_and_score_completions(this, [{"prompt": "p"}] * x["mask(y)"].shape[0])
    return RLOOTrainer._compute_loss(this, policy_model, inputs)


@needs_trl
@checks(TRL, "rloo")
@FEW
@given(data=st.data(), n=st.integers(2, 4), beta=st.sampled_from([0.0, 0.05, 0.5]),
       clips=st.sampled_from([(0.2, 0.2), (0.2, 0.28), (0.05, 0.05)]), normalize=st.booleans())
def test_trl_rloo(data, n, beta, clips, normalize):
    x = data.draw(S.rollout_inputs(n))
    eps, eps_high = clips
    params = dict(beta=beta, epsilon=eps, epsilon_high=eps_high, normalize_advantages=normalize)
    _three_way("rloo", {"num_generations": n, **params}, {"n": n, **params}, x,
               lambda i: rloo_loss(i, n=n, **params), ON.rloo)


# --- GMPOTrainer -------------------------------------------------------------------------


@needs_trl
@checks(TRL, "gmpo")
@FEW
@given(data=st.data(), n=st.integers(2, 4), beta=st.sampled_from([0.0, 0.04, 0.5]),
       clips=st.sampled_from([(0.4, 0.4), (0.2, 0.28), (0.05, 0.05)]), thin=st.booleans())
def test_trl_gmpo(data, n, beta, clips, thin):
    """``thin``: masks with empty rows, holes and late starts (TRL clamps an empty row's token
    count at 1, so its sequence weight is e^0 and it adds −A)."""
    x = data.draw(S.rollout_inputs(n))
    if thin:
        x["mask(y)"] = data.draw(S.thinned(x["mask(y)"], empty_rows=1))
    eps, eps_high = clips
    adv = D.grpo_advantages(x["r(y)"].detach()[:, None], n)
    params = dict(beta=beta, epsilon=eps, epsilon_high=eps_high)
    trl_fn = lambda i: D.grpo_loss(i, adv, loss_type="grpo", trainer=GMPOTrainer, **params)  # noqa: E731
    if thin:  # the reference is written for contiguous masks; the spec meets TRL directly
        c = _compiled("gmpo", tuple(sorted({"num_generations": n, **params}.items())))
        names = trainable(c)
        assert_same(loss_and_grads(lambda i: c.loss(i)[0], x, names), loss_and_grads(trl_fn, x, names), names,
                    what="gmpo spec vs TRL", **TOL)
    else:
        _three_way("gmpo", {"num_generations": n, **params}, {"n": n, **params}, x, trl_fn, ON.gmpo)


@needs_trl
def test_trl_defaults_match_the_specs(tmp_path):
    from trl import RLOOConfig
    from trl.experimental.gmpo import GMPOConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
        rloo, gmpo = RLOOConfig(**kw), GMPOConfig(**kw)
    p, q = ptdsl.compile("rloo").params, ptdsl.compile("gmpo").params
    assert (rloo.beta, rloo.epsilon, rloo.normalize_advantages) == (p["beta"], p["epsilon"], p["normalize_advantages"])
    assert (gmpo.epsilon, gmpo.beta) == (q["epsilon"], q["beta"])


@pytest.mark.parametrize("method", ["rloo", "gmpo"])
def test_the_specs_are_what_the_trainers_configure(method):
    """The comparisons above configure TRL from the spec's param names; they must exist."""
    params = ptdsl.compile(method).params
    assert {"num_generations", "beta", "epsilon", "epsilon_high"} <= set(params)
