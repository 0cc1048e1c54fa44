"""Self-checks of the plain-torch reference losses in ``references.py``.

Three independent kinds of evidence that the oracle is right:

(a) hand-derived numbers on tiny fixed inputs, computed here with the ``math`` module from the
    lists of valid tokens (never by calling a reference);
(b) TRL 1.16 itself, driven without a model (harness described below);
(c) properties every loss must have: masked-out garbage changes neither value nor gradient,
    and a few identities between methods.

How TRL is driven (b)
---------------------
TRL's loss code lives in trainer methods.  We call the *unbound* methods with a small stand-in
``self`` (a ``SimpleNamespace`` holding exactly the attributes the method reads: ``beta``,
``loss_type``, ... plus a pass-through single-process ``_Accelerator``) and stand-in models:

* ``_FakeFusedLM`` replaces a model patched by ``trl.trainer.utils.add_fused_lm_head``
  (what DPO/KTO/SFT call with ``fused_lm_head=True``).  It looks the batch up by its
  ``input_ids`` and returns the given per-token log-probs in a ``FusedCausalLMOutput``, zeroed
  where the label is -100, as the real fused head does.  Sequences are laid out as one prompt
  token followed by the completion, so TRL's shifted completion mask is our ``mask(S)``.
* GRPO's ``_get_per_token_logps_and_entropies`` is replaced by a lambda returning the policy
  log-probs (0 on padding, where a real model returns finite values).  Advantages are an
  *input* of ``GRPOTrainer._compute_loss`` (TRL computes them inside the 600-line
  ``_generate_and_score_completions``, which cannot run without generation), so the harness
  computes them with ``statistics.mean/stdev``; ``test_trl_nanstd_is_bessel_corrected`` checks
  TRL's std convention separately.
* CPO/ORPO compute log-probs from logits, so ``_FakeLogitsLM`` returns a fixed random logits
  tensor (requires grad); the reference inputs are built from the same logits with
  ``log_softmax`` + ``gather``, and gradients are compared w.r.t. the logits.

Gradients are compared w.r.t. the policy leaves in every TRL test.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import types
import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:  # tests/ may or may not be a package
    from . import references as ref
    from . import strategies as strat
except ImportError:
    import references as ref
    import strategies as strat

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

NAN, INF = math.nan, math.inf
F64 = torch.float64
FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _close(actual, expected, rtol=1e-10, atol=1e-12):
    actual, expected = torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _sig(x: float) -> float:
    return math.exp(_logsig(x))


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def _m(lengths, width) -> torch.Tensor:
    return torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


# ======================================================================================
# (a) hand-computed values on fixed inputs
# ======================================================================================

# Valid tokens (garbage elsewhere):
#   chosen   policy [[-1, -2], [-0.5]]      reference [[-1.5, -1], [-1]]
#   rejected policy [[-3], [-2, -1]]        reference [[-2], [-2.5, -0.5]]
# so h(chosen) = [-3 + 2.5, -0.5 + 1] = [-0.5, 0.5], h(rejected) = [-3 + 2, -3 + 3] = [-1, 0].
PREF = {
    "logprobs(policy, chosen)": _t([[-1.0, -2.0, NAN], [-0.5, INF, 1e30]]),
    "logprobs(reference, chosen)": _t([[-1.5, -1.0, -INF], [-1.0, NAN, NAN]]),
    "mask(chosen)": _m([2, 1], 3),
    "logprobs(policy, rejected)": _t([[-3.0, NAN], [-2.0, -1.0]]),
    "logprobs(reference, rejected)": _t([[-2.0, 5.0], [-2.5, -0.5]]),
    "mask(rejected)": _m([1, 2], 2),
}


def _chosen_as_completion(inputs):
    """The chosen set of a preference batch, renamed as an SFT ``completion`` set."""
    return {
        "logprobs(policy, completion)": inputs["logprobs(policy, chosen)"],
        "mask(completion)": inputs["mask(chosen)"],
    }


def test_hand_sft():
    inputs = _chosen_as_completion(PREF)
    _close(ref.sft(inputs), (1.0 + 2.0 + 0.5) / 3)  # token mean over 3 tokens, not mean of row means


def test_hand_dpo_and_cdpo():
    # z = 0.1 * (h_c - h_r) = 0.1 * [0.5, 0.5] = [0.05, 0.05]
    _close(ref.dpo(PREF), -_logsig(0.05))
    _close(ref.dpo(PREF, beta=1.0), -_logsig(0.5))
    _close(ref.cdpo(PREF), -0.9 * _logsig(0.05) - 0.1 * _logsig(-0.05))
    _close(ref.dpo(PREF, label_smoothing=0.1), ref.cdpo(PREF))


def test_hand_ipo():
    # h/|y|: chosen [-0.25, 0.5], rejected [-1, 0] -> diff [0.75, 0.5]; 1/(2*0.1) = 5
    _close(ref.ipo(PREF), ((0.75 - 5) ** 2 + (0.5 - 5) ** 2) / 2)  # = 19.15625
    _close(ref.ipo(PREF), 19.15625)


def test_hand_simpo():
    # mean logp: chosen [-1.5, -0.5], rejected [-3, -1.5] -> d = [1.5, 1.0]; u = 0.1 d - 0.5
    _close(ref.simpo(PREF), -(_logsig(-0.35) + _logsig(-0.4)) / 2)
    _close(
        ref.simpo(PREF, beta=2.0, gamma=1.0, label_smoothing=0.2),
        sum(-0.8 * _logsig(u) - 0.2 * _logsig(-u) for u in (2.0, 1.0)) / 2,
    )


def test_hand_orpo():
    a, b = [-1.5, -0.5], [-3.0, -1.5]
    log_odds = [(ai - bi) - (math.log(1 - math.exp(ai)) - math.log(1 - math.exp(bi))) for ai, bi in zip(a, b)]
    nll = (1.0 + 2.0 + 0.5) / 3
    _close(ref.orpo(PREF), nll - sum(0.1 * _logsig(x) for x in log_odds) / 2)
    _close(ref.orpo(PREF, beta=0.0), nll)


KTO_BASE = {
    # h = [(-2) - (-3), (-2) - (-1), (-1.5) - (-3)] = [1, -1, 1.5]
    "logprobs(policy, completion)": _t([[-1.0, -1.0, NAN], [-2.0, INF, NAN], [-0.5, -0.5, -0.5]]),
    "logprobs(reference, completion)": _t([[-2.0, -1.0, 3.0], [-1.0, -INF, NAN], [-1.0, -1.0, -1.0]]),
    "mask(completion)": _m([2, 1, 3], 3),
    "label": torch.tensor([True, False, True]),
    "logprobs(policy, mismatched(completion))": _t([[-1.0, NAN], [-2.0, -2.0], [-3.0, 1e30]]),
    "mask(mismatched(completion))": _m([1, 2, 1], 2),
}


def _kto_expected(z0, beta=0.1, wd=1.0, wu=1.0):
    row0 = wd * (1 - _sig(beta * (1 - z0)))  # desirable, h = 1
    row1 = wu * (1 - _sig(beta * (z0 - (-1))))  # undesirable, h = -1
    row2 = wd * (1 - _sig(beta * (1.5 - z0)))  # desirable, h = 1.5
    return (row0 + row1 + row2) / 3


def test_hand_kto_negative_kl_clamps_to_zero():
    # mismatched log-ratios [1, -2, 0] -> mean -1/3 -> z0 = 0
    inputs = dict(KTO_BASE)
    inputs["logprobs(reference, mismatched(completion))"] = _t([[-2.0, NAN], [-1.0, -1.0], [-3.0, 0.0]])
    _close(ref.kto(inputs), _kto_expected(0.0))
    _close(ref.kto(inputs, beta=0.5, desirable_weight=1.3, undesirable_weight=0.7), _kto_expected(0.0, 0.5, 1.3, 0.7))


KTO_POSITIVE_KL = dict(KTO_BASE)
KTO_POSITIVE_KL["logprobs(reference, mismatched(completion))"] = _t([[-3.0, NAN], [-3.0, -1.0], [-3.0, 9.0]])


def test_hand_kto_positive_kl():
    # mismatched log-ratios [2, 0, 0] -> z0 = 2/3
    _close(ref.kto(KTO_POSITIVE_KL), _kto_expected(2 / 3))


# Rollouts: 2 prompts x n=2 samples.  Valid tokens:
#   policy [[-1, -2], [-0.5, -0.5, -0.5], [-1], [-2, -1]]
#   old    [[-1.1, -1.5], [-0.5, -0.6, -0.4], [-1], [-2.5, -1]]
#   ref    [[-1.2, -1.8], [-0.7, -0.5, -0.1], [-2], [-2, -0.5]]
ROLL_TOKENS = {
    "policy": [[-1.0, -2.0], [-0.5, -0.5, -0.5], [-1.0], [-2.0, -1.0]],
    "old": [[-1.1, -1.5], [-0.5, -0.6, -0.4], [-1.0], [-2.5, -1.0]],
    "reference": [[-1.2, -1.8], [-0.7, -0.5, -0.1], [-2.0], [-2.0, -0.5]],
}
ROLL_REWARDS = [1.0, 0.0, 0.5, 0.5]


def _pad(rows, width=3, fill=(NAN, INF, -1e30)):
    return _t([row + [fill[(i + j) % 3] for j in range(width - len(row))] for i, row in enumerate(rows)])


ROLL = {
    "logprobs(policy, y)": _pad(ROLL_TOKENS["policy"]),
    "logprobs(old, y)": _pad(ROLL_TOKENS["old"]),
    "logprobs(reference, y)": _pad(ROLL_TOKENS["reference"]),
    "mask(y)": _m([2, 3, 1, 2], 3),
    "r(y)": _t(ROLL_REWARDS),
}


def _hand_per_token(adv, eps_low, eps_high, beta=0.0, bias_correction=True):
    """Per-row lists of per-token losses from the valid tokens, in plain Python."""
    out = []
    for i, (pol_row, old_row, ref_row) in enumerate(zip(*ROLL_TOKENS.values())):
        row = []
        for p, o, r in zip(pol_row, old_row, ref_row):
            ratio = math.exp(p - o)
            clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
            loss = -min(ratio * adv[i], clipped * adv[i])
            k3 = math.exp(r - p) - (r - p) - 1
            loss += beta * k3 * (ratio if bias_correction else 1.0)
            row.append(loss)
        out.append(row)
    return out


def _hand_advantages(scale):
    adv = []
    for g in range(2):
        group = ROLL_REWARDS[2 * g : 2 * g + 2]
        mean, std = statistics.mean(group), statistics.stdev(group)  # stdev: n - 1
        adv += [(r - mean) / (std + 1e-4) if scale else r - mean for r in group]
    return adv


def test_hand_group_advantages():
    # group 0: rewards [1, 0], mean 0.5, Bessel std sqrt(0.5) -> +-0.5/(sqrt(0.5) + 1e-4); group 1 all equal -> 0
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    _close(ref._group_advantages(ROLL["r(y)"], 2, scale=True), [a, -a, 0.0, 0.0])
    _close(ref._group_advantages(ROLL["r(y)"], 2, scale=False), [0.5, -0.5, 0.0, 0.0])
    _close(_hand_advantages(True), [a, -a, 0.0, 0.0])


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_hand_grpo(beta):
    rows = _hand_per_token(_hand_advantages(True), 0.2, 0.2, beta)
    expected = sum(sum(row) / len(row) for row in rows) / len(rows)
    _close(ref.grpo(ROLL, n=2, beta=beta), expected)


def test_hand_grpo_kl_without_bias_correction():
    rows = _hand_per_token(_hand_advantages(True), 0.2, 0.2, 0.04, bias_correction=False)
    expected = sum(sum(row) / len(row) for row in rows) / len(rows)
    _close(ref.grpo(ROLL, n=2, beta=0.04, use_bias_correction_kl=False), expected)


def test_hand_dr_grpo():
    rows = _hand_per_token(_hand_advantages(False), 0.2, 0.2)
    _close(ref.dr_grpo(ROLL, n=2, max_completion_length=5), sum(map(sum, rows)) / (4 * 5))
    _close(ref.dr_grpo(ROLL, n=2), sum(map(sum, rows)) / (4 * 512))


def test_hand_dapo():
    rows = _hand_per_token(_hand_advantages(True), 0.2, 0.28)
    _close(ref.dapo(ROLL, n=2), sum(map(sum, rows)) / 8)  # 8 valid tokens


def test_hand_clipping_is_active():
    # row 0, token 1: ratio exp(-0.5) = 0.61 < 0.8 with A > 0 -> the unclipped term is the min;
    # row 3, token 0: ratio exp(0.5) = 1.65 > 1.2, A = 0 -> no contribution.  Sanity of the fixture.
    assert math.exp(-2.0 + 1.5) < 0.8 and math.exp(-2.0 + 2.5) > 1.2


# ======================================================================================
# (b) TRL 1.16, driven through unbound trainer methods with stand-in objects
# ======================================================================================

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import trl
        import trl.trainer.utils as trl_utils
        from trl.experimental.cpo import CPOTrainer
        from trl.experimental.orpo import ORPOTrainer
        from trl.trainer.dpo_trainer import DPOTrainer
        from trl.trainer.grpo_trainer import GRPOTrainer
        from trl.trainer.kto_trainer import KTOTrainer
        from trl.trainer.sft_trainer import SFTTrainer
    TRL_VERSION = trl.__version__
except ImportError:
    TRL_VERSION = None

# The stand-ins below follow the attribute layout of TRL 1.16 exactly; other versions differ.
needs_trl = pytest.mark.skipif(TRL_VERSION != "1.16.0", reason=f"needs trl==1.16.0 (found {TRL_VERSION})")


class _Accelerator:
    """Single-process pass-through for the ``self.accelerator`` calls made by the loss code."""

    device = torch.device("cpu")
    num_processes = 1
    process_index = 0
    sync_gradients = True
    parallelism_config = None

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x

    def autocast(self):
        return contextlib.nullcontext()


def _stub(cls=None, methods=(), **attrs):
    """A stand-in ``self``: ``attrs`` as attributes, ``methods`` of ``cls`` bound to it."""
    attrs.setdefault("accelerator", _Accelerator())
    attrs.setdefault("_metrics", defaultdict(lambda: defaultdict(list)))
    attrs.setdefault("_total_train_tokens", 0)
    attrs.setdefault("_tp_size", 1)
    attrs.setdefault("aux_loss_enabled", False)
    stub = SimpleNamespace(**attrs)
    for name in methods:
        setattr(stub, name, types.MethodType(getattr(cls, name), stub))
    return stub


class _FakeFusedLM(torch.nn.Module):
    """Stands in for a model patched with ``add_fused_lm_head``: returns known per-token log-probs.

    ``table`` maps each batch (identified by its ``input_ids``) to ``[rows, L - 1]`` log-probs,
    where column t scores token t + 1.  Positions whose label is -100 come back as exactly 0,
    like the real fused head.
    """

    is_gradient_checkpointing = False

    def __init__(self, table):
        # An nn.Module because accelerate's ``is_peft_model`` (called by TRL when peft is
        # installed) walks ``_modules``.
        super().__init__()
        self.table = table

    def __call__(self, input_ids=None, labels=None, fused_lm_head=False, **kwargs):
        assert fused_lm_head, "TRL is expected to ask for the fused LM head"
        matches = [lp for ids, lp in self.table if ids.shape == input_ids.shape and torch.equal(ids, input_ids)]
        assert len(matches) == 1, "unknown batch"
        label_mask = labels[:, 1:] != -100
        log_probs = torch.where(label_mask, matches[0], torch.zeros_like(matches[0]))
        zeros = torch.zeros_like(log_probs).detach()
        return trl_utils.FusedCausalLMOutput(
            loss=-log_probs.sum() / label_mask.sum().clamp(min=1),
            log_probs=log_probs,
            entropy=zeros,
            log_sum_sq_probs=zeros,
            mean_logits=zeros,
            is_top1=torch.zeros_like(label_mask),
            label_mask=label_mask,
        )


def _layout(mask: torch.Tensor, code: int, width: int | None = None):
    """Token layout of one sequence set: one prompt token, then the completion, then padding.

    Returns ``input_ids``, ``attention_mask`` and ``completion_mask`` of shape [rows, width + 1]
    (``width`` defaults to the mask's T).  ``code`` makes the ids of different sets differ.
    """
    rows, t = mask.shape
    width = t if width is None else width
    padded = torch.zeros(rows, width, dtype=torch.bool)
    padded[:, :t] = mask
    ones = torch.ones(rows, 1, dtype=torch.long)
    completion = torch.cat([torch.zeros_like(ones), padded.long()], dim=1)
    attention = torch.cat([ones, padded.long()], dim=1)
    ids = (torch.arange(width + 1) + 1 + 100 * code).repeat(rows, 1) * attention
    return ids, attention, completion


def _pad_cols(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.cat([x, torch.zeros(x.shape[0], width - x.shape[1], dtype=x.dtype)], dim=1)


def _grads(loss, leaves):
    """d loss / d leaf for each leaf; a leaf the loss does not use gets an explicit zero gradient."""
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]


def _assert_same_value_and_grad(trl_loss, ref_loss, leaves, rtol=1e-9, atol=1e-11):
    _close(trl_loss, ref_loss, rtol=rtol, atol=atol)
    for g_trl, g_ref in zip(_grads(trl_loss, leaves), _grads(ref_loss, leaves)):
        _close(g_trl, g_ref, rtol=rtol, atol=atol)


def _policy_leaves(inputs):
    return [v for k, v in inputs.items() if k.startswith("logprobs(policy,")]


# --- DPO trainer: sigmoid, ipo ---------------------------------------------------------


def _trl_dpo(inputs, loss_type, beta, label_smoothing=0.0):
    width = max(inputs["mask(chosen)"].shape[1], inputs["mask(rejected)"].shape[1])
    ids_c, att_c, comp_c = _layout(inputs["mask(chosen)"], 1, width)
    ids_r, att_r, comp_r = _layout(inputs["mask(rejected)"], 2, width)
    batch = {
        "input_ids": torch.cat([ids_c, ids_r]),
        "attention_mask": torch.cat([att_c, att_r]),
        "completion_mask": torch.cat([comp_c, comp_r]),
    }

    def both(model):
        return torch.cat([_pad_cols(inputs[f"logprobs({model}, {s})"], width) for s in ("chosen", "rejected")])

    policy = _FakeFusedLM([(batch["input_ids"], both("policy"))])
    reference = _FakeFusedLM([(batch["input_ids"], both("reference"))])
    stub = _stub(
        model=policy,
        ref_model=reference,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None),
        precompute_ref_logps=False,
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
    )
    return DPOTrainer._compute_loss(stub, policy, batch, return_outputs=False)


@needs_trl
@FEW
@given(strat.preference_inputs(), st.sampled_from([0.1, 0.5, 2.0]))
def test_trl_dpo_sigmoid(inputs, beta):
    strat.requires_grad_(inputs)
    _assert_same_value_and_grad(_trl_dpo(inputs, "sigmoid", beta), ref.dpo(inputs, beta=beta), _policy_leaves(inputs))


@needs_trl
@FEW
@given(strat.preference_inputs(), st.sampled_from([0.1, 0.5, 2.0]))
def test_trl_ipo(inputs, beta):
    strat.requires_grad_(inputs)
    _assert_same_value_and_grad(_trl_dpo(inputs, "ipo", beta), ref.ipo(inputs, beta=beta), _policy_leaves(inputs))


@needs_trl
def test_trl_dpo_sigmoid_ignores_label_smoothing():
    """Documents a TRL 1.16 fact: ``loss_type="sigmoid"`` no longer applies ``label_smoothing``.

    So TRL's DPO trainer cannot be the oracle for cDPO; CPO's sigmoid loss (next test) still
    has the smoothed form.
    """
    inputs = strat.requires_grad_({k: v.clone() for k, v in PREF.items()})
    trl_loss = _trl_dpo(inputs, "sigmoid", 0.1, label_smoothing=0.1)
    _close(trl_loss, ref.dpo(inputs))
    assert not torch.isclose(trl_loss, ref.cdpo(inputs))


# --- CPO trainer: cpo_loss ("sigmoid" with label smoothing, fed DPO log-ratios) --------


@needs_trl
@FEW
@given(strat.preference_inputs(), st.sampled_from([0.0, 0.1, 0.3]), st.sampled_from([0.1, 1.0]))
def test_trl_cdpo_via_cpo_sigmoid_loss(inputs, label_smoothing, beta):
    """CPO's sigmoid loss is DPO with l_ref = 0, so feeding it h(y) gives cDPO."""
    strat.requires_grad_(inputs)

    def h(s):
        m = inputs[f"mask({s})"]
        pol, rf = inputs[f"logprobs(policy, {s})"], inputs[f"logprobs(reference, {s})"]
        return torch.where(m, pol, 0.0).sum(1) - torch.where(m, rf, 0.0).sum(1)

    stub = _stub(alpha=0.0, loss_type="sigmoid", beta=beta, label_smoothing=label_smoothing)
    losses, _, _ = CPOTrainer.cpo_loss(stub, h("chosen"), h("rejected"))
    expected = ref.cdpo(inputs, beta=beta, label_smoothing=label_smoothing)
    _assert_same_value_and_grad(losses.mean(), expected, _policy_leaves(inputs))


# --- CPO (simpo) and ORPO trainers, driven from logits ---------------------------------


class _FakeLogitsLM:
    """Stands in for a causal LM: returns fixed logits for the concatenated [chosen; rejected] batch."""

    def __init__(self, logits, input_ids):
        self.logits, self.input_ids = logits, input_ids

    def __call__(self, input_ids, attention_mask=None, use_cache=None, **kwargs):
        assert torch.equal(input_ids, self.input_ids)
        return SimpleNamespace(logits=self.logits)


@st.composite
def _logit_batches(draw, prompt_len=1):
    """Random logits + token ids for a preference batch with ragged chosen/rejected lengths."""
    rows = draw(st.integers(1, 4))
    lens = {s: draw(st.lists(st.integers(1, 5), min_size=rows, max_size=rows)) for s in ("chosen", "rejected")}
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.5, 3.0]))
    gen = torch.Generator().manual_seed(seed)
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
    """Reference leaves from the logits: log_softmax + gather, independent of TRL's helpers."""
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


def _trl_from_logits(cls, stub_attrs, batch, logits, padding_attr):
    ids = cls.concatenated_inputs(batch, padding_value=0)["concatenated_input_ids"]
    model = _FakeLogitsLM(logits, ids)
    stub = _stub(
        cls,
        methods=("concatenated_forward", "odds_ratio_loss" if cls is ORPOTrainer else "cpo_loss"),
        is_encoder_decoder=False,
        concatenated_inputs=cls.concatenated_inputs,
        get_batch_logps=cls.get_batch_logps,
        **{padding_attr: 0},
        **stub_attrs,
    )
    loss, _ = cls.get_batch_loss_metrics(stub, model, batch)
    return loss


@needs_trl
@FEW
@given(_logit_batches(), st.sampled_from([0.1, 2.5]), st.sampled_from([0.5, 1.375]), st.sampled_from([0.0, 0.2]))
def test_trl_simpo_via_cpo(data, beta, gamma, label_smoothing):
    batch, logits = data
    attrs = dict(alpha=0.0, loss_type="simpo", cpo_alpha=0.0, beta=beta, simpo_gamma=gamma)
    attrs["label_smoothing"] = label_smoothing
    trl_loss = _trl_from_logits(CPOTrainer, attrs, batch, logits, "pad_token_id")
    expected = ref.simpo(_inputs_from_logits(batch, logits), beta=beta, gamma=gamma, label_smoothing=label_smoothing)
    _assert_same_value_and_grad(trl_loss, expected, [logits])


@needs_trl
@FEW
@given(_logit_batches(), st.sampled_from([0.1, 1.0]))
def test_trl_orpo(data, beta):
    """Prompt of one token: TRL's ORPO NLL (which also scores prompt tokens) sees completion tokens only."""
    batch, logits = data
    trl_loss = _trl_from_logits(ORPOTrainer, dict(beta=beta), batch, logits, "padding_value")
    expected = ref.orpo(_inputs_from_logits(batch, logits), beta=beta)
    # TRL evaluates the odds-ratio term in float32
    _assert_same_value_and_grad(trl_loss, expected, [logits], rtol=1e-5, atol=1e-6)


@needs_trl
@FEW
@given(_logit_batches(prompt_len=3))
def test_trl_orpo_nll_also_scores_prompt_tokens(data):
    """Documents a TRL 1.16 difference: ORPO's NLL averages over prompt *and* chosen tokens.

    TRL value = reference ORPO - NLL(chosen completion) + NLL(every predicted chosen token).
    The reference keeps the contract (completion tokens only).
    """
    batch, logits = data
    trl_loss = _trl_from_logits(ORPOTrainer, dict(beta=0.1), batch, logits, "padding_value")
    completion = _inputs_from_logits(batch, logits)
    whole = _inputs_from_logits(batch, logits, include_prompt=True)

    def nll(inputs):
        return ref.sft(_chosen_as_completion(inputs))

    expected = ref.orpo(completion) - nll(completion) + nll(whole)
    _close(trl_loss, expected, rtol=1e-5, atol=1e-6)


# --- SFT trainer -----------------------------------------------------------------------


@needs_trl
@FEW
@given(strat.sft_inputs())
def test_trl_sft(inputs):
    strat.requires_grad_(inputs)
    ids, attention, completion = _layout(inputs["mask(completion)"], 1)
    batch = {"input_ids": ids, "attention_mask": attention, "labels": ids.masked_fill(completion == 0, -100)}
    model = _FakeFusedLM([(ids, inputs["logprobs(policy, completion)"])])
    stub = _stub(
        model=model,
        compute_loss_func=None,
        label_smoother=None,
        args=SimpleNamespace(loss_type="nll", average_tokens_across_devices=True, max_length=None),
    )
    trl_loss = SFTTrainer.compute_loss(stub, model, batch, num_items_in_batch=None)
    _assert_same_value_and_grad(trl_loss, ref.sft(inputs), _policy_leaves(inputs))


# --- KTO trainer -----------------------------------------------------------------------


def _trl_kto(inputs, beta, desirable_weight, undesirable_weight):
    ids, attention, completion = _layout(inputs["mask(completion)"], 1)
    kl_ids, kl_attention, kl_completion = _layout(inputs["mask(mismatched(completion))"], 2)
    batch = {
        "input_ids": ids,
        "attention_mask": attention,
        "completion_mask": completion,
        "KL_input_ids": kl_ids,
        "KL_attention_mask": kl_attention,
        "KL_completion_mask": kl_completion,
        "label": inputs["label"],
    }

    def model(name):
        return _FakeFusedLM(
            [
                (ids, inputs[f"logprobs({name}, completion)"]),
                (kl_ids, inputs[f"logprobs({name}, mismatched(completion))"]),
            ]
        )

    policy = model("policy")
    stub = _stub(
        KTOTrainer,
        methods=("_compute_kl_logps",),
        model=policy,
        ref_model=model("reference"),
        args=SimpleNamespace(gradient_checkpointing_kwargs=None),
        calculate_KL=True,
        precompute_ref_logps=False,
        loss_type="kto",
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    return KTOTrainer._compute_loss(stub, policy, batch, return_outputs=False)


@needs_trl
@FEW
@given(strat.unpaired_inputs(), st.sampled_from([0.1, 1.0]), st.sampled_from([(1.0, 1.0), (1.33, 0.8)]))
def test_trl_kto(inputs, beta, weights):
    strat.requires_grad_(inputs)
    desirable_weight, undesirable_weight = weights
    trl_loss = _trl_kto(inputs, beta, desirable_weight, undesirable_weight)
    expected = ref.kto(inputs, beta=beta, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
    _assert_same_value_and_grad(trl_loss, expected, _policy_leaves(inputs))


# --- GRPO trainer: grpo, dr_grpo, dapo --------------------------------------------------


def _harness_advantages(rewards, n, scale):
    out = []
    for g in range(len(rewards) // n):
        group = [float(r) for r in rewards[g * n : (g + 1) * n]]
        mean = statistics.mean(group)
        std = statistics.stdev(group) if n > 1 else 0.0
        out += [(r - mean) / (std + 1e-4) if scale else r - mean for r in group]
    return torch.tensor(out, dtype=F64)


def _trl_grpo(inputs, loss_type, n, beta, epsilon, epsilon_high, max_completion_length=512, bias_correction=True):
    mask = inputs["mask(y)"]

    def clean(key):  # a real model returns finite numbers on padding; TRL masks them afterwards
        return torch.where(mask, inputs[key], torch.zeros_like(inputs[key]))

    policy = clean("logprobs(policy, y)")
    rows, width = mask.shape
    batch = {
        "prompt_ids": torch.ones(rows, 1, dtype=torch.long),
        "prompt_mask": torch.ones(rows, 1, dtype=torch.long),
        "completion_ids": torch.ones(rows, width, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": _harness_advantages(inputs["r(y)"], n, scale=loss_type != "dr_grpo"),
        "old_per_token_logps": clean("logprobs(old, y)"),
        "ref_per_token_logps": clean("logprobs(reference, y)"),
        "num_items_in_batch": mask.sum(),
    }
    stub = _stub(
        _get_per_token_logps_and_entropies=lambda *a, **k: (policy, torch.zeros_like(policy), None),
        model=SimpleNamespace(training=True),
        args=SimpleNamespace(use_bias_correction_kl=bias_correction, delta=None, steps_per_generation=1),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=epsilon,
        epsilon_high=epsilon_high,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        current_gradient_accumulation_steps=1,
        max_completion_length=max_completion_length,
        _entropy_bonus_enabled=False,
    )
    return GRPOTrainer._compute_loss(stub, None, batch)


RL_CASES = st.tuples(
    st.integers(2, 4),  # n
    st.sampled_from([0.0, 0.04, 0.5]),  # beta
    st.sampled_from([(0.2, 0.2), (0.2, 0.28), (0.1, 0.5)]),  # epsilon, epsilon_high
    st.booleans(),  # use_bias_correction_kl
)


@needs_trl
@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@FEW
@given(data=st.data(), case=RL_CASES)
def test_trl_grpo_family(loss_type, data, case):
    n, beta, (epsilon, epsilon_high), bias_correction = case
    inputs = strat.requires_grad_(data.draw(strat.rollout_inputs(n)))
    params = dict(n=n, beta=beta, epsilon=epsilon, epsilon_high=epsilon_high, use_bias_correction_kl=bias_correction)
    extra = {"max_completion_length": 6} if loss_type == "dr_grpo" else {}
    trl_loss = _trl_grpo(inputs, loss_type, n, beta, epsilon, epsilon_high, 6, bias_correction)
    expected = ref.METHODS[loss_type](inputs, **params, **extra)
    _assert_same_value_and_grad(trl_loss, expected, _policy_leaves(inputs))


@needs_trl
@FEW
@given(st.lists(st.floats(-3, 3, width=32), min_size=2, max_size=8), st.data())
def test_trl_nanstd_is_bessel_corrected(rewards, data):
    """TRL's group std (``trl.trainer.utils.nanstd``) is the n-1 std the references use.

    (TRL forms the Bessel factor ``count / (count - 1)`` from integer tensors, i.e. in float32,
    hence the 1e-7 relative tolerance even for float64 rewards.)
    """
    values = torch.tensor(rewards, dtype=F64)
    _close(trl_utils.nanstd(values), statistics.stdev(rewards), rtol=1e-7, atol=1e-9)
    n = data.draw(st.sampled_from([d for d in range(2, len(rewards) + 1) if len(rewards) % d == 0]))
    _close(ref._group_advantages(values, n, scale=True), _harness_advantages(values, n, scale=True), atol=1e-7)


@needs_trl
def test_trl_selective_log_softmax_matches_gather():
    """The CPO/ORPO harness relies on TRL's selective_log_softmax = log_softmax + gather."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen, dtype=F64)
    index = torch.randint(0, 11, (3, 5), generator=gen)
    expected = torch.log_softmax(logits, -1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    _close(trl_utils.selective_log_softmax(logits, index), expected)


@needs_trl
def test_trl_defaults_match_DEFAULTS():
    """The contract defaults that are TRL 1.16 defaults (see the report for the ones that are not)."""
    import tempfile

    from trl import DPOConfig, GRPOConfig, KTOConfig
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.orpo import ORPOConfig

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = dict(output_dir=tmp, use_cpu=True, bf16=False, report_to="none")
        dpo, kto, cpo = DPOConfig(**kw), KTOConfig(**kw), CPOConfig(**kw)
        orpo, grpo = ORPOConfig(**kw), GRPOConfig(**kw)
    assert (dpo.beta, dpo.label_smoothing, dpo.loss_type) == (0.1, 0.0, ["sigmoid"]) == (
        ref.DEFAULTS["dpo"]["beta"],
        ref.DEFAULTS["dpo"]["label_smoothing"],
        ["sigmoid"],
    )
    assert (kto.beta, kto.desirable_weight, kto.undesirable_weight) == tuple(ref.DEFAULTS["kto"].values())
    assert (cpo.beta, cpo.simpo_gamma, cpo.label_smoothing) == tuple(ref.DEFAULTS["simpo"].values())
    assert orpo.beta == ref.DEFAULTS["orpo"]["beta"]
    assert (grpo.beta, grpo.epsilon, grpo.num_generations) == (0.0, 0.2, 8)
    assert grpo.epsilon_high is None  # trainer uses epsilon_high = epsilon
    assert grpo.use_bias_correction_kl is True and grpo.scale_rewards == "group" and grpo.loss_type == "dapo"
    assert grpo.max_completion_length == 512 == ref.DEFAULTS["dr_grpo"]["max_completion_length"]


# ======================================================================================
# (c) properties: garbage-proofness, gradient masks, identities
# ======================================================================================

CASES = [
    ("sft", strat.sft_inputs(), {}),
    ("dpo", strat.preference_inputs(), {}),
    ("cdpo", strat.preference_inputs(), {}),
    ("ipo", strat.preference_inputs(), {}),
    ("simpo", strat.preference_inputs(), {}),
    ("orpo", strat.preference_inputs(), {}),
    ("kto", strat.unpaired_inputs(), {}),
    ("grpo", strat.rollout_inputs(3), {"n": 3, "beta": 0.04}),
    ("dr_grpo", strat.rollout_inputs(2), {"n": 2, "beta": 0.04}),
    ("dapo", strat.rollout_inputs(2), {"n": 2}),
]


def _regarbage(inputs, fill):
    """The same inputs with every masked-out position of every token tensor set to ``fill``."""
    out = dict(inputs)
    for key, value in inputs.items():
        if key.startswith("logprobs("):
            seqs = key[key.index(",") + 2 : -1]
            out[key] = torch.where(inputs[f"mask({seqs})"], value, torch.full_like(value, fill))
    return out


@pytest.mark.parametrize("method,strategy,params", CASES, ids=[c[0] for c in CASES])
@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_garbage_never_leaks(method, strategy, params, data):
    inputs = strat.requires_grad_(data.draw(strategy))
    leaves = _policy_leaves(inputs)
    loss = ref.METHODS[method](inputs, **params)
    assert loss.dim() == 0 and torch.isfinite(loss)
    grads = _grads(loss, leaves)
    for leaf, grad in zip(leaves, grads):
        assert torch.isfinite(grad).all()
        seqs = [k for k, v in inputs.items() if v is leaf][0][len("logprobs(policy, ") : -1]
        assert (grad[~inputs[f"mask({seqs})"]] == 0).all()
    for fill in (NAN, -INF, 0.0):
        other = strat.requires_grad_(_regarbage(inputs, fill))
        loss2 = ref.METHODS[method](other, **params)
        _close(loss2, loss, rtol=0, atol=0)
        for g1, g2 in zip(grads, _grads(loss2, _policy_leaves(other))):
            _close(g2, g1, rtol=0, atol=0)


@FEW
@given(strat.preference_inputs())
def test_strategies_shapes(inputs):
    for s in ("chosen", "rejected"):
        mask = inputs[f"mask({s})"]
        assert mask.dtype == torch.bool and 1 <= mask.shape[0] <= 4 and 1 <= mask.shape[1] <= 6
        lengths = mask.sum(1)
        assert (lengths >= 1).all()
        assert torch.equal(mask, torch.arange(mask.shape[1]) < lengths.unsqueeze(1))  # contiguous from column 0
        for model in ("policy", "reference"):
            values = inputs[f"logprobs({model}, {s})"]
            assert values.dtype == F64 and values.shape == mask.shape and (values[mask] <= 0).all()


@FEW
@given(st.integers(2, 4), st.data())
def test_rollout_strategy_groups(n, data):
    inputs = data.draw(strat.rollout_inputs(n))
    rows = inputs["mask(y)"].shape[0]
    assert rows % n == 0 and 1 <= rows // n <= 3
    assert inputs["r(y)"].shape == (rows,)
    for key in ("logprobs(policy, y)", "logprobs(old, y)", "logprobs(reference, y)"):
        assert inputs[key].shape == inputs["mask(y)"].shape


@FEW
@given(strat.preference_inputs())
def test_identity_cdpo_without_smoothing_is_dpo(inputs):
    _close(ref.cdpo(inputs, label_smoothing=0.0), ref.dpo(inputs))


@FEW
@given(st.integers(2, 3), st.data())
def test_identity_grpo_equals_dapo_when_lengths_equal(n, data):
    """METHODS.md identity: with every completion of the same length the grpo and dapo means agree."""
    inputs = data.draw(strat.rollout_inputs(n))
    inputs["mask(y)"] = torch.ones_like(inputs["mask(y)"])
    for key in [k for k in inputs if k.startswith("logprobs")]:  # the garbage columns become real tokens
        inputs[key] = torch.nan_to_num(inputs[key], nan=-1.0, posinf=-1.0, neginf=-1.0).clamp(-8, 0)
    _close(ref.grpo(inputs, n=n, beta=0.1), ref.dapo(inputs, n=n, beta=0.1, epsilon_high=0.2))


def test_kto_reference_point_gets_no_gradient():
    inputs = strat.requires_grad_(dict(KTO_POSITIVE_KL))  # z0 = 2/3 > 0, so the clamp does not hide it
    grad = _grads(ref.kto(inputs), [inputs["logprobs(policy, mismatched(completion))"]])[0]
    assert (grad == 0).all()


def test_orpo_beta_zero_is_sft_on_chosen():
    _close(ref.orpo(PREF, beta=0.0), ref.sft(_chosen_as_completion(PREF)))


def test_defaults_are_function_defaults():
    import inspect

    for name, params in ref.DEFAULTS.items():
        signature = inspect.signature(ref.METHODS[name])
        for param, default in params.items():
            assert signature.parameters[param].default == default, (name, param)
