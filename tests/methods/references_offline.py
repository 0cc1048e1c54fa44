"""Plain-torch references for the offline variants (DPO family, reference-free pairwise,
unpaired, reward model), written from /work/shared/METHODS.md (entry ids in each
docstring) and TRL 1.16's loss code paths, independently of the compiler.

Same conventions as references.py: inputs keyed by canonical leaf names, token tensors
aligned with a bool mask and garbage outside it (selected away with `torch.where`
before any arithmetic), float64, one scalar loss differentiable in the policy inputs.
Each function takes the method's params as keywords with its spec's defaults.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Inputs = dict[str, torch.Tensor]


def _sum(x: Inputs, model: str, s: str) -> torch.Tensor:
    m = x[f"mask({s})"]
    return torch.where(m, x[f"logprobs({model}, {s})"], torch.zeros(())).sum(-1)


def _len(x: Inputs, s: str) -> torch.Tensor:
    return x[f"mask({s})"].sum(-1).to(torch.float64)


def _h(x: Inputs, s: str) -> torch.Tensor:
    return _sum(x, "policy", s) - _sum(x, "reference", s)


def _nll(x: Inputs, s: str) -> torch.Tensor:
    """Token-mean NLL over every completion token of the batch (TRL's `sft` term, CPO's NLL)."""
    return -_sum(x, "policy", s).sum() / _len(x, s).sum()


def _smoothed(z: torch.Tensor, eps: float) -> torch.Tensor:
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def _margin(x: Inputs, beta: float) -> torch.Tensor:
    return beta * (_h(x, "chosen") - _h(x, "rejected"))


def robust_dpo(x, *, beta=0.1, label_smoothing=0.0):
    """P3: [(1−ε)(−log σ(z)) + ε log σ(−z)] / (1 − 2ε), z = βΔ."""
    z, e = _margin(x, beta), label_smoothing
    return (((1 - e) * -F.logsigmoid(z) + e * F.logsigmoid(-z)) / (1 - 2 * e)).mean()


def hinge(x, *, beta=0.1):
    """P6: relu(1 − βΔ)."""
    return torch.relu(1 - _margin(x, beta)).mean()


def sigmoid_norm(x, *, beta=0.1):
    """P16: −log σ(β(h_w/|y_w| − h_l/|y_l|)); TRL clamps each length at 1 (an empty completion's h is 0)."""
    def per_token(s):
        return _h(x, s) / _len(x, s).clamp(min=1)
    z = beta * (per_token("chosen") - per_token("rejected"))
    return -F.logsigmoid(z).mean()


def apo_zero(x, *, beta=0.1):
    """P13: (1 − σ(βh_w)) + σ(βh_l)."""
    return ((1 - torch.sigmoid(beta * _h(x, "chosen"))) + torch.sigmoid(beta * _h(x, "rejected"))).mean()


def apo_down(x, *, beta=0.1):
    """P14: σ(βh_w) + (1 − σ(β(h_w − h_l)))."""
    hw, hl = _h(x, "chosen"), _h(x, "rejected")
    return (torch.sigmoid(beta * hw) + 1 - torch.sigmoid(beta * (hw - hl))).mean()


def apo_zero_unpaired(x, *, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
    """U2: desirable λ_D(1 − σ(βh)), undesirable λ_U σ(βh); mean over all examples."""
    r = beta * _h(x, "completion")
    per = torch.where(x["label"], desirable_weight * (1 - torch.sigmoid(r)), undesirable_weight * torch.sigmoid(r))
    return per.mean()


def sppo_hard(x, *, beta=0.1):
    """P10: (h_w − 1/(2β))² + (h_l + 1/(2β))²."""
    return ((_h(x, "chosen") - 0.5 / beta) ** 2 + (_h(x, "rejected") + 0.5 / beta) ** 2).mean()


def cal_dpo(x, *, beta=0.002):
    """P29 in the authors' code form: mean(−log σ(h_w − h_l)) + ½[mean((h_w − 1/2β)²) + mean((h_l + 1/2β)²)]."""
    hw, hl = _h(x, "chosen"), _h(x, "rejected")
    t = 1 / (2 * beta)
    return -F.logsigmoid(hw - hl).mean() + 0.5 * (((hw - t) ** 2).mean() + ((hl + t) ** 2).mean())


def bco_pair(x, *, beta=0.1):
    """P9 (TRL 1.x): −log σ(βh_w) − log σ(−βh_l)."""
    return (-F.logsigmoid(beta * _h(x, "chosen")) - F.logsigmoid(-beta * _h(x, "rejected"))).mean()


def nca_pair(x, *, beta=0.1):
    """P8: a = βh_w, b = βh_l: −log σ(a) − ½ log σ(−a) − ½ log σ(−b)."""
    a, b = beta * _h(x, "chosen"), beta * _h(x, "rejected")
    return (-F.logsigmoid(a) - 0.5 * F.logsigmoid(-a) - 0.5 * F.logsigmoid(-b)).mean()


def exo_pair(x, *, beta=0.1, label_smoothing=0.001):
    """P7: KL(q ‖ p), q = (σ(z), σ(−z)), p = (1 − ε, ε), z = βΔ."""
    z, e = _margin(x, beta), label_smoothing
    kl = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-e)) + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(e))
    return kl.mean()


def dpop(x, *, beta=0.1, label_smoothing=0.0, dpop_lambda=50.0):
    """P28: z = β(Δ − λ·max(0, ℓ_ref(y_w) − ℓ_θ(y_w))), then the (smoothed) DPO loss."""
    # relu, whose derivative at 0 is 0: at π(y_w) = π_ref(y_w) the penalty is inactive (= DPO)
    penalty = torch.relu(_sum(x, "reference", "chosen") - _sum(x, "policy", "chosen"))
    z = beta * (_h(x, "chosen") - _h(x, "rejected") - dpop_lambda * penalty)
    return _smoothed(z, label_smoothing).mean()


def r_dpo(x, *, beta=0.1, label_smoothing=0.0, alpha=0.0):
    """P26: −log σ(βΔ + α(|y_w| − |y_l|))."""
    z = _margin(x, beta) + alpha * (_len(x, "chosen") - _len(x, "rejected"))
    return _smoothed(z, label_smoothing).mean()


def rpo(x, *, beta=0.1, label_smoothing=0.0, alpha=1.0):
    """P23: mean DPO loss + α · token-mean NLL of the chosen completions."""
    return _smoothed(_margin(x, beta), label_smoothing).mean() + alpha * _nll(x, "chosen")


def mpo(x, *, beta=0.1, label_smoothing=0.0, dpo_weight=0.8, bco_weight=0.2, sft_weight=1.0):
    """P25: w_p·DPO + w_q·bco_pair + w_g·NLL(chosen), each averaged over the batch separately."""
    return (dpo_weight * _smoothed(_margin(x, beta), label_smoothing).mean()
            + bco_weight * bco_pair(x, beta=beta) + sft_weight * _nll(x, "chosen"))


def cpo(x, *, beta=0.1, label_smoothing=0.0, cpo_alpha=1.0):
    """R1: smoothed logistic on βd, d = ℓ_θ(y_w) − ℓ_θ(y_l) (sums), + α·NLL(chosen)."""
    d = _sum(x, "policy", "chosen") - _sum(x, "policy", "rejected")
    return _smoothed(beta * d, label_smoothing).mean() + cpo_alpha * _nll(x, "chosen")


def _simpo_u(x, beta, gamma, alpha=0.0):
    def reward(s):
        mean = _sum(x, "policy", s) / _len(x, s)
        return mean if alpha == 0 else (1 - torch.exp(-alpha * mean)) / alpha   # R4: (1 − p^−α)/α
    return beta * (reward("chosen") - reward("rejected")) - gamma


def cpo_simpo(x, *, beta=0.1, gamma=0.5, label_smoothing=0.0, cpo_alpha=1.0):
    """R3: SimPO + α·NLL(chosen)."""
    return _smoothed(_simpo_u(x, beta, gamma), label_smoothing).mean() + cpo_alpha * _nll(x, "chosen")


def alphapo(x, *, beta=0.1, gamma=0.5, label_smoothing=0.0, alpha=0.0):
    """R4: SimPO on the reshaped reward r = (1 − exp(−α ℓ̄))/α (ℓ̄ itself at α = 0)."""
    return _smoothed(_simpo_u(x, beta, gamma, alpha), label_smoothing).mean()


def _fdpo(x, beta, score):
    return -F.logsigmoid(beta * (score(_h(x, "chosen")) - score(_h(x, "rejected")))).mean()


def fdpo_forward_kl(x, *, beta=0.1):
    """P17 (TRL 1.16 form): s = 1 − e^{−h}."""
    return _fdpo(x, beta, lambda h: 1 - torch.exp(-h))


def fdpo_js(x, *, beta=0.1):
    """P18: s = log 2 + log σ(h)."""
    return _fdpo(x, beta, lambda h: math.log(2) + F.logsigmoid(h))


def fdpo_alpha(x, *, beta=0.1, alpha=0.5):
    """P19 (TRL 1.x): s = (e^{(α−1)h} − 1)/(α − 1), exponent clamped at 80; s = h within 1e-6 of α = 1."""
    if abs(alpha - 1) < 1e-6:
        return _fdpo(x, beta, lambda h: h)
    return _fdpo(x, beta, lambda h: (torch.exp(torch.clamp((alpha - 1) * h, max=80)) - 1) / (alpha - 1))


def reward_model(x, *, center_rewards_coefficient=0.0):
    """M1/M3: −mean log σ(r_w − r_l) + η·mean((r_w + r_l)²)."""
    rw, rl = x["score(policy, chosen)"], x["score(policy, rejected)"]
    return -F.logsigmoid(rw - rl).mean() + center_rewards_coefficient * ((rw + rl) ** 2).mean()


def irpo(x, *, beta=0.1, label_smoothing=0.0, alpha=1.0):
    """P24: one iteration's loss is RPO's with α = 1."""
    return rpo(x, beta=beta, label_smoothing=label_smoothing, alpha=alpha)


def tpo(x, *, beta=0.01, label_smoothing=0.0, tpo_alpha=1.0):
    """R7: smoothed logistic on β(ℓ_θ(y_w) − ℓ_θ(y_l)) (sums) + α·NLL(gold)."""
    d = _sum(x, "policy", "chosen") - _sum(x, "policy", "rejected")
    gold = _nll(x, "gold") if tpo_alpha else 0.0
    return _smoothed(beta * d, label_smoothing).mean() + tpo_alpha * gold


def tpo_l(x, *, beta=0.01, label_smoothing=0.0, tpo_alpha=1.0, tpo_l_gamma=0.5):
    """R8: smoothed logistic on β·d̄ − γ (token means) + α·NLL(gold)."""
    gold = _nll(x, "gold") if tpo_alpha else 0.0
    return _smoothed(_simpo_u(x, beta, tpo_l_gamma), label_smoothing).mean() + tpo_alpha * gold
