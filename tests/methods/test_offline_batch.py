"""The "offline" batch of library methods (aot, aot_unpaired, discopop, ld_dpo, wpo, tr_dpo,
odpo, tdpo1, tdpo2, kto_pair, slic, gpo_*, step_dpo, simper, bco, orm, implicit_prm,
cpo_hinge, cpo_ipo). tpo and tpo_l were written by another batch (and are tested against
references in test_variants.py); this file adds their TRL comparison.

1. Every spec matches an independent plain-torch reference of its METHODS.md formula
   (references_offline_batch.py) in loss AND gradient, float64, rtol 1e-6, on hypothesis
   inputs derived from the compiled graph (ragged masks, garbage in masked-out positions,
   logits for the vocabulary-level leaves, score columns, labels, the triple's gold set).
   Methods with running statistics (bco) are checked over several steps; beta_dpo, with its
   random filtering and moving averages, has its own file (test_random_methods.py).
2. Every method TRL 1.16 implements is also checked against TRL's own loss code, driven
   without a model (tests/trl_harness.py): CPOTrainer for cpo, cpo_simpo, alphapo,
   cpo_hinge and cpo_ipo; TPOTrainer for tpo and tpo_l; TRL's SyncRefModelCallback for
   tr_dpo's moving reference. DPOTrainer's loss types (aot, aot_unpaired, discopop,
   ld_dpo, wpo, tr_dpo, step_dpo and the rest of the DPO family) are in test_dpo_trainer.py.
   CPO and TPO compute log-probs from logits, so ``LogitsLM`` returns a fixed random logits
   tensor (requires grad); the spec's and the reference's inputs are built from the same
   logits with log_softmax + gather, and gradients are compared w.r.t. the logits.
3. Identities from METHODS.md §11 and the entries' "Relation" lines, through
   ptdsl.equivalence (step_dpo and tr_dpo, which are dpo's loss by `extends`, are declared
   in tests/equivalence/test_identities.py, not tested as identities).
"""
from __future__ import annotations

import copy
import functools
import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptdsl
from ptdsl.equivalence import assert_equivalent
from ptdsl.equivalence.strategies import inputs as graph_inputs
from tests import trl_drivers as D
from tests.helpers import assert_close, loss_and_grads
from tests.methods import references_offline as OFF
from tests.methods import references_offline_batch as R
from tests.reference_cases import REFERENCE, TRL, checks
from tests.trl_harness import TRL_VERSION, LogitsLM, needs_trl, pad_tokens, stub

F64 = torch.float64
NAN = float("nan")
# Default run: a dozen examples per case (the whole file stays well under a minute);
# `pytest -m slow` repeats the spec/reference comparison with many more.
FEW = settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@functools.lru_cache(maxsize=None)
def _compile(method: str, params: tuple = ()):
    return ptdsl.compile(method, **dict(params))


def _c(method, params=None):
    return _compile(method, tuple(sorted((params or {}).items())))


def _trainable(c) -> list[str]:
    return [i.name for i in c.inputs if i.trainable]


def _inputs(c):
    """Hypothesis inputs for every leaf of a compiled method (vocabularies of 2–4 entries)."""
    return graph_inputs([c.graph], max_vocab=4)


def _assert_same(a, b, names, rtol=1e-6, what=""):
    (va, ga), (vb, gb) = a, b
    assert_close(va, vb, rtol=rtol, what=f"{what} loss")
    for n in names:
        assert_close(ga[n], gb[n], rtol=rtol, what=f"{what} grad {n}")


# ======================================================================================
# 1. spec == plain-torch reference, loss and gradient
# ======================================================================================

# (method, spec params, reference keywords)
CASES = [
    ("aot", {}, {}), ("aot", {"beta": 0.5, "label_smoothing": 0.2}, {"beta": 0.5, "label_smoothing": 0.2}),
    ("aot_unpaired", {}, {}),
    ("aot_unpaired", {"beta": 2.0, "label_smoothing": 0.1}, {"beta": 2.0, "label_smoothing": 0.1}),
    ("discopop", {}, {}), ("discopop", {"beta": 0.5, "discopop_tau": 0.3}, {"beta": 0.5, "discopop_tau": 0.3}),
    ("ld_dpo", {}, {}), ("ld_dpo", {"ld_alpha": 0.0, "beta": 0.5}, {"ld_alpha": 0.0, "beta": 0.5}),
    ("ld_dpo", {"ld_alpha": 0.8, "label_smoothing": 0.1}, {"ld_alpha": 0.8, "label_smoothing": 0.1}),
    ("wpo", {}, {}), ("wpo", {"beta": 1.0, "label_smoothing": 0.2}, {"beta": 1.0, "label_smoothing": 0.2}),
    ("tr_dpo", {}, {}), ("tr_dpo", {"beta": 0.05, "ref_model_mixup_alpha": 1.0}, {"beta": 0.05}),
    ("step_dpo", {}, {}), ("step_dpo", {"beta": 0.5}, {"beta": 0.5}),
    ("odpo", {}, {}), ("odpo", {"alpha": 0.5, "beta": 0.5}, {"alpha": 0.5, "beta": 0.5}),
    ("tdpo1", {}, {}), ("tdpo1", {"beta": 0.5}, {"beta": 0.5}),
    ("tdpo2", {}, {}), ("tdpo2", {"alpha": 1.0, "beta": 0.3}, {"alpha": 1.0, "beta": 0.3}),
    ("kto_pair", {}, {}), ("kto_pair", {"beta": 1.0}, {"beta": 1.0}),
    ("slic", {}, {}), ("slic", {"delta": 5.0, "regularization_weight": 0.0}, {"delta": 5.0, "regularization_weight": 0.0}),
    ("gpo_exp", {}, {}), ("gpo_exp", {"beta": 0.5}, {"beta": 0.5}),
    ("gpo_truncated_quadratic", {}, {}), ("gpo_truncated_quadratic", {"beta": 0.5}, {"beta": 0.5}),
    ("gpo_savage", {}, {}), ("gpo_savage", {"beta": 0.5}, {"beta": 0.5}),
    ("simper", {}, {}),
    ("bco", {}, {}), ("bco", {"beta": 0.5}, {"beta": 0.5}),
    ("orm", {}, {}),
    ("implicit_prm", {}, {}), ("implicit_prm", {"beta": 0.5}, {"beta": 0.5}),
    ("cpo_hinge", {}, {}), ("cpo_hinge", {"beta": 0.5, "cpo_alpha": 0.0}, {"beta": 0.5, "cpo_alpha": 0.0}),
    ("cpo_ipo", {}, {}), ("cpo_ipo", {"beta": 0.5, "cpo_alpha": 0.2}, {"beta": 0.5, "cpo_alpha": 0.2}),
]

MINE = sorted({case[0] for case in CASES})


def _check_reference(method, params, ref, data):
    c = _c(method, params)
    x = data.draw(_inputs(c))
    names = _trainable(c)
    got = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want = loss_and_grads(lambda i: R.METHODS[method](i, **ref), x, names)
    _assert_same(got, want, names, what=method)


CASE_IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


@checks(REFERENCE)
@pytest.mark.parametrize("method,params,ref", CASES, ids=CASE_IDS)
@FEW
@given(data=st.data())
def test_matches_reference(method, params, ref, data):
    _check_reference(method, params, ref, data)


@pytest.mark.slow
@pytest.mark.parametrize("method,params,ref", CASES, ids=CASE_IDS)
@MANY
@given(data=st.data())
def test_matches_reference_long(method, params, ref, data):
    _check_reference(method, params, ref, data)


def _history_item(method, x, ref):
    """What a running statistic of `method` has seen after batch x (see the reference's docstring)."""
    return ref.get("beta", 0.1) * R._h(x, "completion")


@checks(REFERENCE)
@pytest.mark.parametrize("method,params,ref", [
    ("bco", {}, {}), ("bco", {"beta": 0.5}, {"beta": 0.5}),
])
@FEW
@given(data=st.data(), steps=st.integers(2, 4))
def test_running_statistics_across_steps(method, params, ref, data, steps):
    """The state carried by `running_mean` from call to call is the reference's history."""
    c = _c(method, params)
    names = _trainable(c)
    state, history = {}, []
    for _ in range(steps - 1):
        x = data.draw(_inputs(c))
        c.loss(x, state=state)
        history.append(_history_item(method, x, ref))
    x = data.draw(_inputs(c))
    got = loss_and_grads(lambda i: c.loss(i, state=state)[0], x, names)
    want = loss_and_grads(lambda i: R.METHODS[method](i, **ref, history=history), x, names)
    _assert_same(got, want, names, what=f"{method} after {steps - 1} steps")


# ======================================================================================
# 2. TRL 1.16's own loss code
# ======================================================================================

# DPOTrainer's loss types, weighting, LD-DPO and f-divergences: test_dpo_trainer.py.

if TRL_VERSION is not None:
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.tpo import TPOTrainer
    from trl.trainer.callbacks import SyncRefModelCallback


def _ld_dpo_bf16_batch():
    """One pair in bfloat16: 257 chosen tokens, 300 rejected, so the shared prefix is 257 tokens,
    a count bfloat16 rounds to 256. Every log-ratio is 0 except the chosen's 257th token (−1)."""
    bf16 = torch.bfloat16
    x = {}
    for s, n in (("chosen", 257), ("rejected", 300)):
        x[f"mask({s})"] = torch.ones(1, n, dtype=torch.bool)
        x[f"logprobs(policy, {s})"] = torch.full((1, n), -0.5, dtype=bf16)
        x[f"logprobs(reference, {s})"] = torch.full((1, n), -0.5, dtype=bf16)
    x["logprobs(policy, chosen)"][0, 256] = -1.5
    return x


# ld_alpha = 0: the 257th token weighs 1 if it is in the shared prefix (it is), else 0
LD_DPO_BF16_LOSS = -torch.nn.functional.logsigmoid(torch.tensor(0.1 * -1.0, dtype=F64)).item()  # 0.744


def test_ld_dpo_counts_exactly_with_bfloat16_inputs():
    """Lengths and positions are counts in at least float32: in bfloat16 the shared length 257
    became 256 and the 257th token fell out of the shared prefix (loss log 2 instead of 0.744)."""
    c = _c("ld_dpo", {"ld_alpha": 0.0})
    loss, _ = c.interpret(_ld_dpo_bf16_batch())
    assert abs(loss.item() - LD_DPO_BF16_LOSS) < 5e-3 and abs(loss.item() - math.log(2)) > 2e-2


def test_generated_ld_dpo_counts_exactly_with_bfloat16_inputs():
    c = _c("ld_dpo", {"ld_alpha": 0.0})
    loss, _ = c.loss(_ld_dpo_bf16_batch())
    assert abs(loss.item() - LD_DPO_BF16_LOSS) < 5e-3


# --- CPO and TPO trainers, from logits ---------------------------------------------------


VOCAB = 7


@st.composite
def _token_batch(draw, sets):
    """Token ids (one prompt token, ragged completions, pad 0) for each set, plus a logits seed."""
    rows = draw(st.integers(1, 4))
    lens = {s: draw(st.lists(st.integers(1, 5), min_size=rows, max_size=rows)) for s in sets}
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.5, 3.0]))
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for s in sets:
        width = 1 + max(lens[s])
        attention = (torch.arange(width) < 1 + torch.tensor(lens[s]).unsqueeze(1)).long()
        out[s] = (torch.randint(1, VOCAB, (rows, width), generator=gen) * attention, attention)
    return out, gen, scale


def _leaves(ids, attention, logits, s):
    """logprobs(policy, s) and mask(s) from logits [rows, L, V] of ids [rows, L] (log_softmax + gather)."""
    t = ids.shape[1] - 1
    per_token = torch.log_softmax(logits[:, :t], -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = attention[:, 1:] == 1
    return {f"logprobs(policy, {s})": torch.where(mask, per_token, torch.full_like(per_token, NAN)), f"mask({s})": mask}


def _reference(method):
    return R.METHODS.get(method) or getattr(OFF, method)


def _spec_and_ref(method, params, leaves_of, logits):
    c = _c(method, params)
    spec = c.loss(leaves_of(logits))[0]
    ref = _reference(method)(leaves_of(logits), **params)
    return spec, ref


def _check_against_trl(trl_loss, spec, ref, logits, what):
    (g_trl,) = torch.autograd.grad(trl_loss, [logits], retain_graph=True)
    (g_spec,) = torch.autograd.grad(spec, [logits], retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, [logits], retain_graph=True)
    assert_close(ref, trl_loss.detach(), rtol=1e-9, what=f"{what} ref/TRL loss")
    assert_close(g_ref, g_trl, rtol=1e-9, what=f"{what} ref/TRL grad")
    assert_close(spec.detach(), trl_loss.detach(), rtol=1e-6, what=f"{what} spec/TRL loss")
    assert_close(g_spec, g_trl, rtol=1e-6, what=f"{what} spec/TRL grad")


# spec → CPOConfig settings beyond beta and label_smoothing, from the spec's bound params
CPO_SETTINGS = {
    "cpo": lambda p: dict(loss_type="sigmoid", cpo_alpha=p["cpo_alpha"]),
    "cpo_simpo": lambda p: dict(loss_type="simpo", cpo_alpha=p["cpo_alpha"], simpo_gamma=p["gamma"]),
    "alphapo": lambda p: dict(loss_type="simpo", simpo_gamma=p["gamma"], alpha=p["alpha"]),
    "cpo_hinge": lambda p: dict(loss_type="hinge", cpo_alpha=p["cpo_alpha"]),
    "cpo_ipo": lambda p: dict(loss_type="ipo", cpo_alpha=p["cpo_alpha"]),
}
CPO_CASES = [
    ("cpo", {}), ("cpo", {"cpo_alpha": 0.0, "label_smoothing": 0.2, "beta": 0.5}),
    ("cpo_simpo", {}), ("cpo_simpo", {"cpo_alpha": 0.3, "gamma": 1.0, "beta": 2.0}),
    ("alphapo", {}), ("alphapo", {"alpha": 0.25, "beta": 2.5, "gamma": 0.1}), ("alphapo", {"alpha": -0.5}),
    ("cpo_hinge", {}), ("cpo_hinge", {"beta": 0.5, "cpo_alpha": 0.0}),
    ("cpo_ipo", {}), ("cpo_ipo", {"beta": 0.5, "cpo_alpha": 0.2}),
]


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,params", CPO_CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CPO_CASES)])
@FEW
@given(data=_token_batch(("chosen", "rejected")))
def test_trl_cpo_trainer(method, params, data):
    sets, gen, scale = data
    batch = {}
    for s, (ids, attention) in sets.items():
        labels = ids.masked_fill(attention == 0, -100)
        labels[:, 0] = -100
        batch.update({f"{s}_input_ids": ids, f"{s}_attention_mask": attention, f"{s}_labels": labels})
    rows, width = batch["chosen_input_ids"].shape[0], max(v[0].shape[1] for v in sets.values())
    logits = (scale * torch.randn(2 * rows, width, VOCAB, generator=gen, dtype=F64)).requires_grad_(True)
    p = _c(method, params).params
    # what a spec has no param for is off (no NLL term, no AlphaPO reward shaping); then the spec's
    attrs = {"alpha": 0.0, "cpo_alpha": 0.0, "simpo_gamma": 0.5, "beta": p["beta"],
             "label_smoothing": p.get("label_smoothing", 0.0), **CPO_SETTINGS[method](p)}
    trl_loss = D.paired_from_logits(CPOTrainer, attrs, batch, logits)

    def leaves_of(lg):
        out = {}
        for k, s in enumerate(("chosen", "rejected")):
            ids_s, att_s = sets[s]
            out.update(_leaves(ids_s, att_s, lg[k * rows:(k + 1) * rows, : ids_s.shape[1]], s))
        return out

    spec, ref = _spec_and_ref(method, params, leaves_of, logits)
    _check_against_trl(trl_loss, spec, ref, logits, method)


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,loss_type", [("tpo", "sigmoid"), ("tpo_l", "tpo-l")])
@FEW
@given(data=_token_batch(("chosen", "rejected", "gold")), beta=st.sampled_from([0.01, 0.5]),
       label_smoothing=st.sampled_from([0.0, 0.2]), tpo_alpha=st.sampled_from([0.0, 1.0, 0.4]))
def test_trl_tpo_trainer(method, loss_type, data, beta, label_smoothing, tpo_alpha):
    sets, gen, scale = data
    order = ("chosen", "rejected", "gold") if tpo_alpha != 0 else ("chosen", "rejected")  # TRL drops gold at α = 0
    width = max(sets[s][0].shape[1] for s in order)
    ids = torch.cat([pad_tokens(sets[s][0], width) for s in order])
    attention = torch.cat([pad_tokens(sets[s][1], width) for s in order])
    completion = attention.clone()
    completion[:, 0] = 0
    rows = sets["chosen"][0].shape[0]
    logits = (scale * torch.randn(len(order) * rows, width, VOCAB, generator=gen, dtype=F64)).requires_grad_(True)
    model = LogitsLM(logits, ids)
    this = stub(model=model, loss_type=loss_type, beta=beta, label_smoothing=label_smoothing, tpo_alpha=tpo_alpha,
                 tpo_l_gamma=0.5)
    trl_loss = TPOTrainer._compute_loss(this, model, {"input_ids": ids, "attention_mask": attention,
                                                      "completion_mask": completion}, return_outputs=False)

    def leaves_of(lg):
        out = {}
        for k, s in enumerate(order):
            ids_s, att_s = sets[s]
            out.update(_leaves(ids_s, att_s, lg[k * rows:(k + 1) * rows, : ids_s.shape[1]], s))
        if "gold" not in order:  # not read at tpo_alpha = 0; any values do
            out.update(_leaves(*sets["gold"], torch.zeros(rows, sets["gold"][0].shape[1], VOCAB, dtype=F64), "gold"))
        return out

    params = {"beta": beta, "label_smoothing": label_smoothing, "tpo_alpha": tpo_alpha}
    spec, ref = _spec_and_ref(method, params, leaves_of, logits)
    _check_against_trl(trl_loss, spec, ref, logits, method)


# --- TR-DPO: the moving reference -------------------------------------------------------


@needs_trl
@pytest.mark.parametrize("sync_steps,mixup", [(1, 0.6), (3, 0.6), (2, 1.0)])
def test_trl_tr_dpo_reference_updates(sync_steps, mixup, monkeypatch):
    """ptdsl's runtime update of a `frozen(policy, sync_steps, mixup)` role matches TRL's
    SyncRefModelCallback (θ_ref ← α·θ + (1 − α)·θ_ref every τ optimizer steps). The callback's
    DeepSpeed dispatch (which needs an initialised AcceleratorState) is bypassed: its
    on_step_end schedule and its update rule `_sync_target_model` are TRL's own."""
    from ptdsl.runtime.loop import _sync_references

    monkeypatch.setattr(SyncRefModelCallback, "sync_target_model", staticmethod(SyncRefModelCallback._sync_target_model))
    c = _c("tr_dpo", {"ref_model_sync_steps": sync_steps, "ref_model_mixup_alpha": mixup})
    assert dict(c.graph.graph["roles"]["reference"].options) == {"sync_steps": sync_steps, "mixup": mixup}
    gen = torch.Generator().manual_seed(0)
    policy = torch.nn.Linear(3, 2).double()
    ours, theirs = copy.deepcopy(policy), copy.deepcopy(policy)
    callback = SyncRefModelCallback(ref_model=theirs, accelerator=None)
    args = SimpleNamespace(ref_model_sync_steps=sync_steps, ref_model_mixup_alpha=mixup)
    for step in range(1, 7):
        with torch.no_grad():  # an optimizer step
            for p in policy.parameters():
                p.add_(torch.randn(p.shape, generator=gen, dtype=F64))
        _sync_references(c, SimpleNamespace(frozen={"reference": ours}, policy=policy), step)
        callback.on_step_end(args, SimpleNamespace(global_step=step), None, model=policy)
        for a, b in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not all(torch.equal(a, b) for a, b in zip(ours.parameters(), policy.parameters())) or mixup == 1.0


def test_tr_dpo_reference_is_not_precomputed():
    """A moving reference's log-probs change during training: the plan runs it every step."""
    frozen = {q.leaf: q for q in _c("tr_dpo").plan.queries if q.model == "reference"}
    assert frozen and not any(q.precomputable for q in frozen.values())
    assert any(q.precomputable for q in _c("step_dpo").plan.queries if q.model == "reference")


# ======================================================================================
# 3. identities and structure
# ======================================================================================

IDENTITIES = [
    # (a, params_a, b, params_b, conditions)  — METHODS.md entry in the comment
    ("aot", {}, "dpo", {}, ("rows=1",)),                                          # P11: batch of 1 ⇒ DPO
    ("aot_unpaired", {"label_smoothing": 0.2}, "cdpo", {"label_smoothing": 0.2}, ("rows=1",)),  # P12
    ("ld_dpo", {"ld_alpha": 1.0}, "dpo", {}, ()),                                 # P20: α = 1 ⇒ DPO
    ("ld_dpo", {"ld_alpha": 0.2}, "dpo", {}, ("equal_lengths",)),                 # P20: equal lengths ⇒ DPO
    ("tdpo2", {"alpha": 0.0}, "dpo", {}, ()),                                     # P32: α = 0 ⇒ DPO
    ("beta_dpo", {"alpha": 0.0, "rho": 0.0}, "dpo", {}, ()),                      # P30: a = 0, ρ = 0 ⇒ DPO
    ("odpo", {"alpha": 0.0}, "dpo", {}, ()),                                      # P27: α = 0 ⇒ DPO
    ("cpo_hinge", {"cpo_alpha": 0.0}, "hinge", {}, ("reference_zero",)),          # P6 / R1: hinge without ℓ_ref
    ("tpo", {"tpo_alpha": 0.0, "beta": 0.3}, "cpo", {"cpo_alpha": 0.0, "beta": 0.3}, ()),   # I20
    ("tpo_l", {"tpo_alpha": 0.0}, "simpo", {"beta": 0.01, "gamma": 0.5}, ()),     # I20
]


@pytest.mark.parametrize("a,pa,b,pb,given_", IDENTITIES, ids=[f"{i[0]}~{i[2]}" for i in IDENTITIES])
def test_identity(a, pa, b, pb, given_):
    assert_equivalent(a, b, params_a=pa, params_b=pb, given=given_, examples=20)


def test_wpo_weights_are_constants_for_the_gradient():
    """P21: the weights are computed under no_grad, so the logits leaves get no gradient."""
    logits = [q for q in _c("wpo").plan.queries if q.output == "logits"]
    assert logits and all(q.model == "policy" and q.frozen for q in logits)


def test_tdpo2_alpha_one_differs_from_tdpo1_only_in_the_gradient():
    """P32: TDPO1 = TDPO2 with α = 1 and no stop-gradient: same value, different gradient
    (the chosen completion's policy logits get none in TDPO2)."""
    assert_equivalent("tdpo1", "tdpo2", params_b={"alpha": 1.0}, mode="value", examples=10)
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[True, True, False]])
    x = {f"mask({s})": mask for s in ("chosen", "rejected")}
    for s in ("chosen", "rejected"):
        for m in ("policy", "reference"):
            x[f"logprobs({m}, {s})"] = -torch.rand(1, 3, generator=gen, dtype=F64)
            x[f"logits({m}, {s})"] = torch.randn(1, 3, 5, generator=gen, dtype=F64)
    one, two = _c("tdpo1"), _c("tdpo2", {"alpha": 1.0})
    names = _trainable(one)
    (v1, g1), (v2, g2) = (loss_and_grads(lambda i, c=c: c.loss(i)[0], x, names) for c in (one, two))
    assert_close(v1, v2, rtol=1e-12)
    assert g2["logits(policy, chosen)"].abs().max() == 0 < g1["logits(policy, chosen)"].abs().max()
    assert_close(g1["logits(policy, rejected)"], g2["logits(policy, rejected)"], rtol=1e-12)


@pytest.mark.parametrize("method", ["cpo_hinge", "cpo_ipo"])
def test_label_smoothing_is_rejected_where_trl_rejects_it(method):
    with pytest.raises(ptdsl.SpecError) as err:
        ptdsl.compile(method, label_smoothing=0.1)
    assert "E0401" in str([d.code for d in err.value.diagnostics])


def test_headers():
    """Stability, family and paper of every method of the batch (see the report for why)."""
    from ptdsl.compiler import define

    experimental = {"odpo", "beta_dpo", "slic", "implicit_prm",
                    # demoted by the graduation audit (docs/stability.md#graduation): no identity or near-miss
                    "gpo_savage", "gpo_truncated_quadratic", "kto_pair", "orm",
                    "simper", "step_dpo", "tr_dpo", "wpo"}
    for name in MINE:
        m = define(name)
        assert m.name == name
        assert m.stability == ("experimental" if name in experimental else "stable"), name
        assert m.paper.startswith("arXiv:"), name
    assert define("orm").family == define("implicit_prm").family == "reward modelling"
    assert define("bco").family == "offline unpaired"
