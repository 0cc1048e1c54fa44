"""METHODS.md §11 identities as data, each property-tested through the engine, and
near-misses that must yield a counterexample.

An identity is method A with params X ≡ method B (or a weighted sum of methods) with
params Y, in value and/or gradient, under conditions that the input strategy draws by
construction (equivalence/conditions.py: `on_policy`, `length=L`, `reference_zero`, …).
Identities between methods whose rows are laid out differently (I12, I13, I22–I24) name a
layout adapter (equivalence/adapters.py): the preference side's inputs are drawn and the
other side's built from them, so both are differentiated with respect to the same tensors.
Not covered, and why:
  I23 (XPO with α = 0 ≡ online DPO on the (policy, reference) pair): XPO's pair is two one-sample
           rollouts chosen between by `where` on their rewards, online DPO's a pick from one rollout
           group; relating them needs rewards drawn consistently across the two, not a row layout.
  I8       DPO ≡ a reward model on r = β·h: the score leaves would have to be computed from
           log-prob leaves (an adapter again).
  I28, I36, I40  facts about advantages, KL estimators and ULD, not method-vs-method.
  I6 (TDPO1 at D = 0): needs logits drawn equal for policy and reference while their
           log-probs differ; TDPO2(α = 0) ≡ DPO and TDPO1 = TDPO2(α = 1) in value are covered.
  I37      kd is gkd with β = 0 by definition (`extends`); the β → 0 limit JSD_β/β → forward KL
           is ill-conditioned in float64 (the mixture's log cancels), so no tolerance holds it
           across inputs: at β = 1e-8 gradients differ by ~1e-5 relative.
  I7 (WPO with unit weights), I39 (SDPO, MiniLLM ≡ GRPO): no condition draws unit WPO
           weights; SDPO is not in the library and MiniLLM's reduction changes its data.

Re-parameterisations are not identities. A method that `extends` another and writes no formula
of its own (cdpo, step_dpo, tr_dpo, irpo, kd, two_grpo, reward_model_centered), or that extends
the same parent as another and writes the same formulas word for word (bnpo and dapo, I25;
gkd_lambda and gkd_on_policy), has the other's loss by construction: an equivalence test of the
two could not fail. They are declared in
REPARAMETERISATIONS, checked to be no more than that, and kept out of IDENTITIES (and of the
identity tables in tests/methods) by a test.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hypothesis import settings

import ptdsl
from ptdsl import library
from ptdsl.equivalence import Term, assert_equivalent, equivalent
from ptdsl.inspect.canon import structural_hashes
from ptdsl.syntax import ast
from ptdsl.syntax.parse import parse
from ptdsl.syntax.unparse import expr_text

EXAMPLES = max(60, settings().max_examples)  # 400 under HYPOTHESIS_PROFILE=slow
CHOSEN_NLL = Term("sft", sets={"completion": "chosen"})  # SFT on the chosen completions


@dataclass(frozen=True)
class Identity:
    id: str                  # METHODS.md §11 (or the entry the relation comes from)
    a: object                # a method name, a Term, or a tuple of Terms (summed)
    b: object
    params_a: dict = field(default_factory=dict)
    params_b: dict = field(default_factory=dict)
    mode: str = "value-and-gradient"
    condition: tuple[str, ...] = ()
    rtol: float = 1e-6
    note: str = ""
    adapter: str | None = None  # a layout adapter, when A and B read differently laid-out rows

    def check(self, **kwargs):
        return equivalent(self.a, self.b, params_a=self.params_a or None, params_b=self.params_b or None,
                          mode=self.mode, given=self.condition, rtol=self.rtol, adapter=self.adapter, **kwargs)


G = {"num_generations": 4}  # group size for the RL identities (they hold for any G)
BCO_DELTA_ZERO = str(Path(__file__).parent / "specs" / "bco_delta_zero.ptdsl")  # bco with δ ≡ 0 (I13)
# LiPO-λ on a list of 2 rated (1, 0): |G_1 − G_2| = 2¹ − 2⁰ = 1 and |1/D(1) − 1/D(2)| = 1/ln 2 − 1/ln 3
LIPO_PAIR_WEIGHT = 1 / math.log(2) - 1 / math.log(3)

IDENTITIES = [
    # ---- DPO family: reductions to DPO
    Identity("I1", "robust_dpo", "dpo", {"label_smoothing": 0}, note="robust DPO(ε = 0) ≡ DPO"),
    Identity("I2", "fdpo_alpha", "dpo", {"alpha": 1.0}, note="α-divergence at α = 1 falls back to DPO"),
    Identity("I2", "fdpo_alpha", "dpo", {"alpha": 1 + 5e-7}, note="TRL's fallback window |α − 1| < 1e-6"),
    Identity("I3", "fdpo_alpha", "fdpo_forward_kl", {"alpha": 0.0}, note="α = 0 is the forward KL"),
    Identity("I7", "dpop", "dpo", {"dpop_lambda": 0}, note="DPOP(λ = 0) ≡ DPO"),
    Identity("P28", "dpop", "dpo", condition=("reference_below_policy=chosen",),
             note="the DPOP penalty vanishes while π(y_w) > π_ref(y_w)"),
    Identity("I7", "r_dpo", "dpo", {"alpha": 0}, note="R-DPO(α = 0) ≡ DPO"),
    Identity("I7", "rpo", "dpo", {"alpha": 0}, note="DPO + 0·SFT ≡ DPO"),
    Identity("I7", "mpo", "dpo", {"dpo_weight": 1, "bco_weight": 0, "sft_weight": 0}, note="MPO with weights (1, 0, 0)"),
    Identity("I4", "ld_dpo", "dpo", {"ld_alpha": 1.0}, note="LD-DPO(α = 1) ≡ DPO"),
    Identity("I4", "ld_dpo", "dpo", condition=("equal_lengths",), note="LD-DPO ≡ DPO for any α at |y_w| = |y_l|"),
    Identity("I5", "aot", "dpo", condition=("rows=1",), note="AOT on a batch of one ≡ DPO (sorting one value)"),
    Identity("I5", "aot_unpaired", "dpo", condition=("rows=1",), note="AOT-unpaired on a batch of one ≡ DPO"),
    Identity("I5", "aot", "cdpo", {"label_smoothing": 0.2}, {"label_smoothing": 0.2}, condition=("rows=1",),
             note="AOT(ε) on a batch of one ≡ cDPO(ε)"),
    Identity("I6", "tdpo2", "dpo", {"alpha": 0}, note="TDPO2(α = 0) ≡ DPO"),
    Identity("I6", "tdpo1", "tdpo2", {}, {"alpha": 1.0}, mode="value",
             note="TDPO1 = TDPO2(α = 1) in value; TDPO2's stop-gradient changes only the gradient"),
    Identity("I7", "odpo", "dpo", {"alpha": 0}, note="ODPO with offset 0 ≡ DPO"),
    Identity("I7", "beta_dpo", "dpo", {"alpha": 0, "rho": 0}, note="β-DPO(α = 0, no filtering) ≡ DPO"),
    Identity("I9", "hinge", Term("slic", {"delta": 10.0, "regularization_weight": 0}, 0.1), condition=("reference_zero",),
             note="hinge(β) = β·SLiC(δ = 1/β, λ = 0) on the margin"),
    Identity("I10", "sigmoid_norm", "dpo", {}, {"beta": 0.1 / 3}, condition=("length=3",),
             note="LN-DPO with every completion of length L ≡ DPO with β/L"),
    Identity("I11", "cal_dpo", (Term("dpo", {"beta": 1.0}), Term("sppo_hard", {"beta": 0.002}, 0.5)),
             note="Cal-DPO(β) ≡ DPO(β = 1) + ½·SPPO-hard(β) (the authors' code; METHODS.md omits the ½)"),
    Identity("P15", "discopop", (Term("dpo", weight=0.5), Term("gpo_exp", weight=0.5)), {"discopop_tau": 1e9},
             note="DiscoPOP blends logistic and exponential by σ(z/τ): as τ → ∞, ½·DPO + ½·GPO-exp (limit)"),
    Identity("I14", "kto", "apo_zero_unpaired", condition=("reference_equals_policy=mismatched(completion)",),
             note="KTO with its reference point z0 = 0 ≡ APO-zero-unpaired"),
    Identity("I15", "mpo", (Term("dpo", weight=0.8), Term("bco_pair", weight=0.2), CHOSEN_NLL),
             note="MPO ≡ 0.8·DPO + 0.2·BCO-pair + 1.0·SFT(chosen), each batch-averaged"),
    Identity("P23", "rpo", (Term("dpo"), Term("sft", weight=0.005, sets={"completion": "chosen"})),
             {"alpha": 0.005}, note="RPO ≡ DPO + η·SFT(chosen)"),
    Identity("I15", "irpo", (Term("dpo"), CHOSEN_NLL), note="IRPO ≡ RPO with η = 1 ≡ DPO + SFT(chosen)"),
    # ---- reference-free family
    Identity("I16", "cpo", "dpo", {"cpo_alpha": 0}, condition=("reference_zero",),
             note="CPO(α = 0) ≡ DPO with ℓ_ref ≡ 0"),
    Identity("I16", "cpo", "cdpo", {"cpo_alpha": 0, "label_smoothing": 0.2}, {"label_smoothing": 0.2},
             condition=("reference_zero",), note="… with the same label smoothing"),
    Identity("I16", "cpo_ipo", "ipo", {"cpo_alpha": 0}, condition=("reference_zero",),
             note="CPO-IPO(α = 0) ≡ IPO with ℓ_ref ≡ 0 (both divide by the lengths)"),
    Identity("I17", "simpo", "sigmoid_norm", {"gamma": 0}, condition=("reference_zero",),
             note="SimPO(γ = 0) ≡ LN-DPO with ℓ_ref ≡ 0"),
    Identity("I18", "cpo_simpo", "simpo", {"cpo_alpha": 0}, note="CPO-SimPO(α = 0) ≡ SimPO"),
    Identity("R3", "cpo_simpo", (Term("simpo"), Term("sft", weight=0.3, sets={"completion": "chosen"})),
             {"cpo_alpha": 0.3}, note="CPO-SimPO ≡ SimPO + α·SFT(chosen)"),
    Identity("I18", "alphapo", "simpo", {"alpha": 0}, note="AlphaPO(α = 0) ≡ SimPO"),
    Identity("I19", "alphapo", "simpo", {"alpha": 1e-7}, rtol=1e-5, note="AlphaPO → SimPO as α → 0 (limit)"),
    Identity("I20", "tpo", "cpo", {"tpo_alpha": 0}, {"cpo_alpha": 0, "beta": 0.01},
             note="TPO(α = 0) ≡ CPO(α = 0) at the same β"),
    Identity("I20", "tpo_l", "simpo", {"tpo_alpha": 0}, {"beta": 0.01, "gamma": 0.5},
             note="TPO-L(α = 0) ≡ SimPO with γ = tpo_l_gamma"),
    Identity("I21", "orpo", CHOSEN_NLL, {"beta": 0}, note="ORPO(λ = 0) ≡ SFT on the chosen completions"),
    # ---- group-relative RL (TRL GRPOTrainer semantics, one process, no accumulation)
    Identity("I25", "grpo", "bnpo", G, G, condition=("equal_lengths",), note="equal lengths: grpo ≡ bnpo"),
    Identity("I25", "grpo", "dapo", G, {**G, "epsilon_high": 0.2}, condition=("equal_lengths",),
             note="equal lengths: grpo ≡ dapo"),
    Identity("I25", "grpo", "dr_grpo", G, {**G, "scale_rewards": True, "max_completion_length": 3},
             condition=("length=3",), note="every completion of length L_max: grpo ≡ dr_grpo"),
    Identity("I26", "dr_grpo", "grpo", {**G, "max_completion_length": 3}, {**G, "scale_rewards": False},
             condition=("length=3",), note="Dr. GRPO = GRPO without std scaling and length normalisation"),
    Identity("I27", "rloo", Term("dr_grpo", {"num_generations": 2, "max_completion_length": 4}, 2 / 1 * 4),
             {"beta": 0}, mode="gradient", condition=("on_policy",),
             note="on-policy, β = 0: ∇L_RLOO = G/(G−1)·L_max·∇L_DrGRPO"),
    Identity("I27", "rloo", Term("reinforce", G, 4 / 3), {**G, "beta": 0}, mode="gradient", condition=("on_policy",),
             note="on-policy, β = 0: RLOO's leave-one-out advantage is G/(G−1) times REINFORCE's group-mean one"),
    Identity("O7", "rebel", Term("rloo", {"num_generations": 2, "beta": 0}, 4.0), {"beta": 0}, mode="gradient",
             condition=("on_policy",),
             note="on-policy, β = 0: REBEL's gradient −(2/η)·Δr·(∇ℓ(y) − ∇ℓ(y′)) is 4/η times RLOO's on the pair"),
    Identity("G23", "opo", Term("reinforce", G, 1 / 3), G, mode="gradient", condition=("on_policy", "length=3"),
             note="on-policy, every length L: OPO's length-weighted baseline is the group mean, its token mean 1/L of "
                  "REINFORCE's sequence sum"),
    Identity("G13", "lite_ppo", "bnpo", G, G, condition=("rows=1",),
             note="one prompt's group: Lite PPO's batch std is the group std, so it is BNPO"),
    Identity("G13", "lite_ppo", "bnpo", {**G, "scale_rewards": False}, {**G, "scale_rewards": False},
             note="without std scaling Lite PPO is BNPO (group-mean baseline, batch token mean)"),
    Identity("I29", "gspo", "grpo", G, G, condition=("on_policy",), note="on-policy GSPO ≡ GRPO"),
    Identity("I30", "gspo_token", "gspo", G, G, note="GSPO-token ≡ GSPO for sequence-level advantages, any ratio"),
    Identity("I35", "grpo_delta", "grpo", G, G,
             note="the δ = 4 cap never binds: every drawn ratio is below e^0.4 (old within 0.4 of the policy)"),
    Identity("I31", "gmpo", "grpo", G, G, condition=("on_policy",), note="on-policy GMPO ≡ GRPO"),
    Identity("I32", "sapo", "grpo", G, G, mode="gradient", condition=("on_policy",),
             note="on-policy, SAPO's gate has slope 1: same gradient as GRPO"),
    Identity("I33", "cispo", "dapo", {**G, "epsilon_high": 5.0}, G, mode="gradient", condition=("on_policy",),
             note="on-policy with cap ≥ 1: CISPO's gradient = DAPO's"),
    Identity("I33", "vespo", "cispo", G, {**G, "epsilon_high": 5.0}, condition=("on_policy",),
             note="on-policy, φ(1) = 1: VESPO's per-token loss is CISPO's −A·ℓ_θ"),
    Identity("I34", "luspo", Term("dr_grpo", {**G, "scale_rewards": True, "max_completion_length": 4}, 4.0), G,
             mode="gradient", condition=("on_policy",),
             note="on-policy LUSPO: gradient of −(1/B) Σ A_i ℓ_θ(y_i) (= L_max·Dr.GRPO with group-scaled A)"),
    # ---- distillation
    Identity("I37", Term("gkd_on_policy", sets={"completion": "y"}), "opd", {"beta": 1.0},
             note="GKD(λ = 1, β = 1) ≡ DistillationTrainer(β = 1) on the same student samples, temperature 1"),
    Identity("I37", Term("gkd", sets={"completion": "y"}), "opd", {}, {"beta": 0.5},
             note="on the same completions GKD's JSD_β is the distillation loss at the same β (λ only picks them)"),
    Identity("I37", Term("kd", sets={"completion": "y"}), "opd", {}, {"beta": 0.0},
             note="β = 0: KD's forward KL is the distillation loss's on the same completions"),
    Identity("I37", Term("gkd_lambda", sets={"completion": "y"}), "opd", {}, {"beta": 0.5},
             note="GKD with on-policy mixing: the same JSD_β on whichever completions λ picks"),
    Identity("D2", "seqkd", Term("sft", sets={"completion": "y"}),
             note="SeqKD ≡ SFT on the teacher's samples (METHODS.md D2: generate with the teacher, then SFT)"),
    # ---- reward models
    Identity("M5", "prm_last_step", "prm", condition=("length=1",),
             note="solutions of one step: the last step is every step"),
    Identity("I38", "iw_opd", "opd_sampled", {"iw_opd_gamma": 0},
             note="IW-OPD(γ = 0) ≡ sampled-token reverse-KL policy gradient"),
    # ---- across row layouts (adapters.py)
    Identity("I12", "apo_zero", Term("apo_zero_unpaired", weight=2.0), adapter="paired-to-unpaired",
             note="APO-zero on N pairs ≡ 2 × APO-zero-unpaired on the 2N stacked completions (λ_D = λ_U = 1)"),
    Identity("I13", "bco_pair", Term(BCO_DELTA_ZERO, weight=2.0), adapter="paired-to-unpaired",
             note="TRL 1.x bco_pair ≡ 2 × BCO-unpaired with δ ≡ 0 on the 2N stacked completions"),
    Identity("I22", "pro", "simpo", {"beta": 0}, {"beta": 1.0, "gamma": 0}, adapter="paired-to-ranked",
             note="PRO on lists of 2, no SFT term ≡ −log σ(ℓ̄_w − ℓ̄_l) = SimPO(β = 1, γ = 0)"),
    Identity("I22", "lipo", Term("dpo", weight=LIPO_PAIR_WEIGHT), adapter="paired-to-ranked",
             note="LiPO-λ on lists of 2 rated (1, 0) ≡ (1/ln 2 − 1/ln 3)·DPO, its constant Lambda weight"),
    Identity("I22", "infonca", "dpo", {"alpha": 1e-3}, adapter="paired-to-ranked",
             note="InfoNCA on lists of 2 with a one-hot target (α = 1e-3: e^(−1/α) = 0 in float64) ≡ DPO"),
    Identity("I23", "online_dpo", "dpo", adapter="paired-to-picks",
             note="online DPO on an already-ranked pair (best, worst) ≡ offline DPO on it"),
    Identity("I23", "online_ipo", "ipo", condition=("length=1",), adapter="paired-to-picks",
             note="online IPO ≡ offline IPO on a ranked pair of one-token completions (only the latter "
                  "divides by the lengths)"),
    Identity("I24", "spin", "dpo", adapter="paired-to-sample",
             note="SPIN ≡ DPO with chosen = the dataset completion, rejected = the π_t sample, reference = π_t"),
]


@dataclass(frozen=True)
class NearMiss:
    name: str
    identity: Identity
    holds_when: str = ""     # what the shrunk counterexample must show


NEAR_MISSES = [
    NearMiss("dpo-vs-ipo", Identity("", "dpo", "ipo")),
    NearMiss("cdpo0.1-vs-dpo", Identity("", "cdpo", "dpo")),
    NearMiss("grpo-vs-dapo-ragged", Identity("", "grpo", "dapo", G, {**G, "epsilon_high": 0.2}), "ragged"),
    NearMiss("sigmoid_norm-vs-dpo-without-length-3", Identity("", "sigmoid_norm", "dpo", {}, {"beta": 0.1 / 3}),
             "some-length-not-3"),
    NearMiss("aot-vs-dpo-batch", Identity("", "aot", "dpo"), "several-rows"),
    NearMiss("ld_dpo-vs-dpo-ragged", Identity("", "ld_dpo", "dpo"), "ragged"),
    NearMiss("kto-vs-apo_zero_unpaired", Identity("", "kto", "apo_zero_unpaired")),
    NearMiss("dpop-vs-dpo", Identity("", "dpop", "dpo"), "chosen-below-reference"),
    NearMiss("sapo-vs-grpo-value", Identity("", "sapo", "grpo", G, G, mode="value", condition=("on_policy",))),
    NearMiss("cispo-vs-dapo-value", Identity("", "cispo", "dapo", {**G, "epsilon_high": 5.0}, G, mode="value",
                                             condition=("on_policy",))),
    NearMiss("gspo-vs-grpo-off-policy", Identity("", "gspo", "grpo", G, G, condition=("off_policy",))),
    NearMiss("lite_ppo-vs-bnpo-several-groups", Identity("", "lite_ppo", "bnpo", G, G), "several-groups"),
    NearMiss("prm_last_step-vs-prm-several-steps", Identity("", "prm_last_step", "prm"), "some-length-not-1"),
    NearMiss("alphapo0.25-vs-simpo", Identity("", "alphapo", "simpo", {"alpha": 0.25})),
    NearMiss("tdpo1-vs-tdpo2-alpha-1-gradient", Identity("", "tdpo1", "tdpo2", {}, {"alpha": 1.0}, mode="gradient")),
    # TRL's optional margin column shifts the margin: only a non-zero margin separates the two
    NearMiss("reward_model_margin-vs-reward_model", Identity("", "reward_model_margin", "reward_model"),
             "margin-nonzero"),
    NearMiss("reward_model_margin-vs-reward_model_centered",
             Identity("", "reward_model_margin", "reward_model_centered", {"center_rewards_coefficient": 0.01}),
             "margin-nonzero"),
    NearMiss("cal_dpo-vs-methods-md-form", Identity("", "cal_dpo", (Term("dpo", {"beta": 1.0}),
                                                                     Term("sppo_hard", {"beta": 0.002})))),
    # the layout identities with a factor broken: each must fail
    NearMiss("apo_zero-vs-unpaired-without-factor-2", Identity("", "apo_zero", "apo_zero_unpaired",
                                                               adapter="paired-to-unpaired")),
    NearMiss("bco_pair-vs-bco-delta-zero-without-factor-2", Identity("", "bco_pair", BCO_DELTA_ZERO,
                                                                     adapter="paired-to-unpaired")),
    NearMiss("bco_pair-vs-2-bco-running-delta", Identity("", "bco_pair", Term("bco", weight=2.0),
                                                         adapter="paired-to-unpaired")),
    NearMiss("pro-vs-simpo-beta-2", Identity("", "pro", "simpo", {"beta": 0}, {"beta": 2.0, "gamma": 0},
                                             adapter="paired-to-ranked")),
    NearMiss("lipo-vs-dpo-unit-weight", Identity("", "lipo", "dpo", adapter="paired-to-ranked")),
    NearMiss("infonca-soft-target-vs-dpo", Identity("", "infonca", "dpo", adapter="paired-to-ranked")),
    NearMiss("online_ipo-vs-ipo-longer", Identity("", "online_ipo", "ipo", adapter="paired-to-picks"),
             "some-length-not-1"),
    NearMiss("online_dpo-vs-dpo-other-beta", Identity("", "online_dpo", "dpo", {}, {"beta": 0.2},
                                                      adapter="paired-to-picks")),
    NearMiss("spin-vs-dpo-other-beta", Identity("", "spin", "dpo", {}, {"beta": 0.2}, adapter="paired-to-sample")),
]


def _id(i: Identity) -> str:
    return f"{i.id}-{i.a if isinstance(i.a, str) else i.a.method}"


@pytest.mark.parametrize("identity", IDENTITIES, ids=[f"{k}-{_id(i)}" for k, i in enumerate(IDENTITIES)])
def test_identity_holds(identity):
    assert_equivalent(identity.a, identity.b, params_a=identity.params_a or None,
                      params_b=identity.params_b or None, mode=identity.mode, given=identity.condition,
                      rtol=identity.rtol, examples=EXAMPLES, adapter=identity.adapter)


def test_at_least_25_identities():
    assert len(IDENTITIES) >= 25 and len({(i.id, i.note) for i in IDENTITIES}) == len(IDENTITIES)


def _lengths(x, s):
    return x[f"mask({s})"].sum(-1).tolist()


@pytest.mark.parametrize("miss", NEAR_MISSES, ids=[m.name for m in NEAR_MISSES])
def test_near_miss_has_a_counterexample(miss):
    r = miss.identity.check(examples=EXAMPLES)
    assert not r.passed and r.counterexample is not None, r.render()
    x = r.counterexample.inputs
    if miss.holds_when == "ragged":  # with equal lengths these agree, so the shrunk example is ragged
        sets = [n[5:-1] for n in x if n.startswith("mask(")]
        assert len({n for s in sets for n in _lengths(x, s)}) > 1, r.render()
    if miss.holds_when == "some-length-not-3":
        assert any(n != 3 for s in ("chosen", "rejected") for n in _lengths(x, s)), r.render()
    if miss.holds_when == "some-length-not-1":  # online IPO's unnormalised margin; PRM's earlier steps
        sets = [n[5:-1] for n in x if n.startswith("mask(")]
        assert any(n != 1 for s in sets for n in _lengths(x, s)), r.render()
    if miss.holds_when == "several-groups":  # with one group the batch std is the group std
        assert x["mask(y)"].shape[0] > miss.identity.params_a["num_generations"], r.render()
    if miss.holds_when == "margin-nonzero":
        assert (x["margin"] != 0).any(), r.render()
    if miss.holds_when == "several-rows":
        assert x["mask(chosen)"].shape[0] > 1, r.render()
    if miss.holds_when == "chosen-below-reference":
        m = x["mask(chosen)"]
        gap = torch.where(m, x["logprobs(reference, chosen)"] - x["logprobs(policy, chosen)"], 0.0).sum(-1)
        assert (gap >= 0).any(), r.render()
    assert "counterexample (shrunk by hypothesis)" in r.render()


# ---- re-parameterisations: declared, not counted as identities -------------------------


@dataclass(frozen=True)
class Reparameterisation:
    child: str
    parent: str
    params_parent: dict   # the parent's params that make it the child (at the child's defaults)
    what: str


REPARAMETERISATIONS = [
    Reparameterisation("cdpo", "dpo", {"label_smoothing": 0.1}, "DPO with label smoothing 0.1 (cDPO)"),
    Reparameterisation("step_dpo", "dpo", {}, "DPO's loss on step-level pairs: the data differs, not the loss"),
    Reparameterisation("tr_dpo", "dpo", {}, "DPO's loss; only the reference moves (a role option)"),
    Reparameterisation("ppo_critic", "ppo", {}, "PPO's loss; the values come from a separate critic (a role)"),
    Reparameterisation("irpo", "rpo", {"alpha": 1.0}, "RPO with η = 1: one iteration's loss"),
    Reparameterisation("kd", "gkd", {"beta": 0.0}, "GKD with β = 0, the forward KL (I37)"),
    Reparameterisation("two_grpo", "grpo", {"num_generations": 2}, "GRPO with two samples per prompt (G14)"),
    Reparameterisation("reward_model_centered", "reward_model", {"center_rewards_coefficient": 0.01},
                       "the Bradley–Terry reward model with η = 0.01"),
    Reparameterisation("gkd_lambda", "gkd_on_policy", {},
                       "GKD on the batch's completions; only the rollout's on-policy mixing differs"),
    Reparameterisation("bnpo", "dapo", {"epsilon_high": 0.2},
                       "GRPO's surrogate with a batch token mean (I25); DAPO adds clip-higher and masks truncations"),
]


@functools.lru_cache(maxsize=None)
def _spec(name: str) -> ast.SpecFile:
    path = library.find(name)
    return parse(path.read_text(), str(path))


def _own_formulas(name: str) -> dict[str, str]:
    """The `let`s and the `loss` a spec file writes itself, as text."""
    return {("loss" if isinstance(st, ast.LossDecl) else st.name): expr_text(st.expr)
            for st in _spec(name).statements if isinstance(st, (ast.LetDecl, ast.LossDecl))}


def _extends(name: str) -> str | None:
    return _spec(name).statements[0].extends


def _loss_hash(name: str, params: dict) -> str:
    g = ptdsl.compile(name, **params).graph
    return structural_hashes(g)[g.graph["loss"]]


def _declares_nothing(a: str, b: str) -> bool:
    """`a` has `b`'s loss by construction: it extends `b` writing no formula, or it extends
    `b`'s parent and writes the formulas `b` writes, word for word."""
    parent = _extends(a)
    if parent == b:
        return not _own_formulas(a)
    return parent is not None and parent == _extends(b) and _own_formulas(a) == _own_formulas(b)


@pytest.mark.parametrize("r", REPARAMETERISATIONS, ids=[r.child for r in REPARAMETERISATIONS])
def test_reparameterisation_adds_no_formula(r):
    """The declaration holds: no formula of its own, and the parent's optimised loss graph."""
    assert _declares_nothing(r.child, r.parent), f"{r.child} writes a formula: test it as an identity"
    assert _loss_hash(r.child, {}) == _loss_hash(r.parent, r.params_parent)


def _identity_tables():
    from tests.methods import test_offline_batch, test_online_batch
    yield from ((i.a, i.b) for i in IDENTITIES)
    yield from ((i[0], i[2]) for i in test_offline_batch.IDENTITIES)
    yield from ((i[0], i[2]) for i in test_online_batch.IDENTITIES)


def test_no_identity_is_a_reparameterisation():
    pairs = [(a, b) for a, b in _identity_tables() if isinstance(a, str) and isinstance(b, str)]
    assert len(pairs) > 30
    trivial = [(a, b) for a, b in pairs if _declares_nothing(a, b) or _declares_nothing(b, a)]
    assert trivial == [], "holds by construction: declare it in REPARAMETERISATIONS"


def test_every_reparameterisation_in_the_library_is_declared():
    """A new spec that extends another without a formula of its own, or repeats a sibling's
    formulas, is declared above (siblings that both write nothing follow from their parent)."""
    names = library.all_names()
    found = {(a, _extends(a)) for a in names if _extends(a) and not _own_formulas(a)}
    found |= {tuple(sorted((a, b))) for a in names for b in names
              if a < b and _own_formulas(a) and _declares_nothing(a, b)}
    declared = {(r.child, r.parent) if _extends(r.child) == r.parent else tuple(sorted((r.child, r.parent)))
                for r in REPARAMETERISATIONS}
    assert found == declared
