"""The "distill" batch — online preference (online_dpo, online_ipo, xpo, spin),
distillation (kd, seqkd, gkd, gkd_on_policy, gkd_lambda, opd, opd_sampled, iw_opd, minillm,
distillm) and reward modelling (reward_model_margin, reward_model_centered) — checked
three ways (driven through tests/trl_harness.py's stand-ins):

(a) each spec against the plain-torch reference of its METHODS.md formula
    (references_distill_batch.py), loss AND gradient, float64, rtol 1e-6, on hypothesis
    inputs derived from the compiled graph (ragged masks, garbage in masked positions,
    rollout groups, vocabulary-level logits);
(b) every method TRL 1.16 implements against TRL's own loss code, driven without a model
    through the harnesses below;
(c) identities between the methods (METHODS.md §11, I37/I38 and the XPO/online-DPO relation).

TRL harnesses (b)
-----------------
* Online DPO / IPO: ``OnlineDPOTrainer.training_step`` on a stand-in ``self`` whose
  ``_generate`` returns fixed token ids, whose ``_forward`` returns given per-token
  log-probs (0 on padding, as a real model's finite values times TRL's padding mask),
  whose reward function returns given scores, and whose ``accelerator.backward``
  records the loss. TRL lays the 2B samples out as [all first samples; all second
  samples]; ptdsl's rollout rows are consecutive pairs, so the harness permutes rows,
  and the picked sets are built by the runtime's own ``pick_sets`` (so its tie rule is
  checked against TRL's ``first >= second``).
* GKD (kd, gkd, gkd_on_policy): the static ``GKDTrainer.generalized_jsd_loss`` on
  student/teacher logits with labels −100 outside the mask.
* opd: ``trl.trainer.distillation_trainer._chunked_divergence_loss`` with identity LM
  heads (hidden states = logits), which TRL evaluates in float32: rtol 1e-5.
* iw_opd, opd_sampled: the unbound ``IWOPDTrainer._compute_iw_opd_loss`` on student
  logits, sampled tokens and teacher token log-probs (γ = 0 for opd_sampled, I38); the
  spec's leaves are built from the same logits with log_softmax + gather.
* seqkd: ``SFTTrainer.compute_loss`` (loss_type="nll") through tests/trl_drivers.py
  (SeqKD is SFT on the teacher's answers).
* reward models (reward_model too): ``RewardTrainer.compute_loss`` with a stand-in
  classifier returning the given scores, with a ``margin`` column and
  ``center_rewards_coefficient``.
Gradients are compared w.r.t. the policy's leaves (log-probs, logits or scores).
"""
from __future__ import annotations

import functools
import math
import tempfile
import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptdsl
from ptdsl.equivalence.strategies import inputs as graph_inputs
from tests.helpers import assert_close, loss_and_grads
from tests.methods import references_distill_batch as R
from tests.reference_cases import REFERENCE, TRL, checks
from tests.trl_drivers import sft_loss
from tests.trl_harness import TRL_VERSION, Accelerator, metrics, needs_trl, stub

F64 = torch.float64
SETTINGS = settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@functools.lru_cache(maxsize=None)
def _compiled(method: str, params: tuple = ()):
    return ptdsl.compile(method, **dict(params))


def _spec_loss(method: str, params: dict, inputs: dict) -> torch.Tensor:
    return _compiled(method, tuple(sorted(params.items()))).loss(inputs)[0]


# ======================================================================================
# (a) spec vs plain-torch reference
# ======================================================================================

# (method, spec params, reference params beyond the shared ones)
CASES = [
    ("online_dpo", {}, {}),
    ("online_dpo", {"beta": 0.5}, {}),
    ("online_ipo", {}, {}),
    ("online_ipo", {"beta": 2.0}, {}),
    ("xpo", {}, {}),
    ("xpo", {"beta": 0.3, "alpha": 0.25}, {}),
    ("spin", {}, {}),
    ("spin", {"beta": 1.5}, {}),
    ("kd", {}, {}),
    ("gkd", {}, {}),
    ("gkd", {"beta": 0.2}, {}),
    ("gkd", {"beta": 0.0}, {}),
    ("gkd", {"beta": 1.0}, {}),
    ("gkd_on_policy", {}, {}),
    ("gkd_on_policy", {"beta": 0.9}, {}),
    ("gkd_lambda", {}, {}),
    ("gkd_lambda", {"lmbda": 0.3, "beta": 0.0}, {}),
    ("opd", {}, {}),
    ("opd", {"beta": 0.5}, {}),
    ("opd", {"beta": 0.0}, {}),
    ("opd_sampled", {}, {}),
    ("iw_opd", {}, {}),
    ("iw_opd", {"iw_opd_gamma": 2.0}, {}),
    ("iw_opd", {"iw_opd_gamma": 0.0}, {}),
    ("minillm", {"num_generations": 2}, {}),
    ("minillm", {"num_generations": 2, "gamma": 0.9}, {}),
    ("minillm", {"num_generations": 3, "gamma": 0.5, "length_normalization": False, "epsilon_high": 0.28}, {}),
    ("minillm", {"num_generations": 2, "detach_advantage": True, "single_step_decomposition": False}, {}),
    ("distillm", {}, {}),
    ("distillm", {"alpha": 0.3, "reverse": True}, {}),
    ("distillm", {"alpha": 0.9}, {}),
    ("seqkd", {}, {}),
    ("reward_model_margin", {}, {}),
    ("reward_model_margin", {"center_rewards_coefficient": 0.05}, {}),
    ("reward_model_centered", {}, {}),
    ("reward_model_centered", {"center_rewards_coefficient": 0.5}, {}),
]
# rollout options only: the inputs carry their effect (the runtime takes a rollout's
# logits and log-probs at its sampling temperature)
NOT_REFERENCE_PARAMS = {"num_generations", "temperature", "lmbda"}


def _check_reference(method, params, extra, data):
    c = _compiled(method, tuple(sorted(params.items())))
    x = data.draw(graph_inputs([c.graph]))
    names = [i.name for i in c.inputs if i.trainable]
    ref_params = {k: v for k, v in params.items() if k not in NOT_REFERENCE_PARAMS} | extra
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want, want_g = loss_and_grads(lambda i: R.METHODS[method](i, **ref_params), x, names)
    assert_close(got, want, rtol=1e-6, what=f"{method} loss")
    for n in names:
        assert_close(got_g[n], want_g[n], rtol=1e-6, what=f"{method} grad {n}")


CASE_IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


@checks(REFERENCE)
@pytest.mark.parametrize("method,params,extra", CASES, ids=CASE_IDS)
@SETTINGS
@given(data=st.data())
def test_matches_reference(method, params, extra, data):
    _check_reference(method, params, extra, data)


@pytest.mark.slow
@pytest.mark.parametrize("method,params,extra", CASES, ids=CASE_IDS)
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_matches_reference_long(method, params, extra, data):
    _check_reference(method, params, extra, data)


# ======================================================================================
# (b) TRL 1.16's own loss code
# ======================================================================================

if TRL_VERSION is not None:
    from trl.experimental.gkd import GKDTrainer
    from trl.experimental.iw_opd import IWOPDTrainer
    from trl.experimental.online_dpo import OnlineDPOTrainer
    from trl.trainer.distillation_trainer import _chunked_divergence_loss
    from trl.trainer.reward_trainer import RewardTrainer

LOGPROB = st.floats(-8.0, -(2.0 ** -10), width=64)
LOGIT = st.floats(-6.0, 6.0, width=64)


def _close(actual, expected, rtol, atol):
    assert_close(torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64), rtol=rtol, atol=atol)


def _same_value_and_grad(trl_loss, our_loss, leaves, rtol=1e-9, atol=1e-11):
    _close(trl_loss, our_loss, rtol, atol)
    g_trl = torch.autograd.grad(trl_loss, leaves, allow_unused=True)
    g_our = torch.autograd.grad(our_loss, leaves, allow_unused=True)
    for leaf, a, b in zip(leaves, g_trl, g_our):
        _close(torch.zeros_like(leaf) if a is None else a, torch.zeros_like(leaf) if b is None else b, rtol, atol)


def _mask(lengths, width) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


@st.composite
def _ragged(draw, rows, max_width=5):
    width = draw(st.integers(1, max_width))
    return _mask(draw(st.lists(st.integers(1, width), min_size=rows, max_size=rows)), width)


def _values(draw, shape, elements) -> torch.Tensor:
    n = math.prod(shape)
    return torch.tensor(draw(st.lists(elements, min_size=n, max_size=n)), dtype=F64).reshape(shape)


# --- online DPO / IPO ------------------------------------------------------------------


@st.composite
def _online_pairs(draw):
    """P prompts × 2 samples in ptdsl's row order (rows 2i, 2i+1 are prompt i's samples):
    policy/reference token log-probs with NaN outside the mask, and rewards with ties."""
    prompts = draw(st.integers(1, 4))
    mask = draw(_ragged(2 * prompts))
    policy, reference = (_values(draw, tuple(mask.shape), LOGPROB) for _ in range(2))
    rewards = _values(draw, (2 * prompts,), st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    nan = torch.full_like(policy, float("nan"))
    return prompts, mask, torch.where(mask, policy, nan), torch.where(mask, reference, nan), rewards


def _runtime_pick(compiled, rewards, prompts):
    """Row indices the runtime's pick_sets chooses for best(y, r) and worst(y, r)."""
    from ptdsl.runtime.batch import Batch, SetRows
    from ptdsl.runtime.step import pick_sets
    rows = 2 * prompts
    batch = Batch(examples=[None] * prompts, sets={"y": SetRows([[0]] * rows, [[i] for i in range(rows)])})
    batch.rewards = {"r(y)": [float(v) for v in rewards]}
    pick_sets(compiled, batch)
    return [[c[0] for c in batch.sets[f"{s}(y, r)"].completion_ids] for s in ("best", "worst")]


def _trl_online_dpo(policy_trl, reference_trl, mask_trl, rewards_trl, loss_type, beta):
    """OnlineDPOTrainer.training_step on fixed samples, log-probs and rewards (TRL row order)."""
    rows, width = mask_trl.shape
    recorder = Accelerator()
    policy_model, reference_model = SimpleNamespace(train=lambda: None), object()
    ids = torch.full((rows, width), 5)

    def forward(model, *args):
        return policy_trl if model is policy_model else reference_trl

    this = SimpleNamespace(
        args=SimpleNamespace(use_vllm=False, missing_eos_penalty=None, loss_type=loss_type, torch_empty_cache_steps=None,
                             optim="adamw_torch", n_gpu=1, gradient_accumulation_steps=1),
        _generate=lambda model, prompts, images=None: (torch.ones(rows, 1, dtype=torch.long),
                                                       torch.ones(rows, 1, dtype=torch.long), ids, mask_trl.long(), None),
        eos_token_ids=[2],
        _forward=forward,
        ref_model=reference_model,
        processing_class=SimpleNamespace(batch_decode=lambda t, skip_special_tokens=True: ["7"] * len(t)),
        _calculate_rewards_from_functions=lambda prompts, completions, completion_ids_list, **kw: rewards_trl,
        reward_funcs=[object()],
        stats=defaultdict(list),
        accelerator=recorder,
        beta=beta,
        state=SimpleNamespace(global_step=0),
    )
    OnlineDPOTrainer.training_step(this, policy_model, {"prompt": ["1+1="] * (rows // 2)})
    return recorder.loss


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,loss_type", [("online_dpo", "sigmoid"), ("online_ipo", "ipo")])
@FEW
@given(data=_online_pairs(), beta=st.sampled_from([0.1, 0.5, 2.0]))
def test_trl_online_dpo(method, loss_type, data, beta):
    prompts, mask, policy_values, reference_values, rewards = data
    policy = policy_values.clone().requires_grad_(True)
    c = _compiled(method, (("beta", beta),))
    best, worst = _runtime_pick(c, rewards, prompts)
    ours = {}
    for s, rows in (("best(y, r)", best), ("worst(y, r)", worst)):
        ours[f"logprobs(policy, {s})"] = policy[rows]
        ours[f"logprobs(reference, {s})"] = reference_values[rows]
        ours[f"mask({s})"] = mask[rows]
        ours[f"r({s})"] = rewards[rows]
    ours.update({"r(y)": rewards, "mask(y)": mask})
    our_loss = c.loss(ours)[0]
    # TRL's row k·P + i is sample k of prompt i, i.e. ptdsl's row 2i + k
    order = [2 * i + k for k in range(2) for i in range(prompts)]
    zero = torch.zeros((), dtype=F64)
    trl_loss = _trl_online_dpo(torch.where(mask, policy, zero)[order], torch.where(mask, reference_values, zero)[order],
                               mask[order], rewards[order], loss_type, beta)
    _same_value_and_grad(trl_loss, our_loss, [policy])


def test_runtime_pick_follows_trl_ties():
    """TRL: chosen = first sample iff first ≥ second, rejected = the other; so on a tie the
    first is chosen and the second rejected, which best/worst must reproduce."""
    c = _compiled("online_dpo")
    best, worst = _runtime_pick(c, torch.tensor([1.0, 1.0, 0.0, 2.0, 3.0, 1.0]), 3)
    assert best == [0, 3, 4] and worst == [1, 2, 5]


# --- GKD: kd, gkd, gkd_on_policy ---------------------------------------------------------


@st.composite
def _logit_batch(draw, max_vocab=6):
    rows = draw(st.integers(1, 4))
    mask = draw(_ragged(rows))
    vocab = draw(st.integers(2, max_vocab))
    shape = tuple(mask.shape) + (vocab,)
    return mask, _values(draw, shape, LOGIT), _values(draw, shape, LOGIT)


GKD_CASES = [("kd", None), ("gkd", None), ("gkd", 0.0), ("gkd", 1.0), ("gkd", 0.25), ("gkd_on_policy", None),
             ("gkd_on_policy", 0.75), ("gkd_lambda", None), ("gkd_lambda", 0.0)]


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,beta", GKD_CASES, ids=[f"{m}-{b}" for m, b in GKD_CASES])
@FEW
@given(batch=_logit_batch())
def test_trl_gkd(method, beta, batch):
    mask, student, teacher = batch
    student.requires_grad_(True)
    params = {} if beta is None else {"beta": beta}
    c = _compiled(method, tuple(params.items()))
    s = "y" if method in ("gkd_on_policy", "gkd_lambda") else "completion"
    our_loss = c.loss({f"logits(policy, {s})": student, f"logits(teacher, {s})": teacher, f"mask({s})": mask})[0]
    labels = torch.where(mask, torch.ones_like(mask, dtype=torch.long), torch.full_like(mask, -100, dtype=torch.long))
    trl_loss = GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=c.params["beta"])
    _same_value_and_grad(trl_loss, our_loss, [student])


# --- opd: DistillationTrainer's chunked divergence -------------------------------------------


@needs_trl
@checks(TRL, "opd")
@FEW
@given(batch=_logit_batch(), beta=st.sampled_from([1.0, 0.0, 0.5]), temperature=st.sampled_from([1.0, 0.7, 2.0]))
def test_trl_opd(batch, beta, temperature):
    """TRL divides raw logits by the temperature; ptdsl's leaves are the rollout's logits at
    its sampling temperature (the runtime's convention), i.e. already divided."""
    mask, student, teacher = batch
    student.requires_grad_(True)
    c = _compiled("opd", (("beta", beta), ("temperature", temperature)))
    leaves = {"logits(policy, y)": student / temperature, "logits(teacher, y)": teacher / temperature, "mask(y)": mask}
    our_loss = c.loss(leaves)[0]
    head = torch.eye(student.shape[-1], dtype=F64)  # hidden states = logits
    trl_loss, _, _ = _chunked_divergence_loss(student, teacher, head, head, mask.long(), beta, temperature=temperature)
    _same_value_and_grad(trl_loss, our_loss, [student], rtol=1e-5, atol=1e-6)  # TRL computes in float32


# --- iw_opd and opd_sampled: IWOPDTrainer._compute_iw_opd_loss ---------------------------------


@st.composite
def _sampled_tokens(draw):
    mask, student, _ = draw(_logit_batch())
    vocab = student.shape[-1]
    tokens = _values(draw, tuple(mask.shape), st.integers(0, vocab - 1)).long()
    teacher = _values(draw, tuple(mask.shape), LOGPROB)
    return mask, student, tokens, teacher


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,gamma", [("iw_opd", 0.5), ("iw_opd", 2.0), ("iw_opd", 0.0), ("opd_sampled", 0.0)])
@FEW
@given(batch=_sampled_tokens())
def test_trl_iw_opd(method, gamma, batch):
    mask, student, tokens, teacher = batch
    student.requires_grad_(True)
    params = (("iw_opd_gamma", gamma),) if method == "iw_opd" else ()
    c = _compiled(method, params)
    student_tokens = torch.log_softmax(student, -1).gather(-1, tokens[..., None]).squeeze(-1)
    our_loss = c.loss({"logprobs(policy, y)": student_tokens, "logprobs(teacher, y)": teacher, "mask(y)": mask})[0]
    this = SimpleNamespace(temperature=1.0, iw_opd_gamma=gamma, iw_opd_epsilon=1e-8,
                           model=SimpleNamespace(training=True), _metrics=metrics())
    labels = torch.where(mask, tokens, torch.full_like(tokens, -100))
    trl_loss = IWOPDTrainer._compute_iw_opd_loss(this, student, tokens, labels, teacher)
    _same_value_and_grad(trl_loss, our_loss, [student])


# --- seqkd: SFTTrainer's NLL -----------------------------------------------------------------


@needs_trl
@checks(TRL, "seqkd")
@FEW
@given(data=st.data())
def test_trl_seqkd(data):
    """One prompt token, then the teacher's answer y; TRL's shifted label mask is mask(y)."""
    mask = data.draw(_ragged(data.draw(st.integers(1, 4))))
    values = _values(data.draw, tuple(mask.shape), LOGPROB).requires_grad_(True)
    ours = {"logprobs(policy, y)": torch.where(mask, values, torch.full_like(values, float("nan"))), "mask(y)": mask}
    our_loss = _compiled("seqkd").loss(ours)[0]
    trl_loss = sft_loss(values, mask)
    _same_value_and_grad(trl_loss, our_loss, [values])


# --- reward models: RewardTrainer.compute_loss --------------------------------------------------


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,eta", [("reward_model", None), ("reward_model", 0.2),
                                        ("reward_model_margin", None), ("reward_model_margin", 0.05),
                                        ("reward_model_centered", 0.01), ("reward_model_centered", 0.5)])
@FEW
@given(data=st.data())
def test_trl_reward_model(method, eta, data):
    rows = data.draw(st.integers(1, 5))
    score = st.floats(-3.0, 3.0, width=64)
    chosen, rejected = (_values(data.draw, (rows,), score).requires_grad_(True) for _ in range(2))
    params = {} if eta is None else {"center_rewards_coefficient": eta}
    ours = {"score(policy, chosen)": chosen, "score(policy, rejected)": rejected}
    batch = {"input_ids": torch.ones(2 * rows, 3, dtype=torch.long), "attention_mask": torch.ones(2 * rows, 3)}
    if method == "reward_model_margin":
        ours["margin"] = batch["margin"] = _values(data.draw, (rows,), st.sampled_from([0.0, 1 / 3, 2 / 3, 1.0]))
    our_loss = _compiled(method, tuple(params.items())).loss(ours)[0]

    def classifier(**kwargs):
        return SimpleNamespace(logits=torch.cat([chosen, rejected])[:, None])

    this = stub(model=SimpleNamespace(training=True), args=SimpleNamespace(center_rewards_coefficient=eta))
    trl_loss = RewardTrainer.compute_loss(this, classifier, batch)
    _same_value_and_grad(trl_loss, our_loss, [chosen, rejected])


# --- TRL defaults --------------------------------------------------------------------------


@needs_trl
def test_trl_defaults_match_spec_params():
    from trl import DistillationConfig, RewardConfig
    from trl.experimental.gkd import GKDConfig
    from trl.experimental.iw_opd import IWOPDConfig
    from trl.experimental.online_dpo import OnlineDPOConfig

    def p(method):
        return _compiled(method).params

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = dict(output_dir=tmp, use_cpu=True, bf16=False, report_to="none")
        online, gkd_config = OnlineDPOConfig(**kw), GKDConfig(**kw)
        distill, iw, reward = DistillationConfig(**kw), IWOPDConfig(**kw), RewardConfig(**kw)
    assert (online.beta, online.loss_type, online.temperature, online.max_new_tokens) == (0.1, "sigmoid", 0.9, 64)
    assert (p("online_dpo")["beta"], p("online_dpo")["temperature"], p("online_dpo")["max_new_tokens"]) == (0.1, 0.9, 64)
    assert online.missing_eos_penalty is None
    assert (gkd_config.lmbda, gkd_config.beta, gkd_config.temperature, gkd_config.max_new_tokens) == (0.5, 0.5, 0.9, 128)
    assert p("gkd")["beta"] == 0.5 and p("kd")["beta"] == 0.0
    assert (p("gkd_on_policy")["temperature"], p("gkd_on_policy")["max_new_tokens"]) == (0.9, 128)
    assert (p("gkd_lambda")["lmbda"], p("gkd_lambda")["beta"], p("gkd_lambda")["temperature"],
            p("gkd_lambda")["max_new_tokens"]) == (0.5, 0.5, 0.9, 128)
    assert (distill.beta, distill.temperature, distill.max_completion_length) == (1.0, 1.0, 512)
    assert (p("opd")["beta"], p("opd")["temperature"], p("opd")["max_completion_length"]) == (1.0, 1.0, 512)
    assert (iw.distillation_objective, iw.iw_opd_gamma, iw.lmbda, iw.temperature, iw.top_p) == ("iw_opd", 0.5, 1.0,
                                                                                              1.0, 0.95)
    assert (iw.iw_opd_epsilon, iw.max_completion_length) == (1e-8, 512)
    assert (p("iw_opd")["iw_opd_gamma"], p("iw_opd")["top_p"], p("iw_opd")["max_completion_length"]) == (0.5, 0.95, 512)
    assert reward.center_rewards_coefficient is None and p("reward_model_margin")["center_rewards_coefficient"] == 0.0
    assert p("reward_model_centered")["center_rewards_coefficient"] == 0.01


# ======================================================================================
# (c) identities
# ======================================================================================


@SETTINGS
@given(data=st.data())
def test_xpo_without_exploration_is_online_dpo_on_the_pair(data):
    """METHODS.md O2: α = 0 ⇒ online DPO on a (policy, reference) pair, picked by reward."""
    c = _compiled("xpo", (("alpha", 0.0),))
    x = data.draw(graph_inputs([c.graph]))
    policy_wins = x["r(y)"] >= x["r(y_ref)"]
    width = max(x["mask(y)"].shape[1], x["mask(y_ref)"].shape[1])

    def pad(t):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    picked = {"r(y)": torch.stack([x["r(y)"], x["r(y_ref)"]], 1).reshape(-1),
              "mask(y)": torch.stack([pad(x["mask(y)"]), pad(x["mask(y_ref)"])], 1).reshape(-1, width)}
    for s, wins in (("best(y, r)", policy_wins), ("worst(y, r)", ~policy_wins)):
        for key in ("logprobs(policy, {})", "logprobs(reference, {})", "mask({})"):
            a, b = pad(x[key.format("y")]), pad(x[key.format("y_ref")])
            picked[key.format(s)] = torch.where(wins[:, None], a, b)
        picked[f"r({s})"] = torch.where(wins, x["r(y)"], x["r(y_ref)"])
    _close(c.loss(x)[0], _compiled("online_dpo").loss(picked)[0], 1e-12, 1e-12)


@SETTINGS
@given(data=st.data())
def test_distillation_identities(data):
    """I37: gkd_on_policy(β = 1) = opd (GKD λ = 1, β = 1 ≡ DistillationConfig(beta=1));
    I38: iw_opd(γ = 0) = opd_sampled. (kd = gkd(β = 0) holds by `extends`: a declaration in
    tests/equivalence/test_identities.py.)"""
    x = data.draw(graph_inputs([_compiled("gkd").graph]))
    on_policy = {"logits(policy, y)": x["logits(policy, completion)"], "logits(teacher, y)": x["logits(teacher, completion)"],
                 "mask(y)": x["mask(completion)"]}
    _close(_spec_loss("gkd_on_policy", {"beta": 1.0}, on_policy), _spec_loss("opd", {}, on_policy), 1e-12, 1e-12)
    y = data.draw(graph_inputs([_compiled("iw_opd").graph]))
    _close(_spec_loss("iw_opd", {"iw_opd_gamma": 0.0}, y), _spec_loss("opd_sampled", {}, y), 1e-12, 1e-12)


def test_gkd_folds_the_unused_divergences():
    """A constant β keeps one divergence in the graph: no logaddexp for β ∈ {0, 1}."""
    for beta, present in ((0.0, False), (1.0, False), (0.5, True)):
        ops = {d["op"] for _, d in _compiled("gkd", (("beta", beta),)).graph.nodes(data=True)}
        assert ("logaddexp" in ops) is present, beta


def test_minillm_default_advantage_has_no_scan():
    """γ = 0 (TRL's default) folds the discounted sums away: A_t = ρ_t."""
    ops = {d["op"] for _, d in _compiled("minillm").graph.nodes(data=True)}
    assert "discounted_sum" not in ops and "stopgrad" not in ops
    ops = {d["op"] for _, d in _compiled("minillm", (("gamma", 0.9),)).graph.nodes(data=True)}
    assert "discounted_sum" in ops
