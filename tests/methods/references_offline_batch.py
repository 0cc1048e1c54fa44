"""Plain-torch references for the "offline" batch of methods (DPO-family variants with
sorting, positions, full-vocabulary KL, running statistics and extra data columns;
reference-free and triple-data losses; unpaired classifiers and reward models).

Written from the formulas in /work/shared/METHODS.md (entry id in each docstring),
cross-checked against the authors' code where the entry says so, and independently of
the compiler. Same conventions as references.py: inputs keyed by canonical leaf names,
token tensors ``[rows, T]`` aligned with the bool ``mask(S)``, vocabulary tensors
``[rows, T, V]``, garbage (nan, ±1e30) in masked-out positions, selected away with
``torch.where`` *before* any arithmetic so that it reaches neither value nor gradient.
Each function returns a scalar loss and takes the method's params as keywords, with
the spec's defaults.

Notation (METHODS.md §0): ``ℓ(S)`` summed completion log-prob, ``ℓ̄(S)`` its token mean,
``h(S) = ℓ_θ(S) − ℓ_ref(S)``, ``Δ = h(y_w) − h(y_l)``, ``d = ℓ_θ(y_w) − ℓ_θ(y_l)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Inputs = dict[str, torch.Tensor]


# ---- building blocks -------------------------------------------------------------------


def _tokens(x: Inputs, model: str, s: str) -> torch.Tensor:
    """``logprobs(model, s)`` with masked-out positions set to exactly 0."""
    return torch.where(x[f"mask({s})"], x[f"logprobs({model}, {s})"], torch.zeros((), dtype=torch.float64))


def _sum(x: Inputs, model: str, s: str) -> torch.Tensor:
    return _tokens(x, model, s).sum(-1)


def _len(x: Inputs, s: str) -> torch.Tensor:
    return x[f"mask({s})"].sum(-1).to(torch.float64)


def _mean(x: Inputs, model: str, s: str) -> torch.Tensor:
    return _sum(x, model, s) / _len(x, s)


def _h(x: Inputs, s: str) -> torch.Tensor:
    return _sum(x, "policy", s) - _sum(x, "reference", s)


def _delta(x: Inputs) -> torch.Tensor:
    return _h(x, "chosen") - _h(x, "rejected")


def _nll(x: Inputs, s: str) -> torch.Tensor:
    """Token-mean NLL over every completion token of set ``s`` in the batch (TRL's `sft` term)."""
    return -_sum(x, "policy", s).sum() / _len(x, s).sum()


def _smoothed(z: torch.Tensor, eps: float) -> torch.Tensor:
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def _logits(x: Inputs, model: str, s: str) -> torch.Tensor:
    """``logits(model, s)`` ``[rows, T, V]`` with masked-out positions set to 0 (so that
    softmax there is finite and the discarded positions get an exactly-zero gradient)."""
    mask = x[f"mask({s})"].unsqueeze(-1)
    return torch.where(mask, x[f"logits({model}, {s})"], torch.zeros((), dtype=torch.float64))


# ---- P11, P12: AOT ----------------------------------------------------------------------


def aot(x, *, beta=0.1, label_smoothing=0.0):
    """P11: u = ℓ_θ(y_w) − ℓ_θ(y_l), v = ℓ_ref(y_w) − ℓ_ref(y_l), each sorted ascending over
    the batch; δ_(k) = u_(k) − v_(k); mean_k −(1−ε) log σ(βδ_(k)) − ε log σ(−βδ_(k))."""
    u = _sum(x, "policy", "chosen") - _sum(x, "policy", "rejected")
    v = _sum(x, "reference", "chosen") - _sum(x, "reference", "rejected")
    return _smoothed(beta * (torch.sort(u).values - torch.sort(v).values), label_smoothing).mean()


def aot_unpaired(x, *, beta=0.1, label_smoothing=0.0):
    """P12: h(y_w) and h(y_l) sorted over the batch independently; δ_(k) = h_w,(k) − h_l,(k);
    the smoothed logistic loss of P11."""
    delta = torch.sort(_h(x, "chosen")).values - torch.sort(_h(x, "rejected")).values
    return _smoothed(beta * delta, label_smoothing).mean()


# ---- P15: DiscoPOP ----------------------------------------------------------------------


def discopop(x, *, beta=0.1, discopop_tau=0.05):
    """P15: z = βΔ, w = σ(z/τ): (1 − w)·(−log σ(z)) + w·exp(−z)."""
    z = beta * _delta(x)
    w = torch.sigmoid(z / discopop_tau)
    return ((1 - w) * -F.logsigmoid(z) + w * torch.exp(-z)).mean()


# ---- P20: LD-DPO ------------------------------------------------------------------------


def _ld_logp(x: Inputs, model: str, s: str, shared: torch.Tensor, alpha: float) -> torch.Tensor:
    """ℓ̃(y) = Σ_{t ≤ l_p} ℓ(y_t) + α Σ_{t > l_p} ℓ(y_t), t the 1-based rank of a token among the
    row's valid tokens (TRL: the mask's cumulative sum), whatever columns hold them."""
    tokens = _tokens(x, model, s)
    index = x[f"mask({s})"].to(torch.float64).cumsum(-1)
    weight = torch.where(index <= shared[:, None], 1.0, alpha)
    return (weight * tokens).sum(-1)


def ld_dpo(x, *, beta=0.1, label_smoothing=0.0, ld_alpha=0.5):
    """P20: DPO on ℓ̃ for policy and reference, l_p = min(|y_w|, |y_l|) per pair."""
    shared = torch.minimum(_len(x, "chosen"), _len(x, "rejected"))

    def h(s):
        return _ld_logp(x, "policy", s, shared, ld_alpha) - _ld_logp(x, "reference", s, shared, ld_alpha)

    return _smoothed(beta * (h("chosen") - h("rejected")), label_smoothing).mean()


# ---- P21: WPO ---------------------------------------------------------------------------


def _wpo_weight(x: Inputs, s: str) -> torch.Tensor:
    """w(y) = exp( (1/|y|) Σ_t [ℓ_θ(y_t) − log Σ_v π_θ(v)²] ), no gradient;
    log Σ_v π² = logsumexp(2z) − 2·logsumexp(z) from the logits z (METHODS.md §12)."""
    with torch.no_grad():
        z = _logits(x, "policy", s)
        log_sum_sq = torch.logsumexp(2 * z, -1) - 2 * torch.logsumexp(z, -1)
        aligned = torch.where(x[f"mask({s})"], x[f"logprobs(policy, {s})"] - log_sum_sq, torch.zeros(()))
        return torch.exp(aligned.sum(-1) / _len(x, s))


def wpo(x, *, beta=0.1, label_smoothing=0.0):
    """P21: w(y_w)·w(y_l) · (smoothed) DPO loss per pair, batch mean."""
    per_pair = _smoothed(beta * _delta(x), label_smoothing)
    return (_wpo_weight(x, "chosen") * _wpo_weight(x, "rejected") * per_pair).mean()


# ---- P22, P33: same loss as DPO -------------------------------------------------------


def tr_dpo(x, *, beta=0.1, label_smoothing=0.0):
    """P22: the DPO loss −(1−ε) log σ(βΔ) − ε log σ(−βΔ); the moving reference is a runtime matter."""
    return _smoothed(beta * _delta(x), label_smoothing).mean()


def step_dpo(x, *, beta=0.1, label_smoothing=0.0):
    """P33: the DPO loss on step-level pairs: −(1−ε) log σ(βΔ) − ε log σ(−βΔ)."""
    return _smoothed(beta * _delta(x), label_smoothing).mean()


# ---- P27: ODPO --------------------------------------------------------------------------


def odpo(x, *, beta=0.1, alpha=1.0):
    """P27 (authors' code): −log σ(βΔ − α·log(score_w − score_l)); offset 0 where the gap is ≤ 0
    (the spec's documented guard)."""
    gap = x["score_chosen"] - x["score_rejected"]
    offset = torch.where(gap > 0, alpha * torch.log(torch.where(gap > 0, gap, torch.ones(()))), torch.zeros(()))
    return -F.logsigmoid(beta * _delta(x) - offset).mean()


# ---- P30: β-DPO: tests/methods/references_random.py (random filtering, moving averages) --


# ---- P31, P32: TDPO ---------------------------------------------------------------------


def _sequential_kl(x: Inputs, s: str) -> torch.Tensor:
    """D(y) = Σ_t m_t Σ_v π_ref(v) (log π_ref(v) − log π_θ(v)) from the logits."""
    ref = torch.log_softmax(_logits(x, "reference", s), -1)
    pol = torch.log_softmax(_logits(x, "policy", s), -1)
    per_token = (ref.exp() * (ref - pol)).sum(-1)
    return torch.where(x[f"mask({s})"], per_token, torch.zeros(())).sum(-1)


def tdpo1(x, *, beta=0.1):
    """P31: −log σ(β(Δ − (D(y_l) − D(y_w))))."""
    return -F.logsigmoid(beta * (_delta(x) - (_sequential_kl(x, "rejected") - _sequential_kl(x, "chosen")))).mean()


def tdpo2(x, *, beta=0.1, alpha=0.5):
    """P32: −log σ(β(Δ − α(D(y_l) − sg(D(y_w)))))."""
    gap = _sequential_kl(x, "rejected") - _sequential_kl(x, "chosen").detach()
    return -F.logsigmoid(beta * (_delta(x) - alpha * gap)).mean()


# ---- P35: KTO-pair ----------------------------------------------------------------------


def kto_pair(x, *, beta=0.1):
    """P35: z_w = max(0, mean h_w), z_l = max(0, mean h_l) (not detached; torch.clamp as in
    TRL 0.8); losses 1 − σ(β(h_w − z_l)) and 1 − σ(β(z_w − h_l)), mean over all 2N."""
    hw, hl = _h(x, "chosen"), _h(x, "rejected")
    zw, zl = hw.mean().clamp(min=0), hl.mean().clamp(min=0)
    losses = torch.cat([1 - torch.sigmoid(beta * (hw - zl)), 1 - torch.sigmoid(beta * (zw - hl))])
    return losses.mean()


# ---- P5: SLiC-HF ------------------------------------------------------------------------


def slic(x, *, delta=1.0, regularization_weight=0.5):
    """P5: max(0, δ − ℓ_θ(y_w) + ℓ_θ(y_l)) − λ·ℓ_θ(y_ref), y_ref = the chosen completion; batch mean."""
    lw, ll = _sum(x, "policy", "chosen"), _sum(x, "policy", "rejected")
    return (torch.relu(delta - lw + ll) - regularization_weight * lw).mean()


# ---- P34: GPO ---------------------------------------------------------------------------


def gpo_exp(x, *, beta=0.1):
    """P34, exponential: f(ρ) = e^{−ρ}, ρ = βΔ."""
    return torch.exp(-beta * _delta(x)).mean()


def gpo_truncated_quadratic(x, *, beta=0.1):
    """P34, truncated quadratic: f(ρ) = max(0, 1 − ρ)²."""
    return (torch.relu(1 - beta * _delta(x)) ** 2).mean()


def gpo_savage(x, *, beta=0.1):
    """P34, Savage: f(ρ) = 1 / (1 + e^ρ)²."""
    return (1 / (1 + torch.exp(beta * _delta(x))) ** 2).mean()


# ---- R6, R7, R8: SimPER, TPO, TPO-L (the tpo/tpo_l specs come from another batch; these
# references serve the TRL comparison in test_offline_batch.py) -----------------------------


def simper(x):
    """R6: −exp(ℓ̄_θ(y_w)) + exp(ℓ̄_θ(y_l)), batch mean."""
    return (-torch.exp(_mean(x, "policy", "chosen")) + torch.exp(_mean(x, "policy", "rejected"))).mean()


def tpo(x, *, beta=0.01, label_smoothing=0.0, tpo_alpha=1.0):
    """R7: mean[−(1−ε) log σ(βd) − ε log σ(−βd)] + α·NLL(gold), d on summed log-probs,
    NLL the token mean over all gold tokens."""
    d = _sum(x, "policy", "chosen") - _sum(x, "policy", "rejected")
    loss = _smoothed(beta * d, label_smoothing).mean()
    return loss + tpo_alpha * _nll(x, "gold") if tpo_alpha != 0 else loss


def tpo_l(x, *, beta=0.01, label_smoothing=0.0, tpo_alpha=1.0, tpo_l_gamma=0.5):
    """R8: smoothed logistic on β d̄ − γ (token-mean log-probs) + α·NLL(gold)."""
    u = beta * (_mean(x, "policy", "chosen") - _mean(x, "policy", "rejected")) - tpo_l_gamma
    loss = _smoothed(u, label_smoothing).mean()
    return loss + tpo_alpha * _nll(x, "gold") if tpo_alpha != 0 else loss


# ---- U3: BCO ----------------------------------------------------------------------------


def bco(x, *, beta=0.1, history=()):
    """U3 without UDM: ρ = β·h; δ = mean of every implicit reward seen so far (``history``, a list
    of earlier batches' ρ tensors, then this batch's), no gradient; desirable −log σ(ρ − δ),
    undesirable −log σ(−(ρ − δ)); mean over examples."""
    rho = beta * _h(x, "completion")
    seen = torch.cat([*(h.detach().reshape(-1) for h in history), rho.detach()])
    delta = seen.sum() / seen.numel()
    return torch.where(x["label"], -F.logsigmoid(rho - delta), -F.logsigmoid(-(rho - delta))).mean()


# ---- M4, M7: ORM, implicit PRM ----------------------------------------------------------


def _bce(logit: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """−[o log σ(r) + (1 − o) log(1 − σ(r))], batch mean (binary_cross_entropy_with_logits)."""
    return F.binary_cross_entropy_with_logits(logit, label.to(logit.dtype))


def orm(x):
    """M4: binary cross-entropy of the sequence score against the correctness label."""
    return _bce(x["score(policy, completion)"], x["label"])


def implicit_prm(x, *, beta=0.05):
    """M7 (CE objective): r = β·h(y); −[o log σ(r) + (1 − o) log(1 − σ(r))]."""
    return _bce(beta * _h(x, "completion"), x["label"])


# ---- R1 variants: CPO hinge and IPO -----------------------------------------------------


def cpo_hinge(x, *, beta=0.1, cpo_alpha=1.0):
    """R1, loss_type="hinge": relu(1 − βd), d on summed log-probs, + α·NLL(chosen)."""
    d = _sum(x, "policy", "chosen") - _sum(x, "policy", "rejected")
    return torch.relu(1 - beta * d).mean() + cpo_alpha * _nll(x, "chosen")


def cpo_ipo(x, *, beta=0.1, cpo_alpha=1.0):
    """R1, loss_type="ipo": (d̄ − 1/(2β))², d̄ on token-mean log-probs, + α·NLL(chosen)."""
    d = _mean(x, "policy", "chosen") - _mean(x, "policy", "rejected")
    return ((d - 1 / (2 * beta)) ** 2).mean() + cpo_alpha * _nll(x, "chosen")


METHODS = {fn.__name__: fn for fn in (
    aot, aot_unpaired, discopop, ld_dpo, wpo, tr_dpo, step_dpo, odpo, tdpo1, tdpo2, kto_pair, slic,
    gpo_exp, gpo_truncated_quadratic, gpo_savage, simper, tpo, tpo_l, bco, orm, implicit_prm, cpo_hinge, cpo_ipo)}
