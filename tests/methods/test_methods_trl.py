"""The first ten methods (sft, dpo, cdpo, ipo, simpo, orpo, kto, grpo, dr_grpo, dapo), and
apo_zero_unpaired beside KTO, against TRL 1.16's own loss code, three ways: TRL vs the plain-torch reference of references.py
(rtol 1e-9), and the compiled spec vs TRL (rtol 1e-6), in loss and in the gradient w.r.t.
the policy leaves (log-probs, or the logits CPO and ORPO compute them from). TRL is driven
without a model through tests/trl_harness.py and tests/trl_drivers.py.

GRPO's advantages here come from ``statistics.mean/stdev`` (an independent computation);
test_online_batch.py takes them from TRL's own ``_generate_and_score_completions``.
"""
from __future__ import annotations

import functools
import statistics
import tempfile
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptdsl
from tests import trl_drivers as D
from tests.helpers import assert_close, assert_same, loss_and_grads, trainable
from tests.methods import references as ref
from tests.methods import references_offline as OFF
from tests.methods import strategies as strat
from tests.reference_cases import TRL, checks
from tests.trl_harness import TRL_VERSION, needs_trl, stub

if TRL_VERSION is not None:
    import trl.trainer.utils as trl_utils
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

NAN = float("nan")
F64 = torch.float64
FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@functools.lru_cache(maxsize=None)
def _compiled(method, params=()):
    return ptdsl.compile(method, **dict(params))


def _three_way(method, spec_params, ref_kw, x, trl_fn, rtol=1e-9, atol=1e-11):
    """TRL vs the reference (tight) and the spec vs TRL, loss and gradient of every trainable leaf."""
    c = _compiled(method, tuple(sorted(spec_params.items())))
    names = trainable(c)
    theirs = loss_and_grads(trl_fn, x, names)
    assert_same(loss_and_grads(lambda i: ref.METHODS[method](i, **ref_kw), x, names), theirs, names, rtol, atol,
                f"{method} reference vs TRL")
    assert_same(loss_and_grads(lambda i: c.loss(i)[0], x, names), theirs, names, max(rtol, 1e-6), max(atol, 1e-9),
                f"{method} spec vs TRL")


# --- DPOTrainer: sigmoid, ipo ---------------------------------------------------------


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,loss_type", [("dpo", "sigmoid"), ("ipo", "ipo")])
@FEW
@given(x=strat.preference_inputs(), beta=st.sampled_from([0.1, 0.5, 2.0]))
def test_trl_dpo_trainer(method, loss_type, x, beta):
    _three_way(method, {"beta": beta}, {"beta": beta}, x, lambda i: D.dpo_loss(i, loss_type=loss_type, beta=beta))


@needs_trl
def test_trl_dpo_sigmoid_ignores_label_smoothing():
    """Documents a TRL 1.16 fact: ``loss_type="sigmoid"`` no longer applies ``label_smoothing``.

    So TRL's DPO trainer cannot be the oracle for cDPO; CPO's sigmoid loss (next test) still
    has the smoothed form."""
    from tests.methods.test_references_selfcheck import PREF
    x = strat.requires_grad_({k: v.clone() for k, v in PREF.items()})
    trl_loss = D.dpo_loss(x, label_smoothing=0.1)
    assert_close(trl_loss, ref.dpo(x), rtol=1e-12)
    assert not torch.isclose(trl_loss, ref.cdpo(x))


# --- CPO trainer: cpo_loss ("sigmoid" with label smoothing, fed DPO log-ratios) --------


@needs_trl
@checks(TRL, "cdpo")
@FEW
@given(x=strat.preference_inputs(), label_smoothing=st.sampled_from([0.0, 0.1, 0.3]), beta=st.sampled_from([0.1, 1.0]))
def test_trl_cdpo_via_cpo_sigmoid_loss(x, label_smoothing, beta):
    """CPO's sigmoid loss is DPO with ℓ_ref = 0, so feeding it h(y) gives cDPO."""
    def trl_fn(i):
        def h(s):
            m = i[f"mask({s})"]
            return torch.where(m, i[f"logprobs(policy, {s})"], 0.0).sum(1) - torch.where(
                m, i[f"logprobs(reference, {s})"], 0.0).sum(1)
        this = stub(alpha=0.0, loss_type="sigmoid", beta=beta, label_smoothing=label_smoothing)
        losses, _, _ = CPOTrainer.cpo_loss(this, h("chosen"), h("rejected"))
        return losses.mean()
    params = {"beta": beta, "label_smoothing": label_smoothing}
    _three_way("cdpo", params, params, x, trl_fn)


# --- CPO (simpo) and ORPO trainers, driven from logits ---------------------------------


@st.composite
def _logit_batches(draw, prompt_len=1):
    """Random logits + token ids for a preference batch with ragged chosen/rejected lengths."""
    rows = draw(st.integers(1, 4))
    lens = {s: draw(st.lists(st.integers(1, 5), min_size=rows, max_size=rows)) for s in ("chosen", "rejected")}
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.5, 3.0]))
    vocab = 7
    batch = {}
    for s in ("chosen", "rejected"):
        width = prompt_len + max(lens[s])
        ids = torch.randint(1, vocab, (rows, width), generator=gen)
        attention = (torch.arange(width) < prompt_len + torch.tensor(lens[s]).unsqueeze(1)).long()
        ids = ids * attention  # pad id 0
        labels = ids.masked_fill(attention == 0, -100)
        labels[:, :prompt_len] = -100
        batch.update({f"{s}_input_ids": ids, f"{s}_attention_mask": attention, f"{s}_labels": labels})
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    logits = (scale * torch.randn(2 * rows, width, vocab, generator=gen, dtype=F64)).requires_grad_(True)
    return batch, logits


def _inputs_from_logits(batch, logits, include_prompt=False):
    """Spec/reference leaves from the logits: log_softmax + gather, independent of TRL's helpers."""
    rows = batch["chosen_input_ids"].shape[0]
    logprobs_all = torch.log_softmax(logits, dim=-1)
    inputs = {}
    for k, s in enumerate(("chosen", "rejected")):
        ids = batch[f"{s}_input_ids"]
        targets = batch[f"{s}_attention_mask" if include_prompt else f"{s}_labels"]
        t = ids.shape[1] - 1
        per_token = logprobs_all[k * rows : (k + 1) * rows, :t].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        mask = (targets[:, 1:] == 1) if include_prompt else (targets[:, 1:] != -100)
        inputs[f"logprobs(policy, {s})"] = torch.where(mask, per_token, torch.full_like(per_token, NAN))
        inputs[f"mask({s})"] = mask
    return inputs


def _three_way_on_logits(method, params, data, trl_loss, rtol=1e-9, atol=1e-11):
    batch, logits = data
    ours = {"reference": ref.METHODS[method](_inputs_from_logits(batch, logits), **params),
            "spec": _compiled(method, tuple(sorted(params.items()))).loss(_inputs_from_logits(batch, logits))[0]}
    (g_trl,) = torch.autograd.grad(trl_loss, [logits], retain_graph=True)
    for who, loss in ours.items():
        (g,) = torch.autograd.grad(loss, [logits])
        tol = dict(rtol=rtol, atol=atol) if who == "reference" else dict(rtol=max(rtol, 1e-6), atol=max(atol, 1e-9))
        assert_close(loss.detach(), trl_loss.detach(), what=f"{method} {who} vs TRL loss", **tol)
        assert_close(g, g_trl, what=f"{method} {who} vs TRL grad", **tol)


@needs_trl
@checks(TRL, "simpo")
@FEW
@given(_logit_batches(), st.sampled_from([0.1, 2.5]), st.sampled_from([0.5, 1.375]), st.sampled_from([0.0, 0.2]))
def test_trl_simpo_via_cpo(data, beta, gamma, label_smoothing):
    attrs = dict(alpha=0.0, loss_type="simpo", cpo_alpha=0.0, beta=beta, simpo_gamma=gamma,
                 label_smoothing=label_smoothing)
    trl_loss = D.paired_from_logits(CPOTrainer, attrs, *data)
    _three_way_on_logits("simpo", {"beta": beta, "gamma": gamma, "label_smoothing": label_smoothing}, data, trl_loss)


@needs_trl
@checks(TRL, "orpo")
@FEW
@given(_logit_batches(), st.sampled_from([0.1, 1.0]))
def test_trl_orpo(data, beta):
    """Prompt of one token: TRL's ORPO NLL (which also scores prompt tokens) sees completion tokens
    only. TRL evaluates the odds-ratio term in float32, hence rtol 1e-5."""
    trl_loss = D.paired_from_logits(ORPOTrainer, dict(beta=beta), *data)
    _three_way_on_logits("orpo", {"beta": beta}, data, trl_loss, rtol=1e-5, atol=1e-6)


@needs_trl
@FEW
@given(_logit_batches(prompt_len=3))
def test_trl_orpo_nll_also_scores_prompt_tokens(data):
    """Documents a TRL 1.16 difference: ORPO's NLL averages over prompt *and* chosen tokens.

    TRL value = reference ORPO - NLL(chosen completion) + NLL(every predicted chosen token).
    The reference keeps the contract (completion tokens only)."""
    batch, logits = data
    trl_loss = D.paired_from_logits(ORPOTrainer, dict(beta=0.1), batch, logits)
    completion, whole = _inputs_from_logits(batch, logits), _inputs_from_logits(batch, logits, include_prompt=True)

    def nll(x):
        return ref.sft({"logprobs(policy, completion)": x["logprobs(policy, chosen)"],
                        "mask(completion)": x["mask(chosen)"]})

    assert_close(trl_loss.detach(), (ref.orpo(completion) - nll(completion) + nll(whole)).detach(), rtol=1e-5,
                 atol=1e-6)


# --- SFT and KTO trainers ----------------------------------------------------------------


@needs_trl
@checks(TRL, "sft")
@FEW
@given(strat.sft_inputs())
def test_trl_sft(x):
    _three_way("sft", {}, {}, x, lambda i: D.sft_loss(i["logprobs(policy, completion)"], i["mask(completion)"]))


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,reference", [("kto", ref.kto), ("apo_zero_unpaired", OFF.apo_zero_unpaired)])
@FEW
@given(x=strat.unpaired_inputs(), beta=st.sampled_from([0.1, 1.0]), weights=st.sampled_from([(1.0, 1.0), (1.33, 0.8)]))
def test_trl_kto_trainer(method, reference, x, beta, weights):
    """KTOTrainer with loss_type="kto" (reference point from the mismatched pairs) and
    "apo_zero_unpaired" (none)."""
    params = {"beta": beta, "desirable_weight": weights[0], "undesirable_weight": weights[1]}
    c = _compiled(method, tuple(sorted(params.items())))
    names = trainable(c)
    theirs = loss_and_grads(lambda i: D.kto_loss(i, loss_type=method, **params), x, names)
    assert_same(loss_and_grads(lambda i: reference(i, **params), x, names), theirs, names, 1e-9, 1e-11,
                f"{method} reference vs TRL")
    assert_same(loss_and_grads(lambda i: c.loss(i)[0], x, names), theirs, names, 1e-6, 1e-9, f"{method} spec vs TRL")


# --- GRPO trainer: grpo, dr_grpo, dapo --------------------------------------------------


def _statistics_advantages(rewards, n, scale):
    out = []
    for g in range(len(rewards) // n):
        group = [float(r) for r in rewards[g * n : (g + 1) * n]]
        mean = statistics.mean(group)
        std = statistics.stdev(group) if n > 1 else 0.0
        out += [(r - mean) / (std + 1e-4) if scale else r - mean for r in group]
    return torch.tensor(out, dtype=F64)


RL_CASES = st.tuples(
    st.integers(2, 4),  # n
    st.sampled_from([0.0, 0.04, 0.5]),  # beta
    st.sampled_from([(0.2, 0.2), (0.2, 0.28), (0.1, 0.5)]),  # epsilon, epsilon_high
)


@needs_trl
@checks(TRL, arg="loss_type")
@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@FEW
@given(data=st.data(), case=RL_CASES)
def test_trl_grpo_family(loss_type, data, case):
    n, beta, (epsilon, epsilon_high) = case
    x = data.draw(strat.rollout_inputs(n))
    adv = _statistics_advantages(x["r(y)"], n, scale=loss_type != "dr_grpo")
    params = dict(beta=beta, epsilon=epsilon, epsilon_high=epsilon_high)
    extra = {"max_completion_length": 6} if loss_type == "dr_grpo" else {}
    _three_way(loss_type, {"num_generations": n, **params, **extra}, {"n": n, **params, **extra}, x,
               lambda i: D.grpo_loss(i, adv, loss_type=loss_type, max_completion_length=6, **params))


@needs_trl
@FEW
@given(data=strat.rollout_inputs(2), beta=st.sampled_from([0.04, 0.5]))
def test_trl_kl_without_bias_correction(data, beta):
    """The reference's ``use_bias_correction_kl=False`` (not a spec option) is TRL's."""
    x = strat.requires_grad_(data)
    adv = _statistics_advantages(x["r(y)"], 2, scale=True)
    trl_loss = D.grpo_loss(x, adv, loss_type="grpo", beta=beta, use_bias_correction_kl=False)
    assert_close(trl_loss.detach(), ref.grpo(x, n=2, beta=beta, use_bias_correction_kl=False).detach(), rtol=1e-9)


@needs_trl
@FEW
@given(st.lists(st.floats(-3, 3, width=32), min_size=2, max_size=8), st.data())
def test_trl_nanstd_is_bessel_corrected(rewards, data):
    """TRL's group std (``trl.trainer.utils.nanstd``) is the n-1 std the references use.

    (TRL forms the Bessel factor ``count / (count - 1)`` from integer tensors, i.e. in float32,
    hence the 1e-7 relative tolerance even for float64 rewards.)"""
    values = torch.tensor(rewards, dtype=F64)
    assert_close(trl_utils.nanstd(values), torch.tensor(statistics.stdev(rewards), dtype=F64), rtol=1e-7, atol=1e-9)
    n = data.draw(st.sampled_from([d for d in range(2, len(rewards) + 1) if len(rewards) % d == 0]))
    assert_close(ref._group_advantages(values, n, scale=True), _statistics_advantages(values, n, scale=True),
                 atol=1e-7)


@needs_trl
def test_trl_selective_log_softmax_matches_gather():
    """The CPO/ORPO harness relies on TRL's selective_log_softmax = log_softmax + gather."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen, dtype=F64)
    index = torch.randint(0, 11, (3, 5), generator=gen)
    expected = torch.log_softmax(logits, -1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    assert_close(trl_utils.selective_log_softmax(logits, index), expected, rtol=1e-12)


@needs_trl
def test_trl_defaults_match_DEFAULTS():
    """The contract defaults that are TRL 1.16 defaults (see the report for the ones that are not)."""
    from trl import DPOConfig, GRPOConfig, KTOConfig
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.orpo import ORPOConfig

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = dict(output_dir=tmp, use_cpu=True, bf16=False, report_to="none")
        dpo, kto, cpo = DPOConfig(**kw), KTOConfig(**kw), CPOConfig(**kw)
        orpo, grpo = ORPOConfig(**kw), GRPOConfig(**kw)
    assert (dpo.beta, dpo.label_smoothing, dpo.loss_type) == (0.1, 0.0, ["sigmoid"]) == (
        ref.DEFAULTS["dpo"]["beta"], ref.DEFAULTS["dpo"]["label_smoothing"], ["sigmoid"])
    assert (kto.beta, kto.desirable_weight, kto.undesirable_weight) == tuple(ref.DEFAULTS["kto"].values())
    assert (cpo.beta, cpo.simpo_gamma, cpo.label_smoothing) == tuple(ref.DEFAULTS["simpo"].values())
    assert orpo.beta == ref.DEFAULTS["orpo"]["beta"]
    assert (grpo.beta, grpo.epsilon, grpo.num_generations) == (0.0, 0.2, 8)
    assert grpo.epsilon_high is None  # trainer uses epsilon_high = epsilon
    assert grpo.use_bias_correction_kl is True and grpo.scale_rewards == "group" and grpo.loss_type == "dapo"
    assert grpo.max_completion_length == 512 == ref.DEFAULTS["dr_grpo"]["max_completion_length"]
