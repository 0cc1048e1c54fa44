"""Plain-torch references for the "distill" batch: online preference (METHODS.md §7),
distillation (§9) and reward modelling (§10), written from the METHODS.md formulas,
independently of the compiler and of the spec files.

Conventions as references.py: inputs keyed by canonical leaf names; token tensors
`[rows, tokens]` and vocabulary tensors `[rows, tokens, vocab]` aligned with a bool
`mask(S)`, holding garbage (NaN, ±1e30) outside it, which is selected away with
`torch.where` before any arithmetic; float64; one scalar loss. Each function takes the
method's params as keywords, defaulting to the values METHODS.md / TRL give.
Distributions: p_S = softmax(student logits), p_T = softmax(teacher logits), the logits as
given (for a rollout the runtime gives them at the sampling temperature).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Inputs = dict[str, torch.Tensor]


# --- helpers --------------------------------------------------------------------------


def _clean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x with every position outside the mask set to 0 (vocabulary tensors: whole rows)."""
    m = mask if x.dim() == mask.dim() else mask[..., None]
    return torch.where(m, x, torch.zeros((), dtype=x.dtype))


def _tokens(x: Inputs, model: str, s: str) -> torch.Tensor:
    return _clean(x[f"logprobs({model}, {s})"], x[f"mask({s})"])


def _seq_logp(x: Inputs, model: str, s: str) -> torch.Tensor:
    """ℓ(y) = Σ_t m_t ℓ(y_t)."""
    return _tokens(x, model, s).sum(-1)


def _log_ratio(x: Inputs, s: str) -> torch.Tensor:
    """h(y) = ℓ_θ(y) − ℓ_ref(y)."""
    return _seq_logp(x, "policy", s) - _seq_logp(x, "reference", s)


def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_{i,t} m v / Σ_{i,t} m over the whole batch."""
    return _clean(values, mask).sum() / mask.sum()


def _log_dists(x: Inputs, s: str):
    """(log p_S, log p_T) over the vocabulary at each token of set s."""
    m = x[f"mask({s})"]
    student = _clean(x[f"logits(policy, {s})"], m)
    teacher = _clean(x[f"logits(teacher, {s})"], m)
    return torch.log_softmax(student, -1), torch.log_softmax(teacher, -1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ_v p (log p − log q), per token."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _generalised_jsd(log_s: torch.Tensor, log_t: torch.Tensor, beta: float) -> torch.Tensor:
    """§9: JSD_β = β KL(p_T ‖ M) + (1 − β) KL(p_S ‖ M), M = β p_T + (1 − β) p_S; TRL's special
    cases β = 0 → KL(p_T ‖ p_S) and β = 1 → KL(p_S ‖ p_T)."""
    if beta == 0:
        return _kl(log_t, log_s)
    if beta == 1:
        return _kl(log_s, log_t)
    log_m = torch.log(beta * log_t.exp() + (1 - beta) * log_s.exp())
    return beta * _kl(log_t, log_m) + (1 - beta) * _kl(log_s, log_m)


# --- online preference (§7) -----------------------------------------------------------


def _picked_margin(x: Inputs) -> torch.Tensor:
    """Δ = h(best) − h(worst) on the pair picked from a prompt's two samples."""
    return _log_ratio(x, "best(y, r)") - _log_ratio(x, "worst(y, r)")


def online_dpo(x: Inputs, *, beta: float = 0.1) -> torch.Tensor:
    """O1 (TRL OnlineDPOConfig loss_type="sigmoid"): mean −log σ(β Δ), Δ on summed log-probs
    of the chosen (best-scored) and rejected (worst-scored) samples."""
    return (-F.logsigmoid(beta * _picked_margin(x))).mean()


def online_ipo(x: Inputs, *, beta: float = 0.1) -> torch.Tensor:
    """O1 with loss_type="ipo": mean (Δ − 1/(2β))², Δ unnormalised (summed log-probs)."""
    return ((_picked_margin(x) - 1 / (2 * beta)) ** 2).mean()


def xpo(x: Inputs, *, beta: float = 0.1, alpha: float = 1e-5) -> torch.Tensor:
    """O2: y ~ π_θ, ỹ ~ π_ref; chosen = y iff r(y) ≥ r(ỹ); mean[−log σ(β Δ) + α ℓ_θ(ỹ)]."""
    policy_wins = x["r(y)"] >= x["r(y_ref)"]
    h_policy, h_reference = _log_ratio(x, "y"), _log_ratio(x, "y_ref")
    chosen = torch.where(policy_wins, h_policy, h_reference)
    rejected = torch.where(policy_wins, h_reference, h_policy)
    return (-F.logsigmoid(beta * (chosen - rejected)) + alpha * _seq_logp(x, "policy", "y_ref")).mean()


def spin(x: Inputs, *, beta: float = 0.1) -> torch.Tensor:
    """O6: −log σ(λ h(y) − λ h(y′)), y the dataset completion, y′ a sample of π_t (the
    reference); batch mean."""
    return (-F.logsigmoid(beta * (_log_ratio(x, "completion") - _log_ratio(x, "y")))).mean()


# --- distillation (§9) ----------------------------------------------------------------


def kd(x: Inputs) -> torch.Tensor:
    """D1 (GKDConfig(lmbda=0, beta=0)): token mean of KL(p_T ‖ p_S) on dataset completions."""
    log_s, log_t = _log_dists(x, "completion")
    return _token_mean(_kl(log_t, log_s), x["mask(completion)"])


def gkd(x: Inputs, *, beta: float = 0.5) -> torch.Tensor:
    """D3 (λ = 0): token mean of JSD_β(p_T ‖ p_S) at T = 1 on dataset completions."""
    log_s, log_t = _log_dists(x, "completion")
    return _token_mean(_generalised_jsd(log_s, log_t, beta), x["mask(completion)"])


def gkd_on_policy(x: Inputs, *, beta: float = 0.5) -> torch.Tensor:
    """D3 with λ = 1: the same divergence on student samples y."""
    log_s, log_t = _log_dists(x, "y")
    return _token_mean(_generalised_jsd(log_s, log_t, beta), x["mask(y)"])


def gkd_lambda(x: Inputs, *, beta: float = 0.5) -> torch.Tensor:
    """D3 with 0 < λ < 1: a micro-batch's completions y are the student's samples (with
    probability λ) or the dataset's; the loss is the same divergence on whichever y holds."""
    log_s, log_t = _log_dists(x, "y")
    return _token_mean(_generalised_jsd(log_s, log_t, beta), x["mask(y)"])


def opd(x: Inputs, *, beta: float = 1.0) -> torch.Tensor:
    """D4 (DistillationConfig(beta=1)): token mean of KL(p_S ‖ p_T) (JSD_β for other β) on
    student samples (the logits given are already at the sampling temperature)."""
    log_s, log_t = _log_dists(x, "y")
    return _token_mean(_generalised_jsd(log_s, log_t, beta), x["mask(y)"])


def opd_sampled(x: Inputs) -> torch.Tensor:
    """D4 (sampled-token form) / I38: per token sg(ℓ_S − ℓ_T) · ℓ_S, token mean."""
    student, teacher = _tokens(x, "policy", "y"), _tokens(x, "teacher", "y")
    return _token_mean((student - teacher).detach() * student, x["mask(y)"])


def iw_opd(x: Inputs, *, iw_opd_gamma: float = 0.5) -> torch.Tensor:
    """D9: a_t = sg(ℓ_T − ℓ_S); w_t = 1 + γ(1 − P_<t / max(P, 1e-8)), P_<t = Σ_{s<t}|a_s|
    (a forward cumulative sum here), P = Σ_s |a_s|; token mean of −ℓ_S · w_t · a_t."""
    m = x["mask(y)"]
    student, teacher = _tokens(x, "policy", "y"), _tokens(x, "teacher", "y")
    a = (teacher - student).detach()
    magnitude = a.abs()
    prefix = torch.cumsum(magnitude, dim=1) - magnitude
    total = magnitude.sum(1, keepdim=True).clamp_min(1e-8)
    weight = 1 + iw_opd_gamma * (1 - prefix / total)
    return _token_mean(-student * weight * a, m)


def _discounted_suffix(values: torch.Tensor, gamma: float) -> torch.Tensor:
    """Σ_{s≥t} γ^{s−t} v_s along the last axis, as one matrix product (γ^0 = 1)."""
    width = values.shape[-1]
    t = torch.arange(width)
    power = (t[None, :] - t[:, None]).to(values.dtype)  # [t, s] = s − t
    kernel = torch.where(power >= 0, torch.tensor(gamma, dtype=values.dtype) ** power.clamp(min=0),
                         torch.zeros((), dtype=values.dtype))
    return values @ kernel.T


def minillm(x: Inputs, *, epsilon: float = 0.2, epsilon_high: float = 0.2, gamma: float = 0.0,
            length_normalization: bool = True, single_step_decomposition: bool = True,
            detach_advantage: bool = False) -> torch.Tensor:
    """D5 (TRL 1.10-dev, default reward constant ⇒ GRPO advantage 0): ρ_s = ℓ_T − ℓ_S;
    A_t = Σ_{s≥t} γ^{s−t} ρ_s / Σ_{s≥t} γ^{s−t} m_s (γ > 0; γ = 0 ⇒ A_t = ρ_t);
    token mean of −min(r A, clip(r, 1−ε, 1+ε_high) A), r = exp(ℓ_S − ℓ_old); plus the token
    mean of the full-vocabulary KL(p_S ‖ p_T)."""
    m = x["mask(y)"]
    student, teacher, old = (_tokens(x, model, "y") for model in ("policy", "teacher", "old"))
    rho = teacher - student
    if gamma > 0:
        advantage = _discounted_suffix(rho, gamma)
        if length_normalization:
            horizon = _discounted_suffix(m.to(rho.dtype), gamma)
            advantage = advantage / torch.where(m, horizon, torch.ones((), dtype=rho.dtype))
    else:
        advantage = rho
    if detach_advantage:
        advantage = advantage.detach()
    ratio = torch.exp(student - old)
    surrogate = -torch.minimum(ratio * advantage, torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high) * advantage)
    loss = _token_mean(surrogate, m)
    if single_step_decomposition:
        log_s, log_t = _log_dists(x, "y")
        loss = loss + _token_mean(_kl(log_s, log_t), m)
    return loss


def distillm(x: Inputs, *, alpha: float = 0.1, reverse: bool = False) -> torch.Tensor:
    """D6: skew KL KL(p_T ‖ α p_T + (1−α) p_S), or (reverse) KL(p_S ‖ α p_S + (1−α) p_T),
    per dataset completion token, token mean."""
    log_s, log_t = _log_dists(x, "completion")
    p_s, p_t = log_s.exp(), log_t.exp()
    if reverse:
        divergence = _kl(log_s, torch.log(alpha * p_s + (1 - alpha) * p_t))
    else:
        divergence = _kl(log_t, torch.log(alpha * p_t + (1 - alpha) * p_s))
    return _token_mean(divergence, x["mask(completion)"])


def seqkd(x: Inputs) -> torch.Tensor:
    """D2: S1's token-mean NLL on the teacher's decoded answers y."""
    return -_tokens(x, "policy", "y").sum() / x["mask(y)"].sum()


# --- reward modelling (§10) -----------------------------------------------------------


def reward_model_margin(x: Inputs, *, center_rewards_coefficient: float = 0.0) -> torch.Tensor:
    """M2 (+ optional M3 term): mean −log σ(r_w − r_l − m) + η mean (r_w + r_l)²."""
    rw, rl = x["score(policy, chosen)"], x["score(policy, rejected)"]
    return (-F.logsigmoid(rw - rl - x["margin"])).mean() + center_rewards_coefficient * ((rw + rl) ** 2).mean()


def reward_model_centered(x: Inputs, *, center_rewards_coefficient: float = 0.01) -> torch.Tensor:
    """M3 on M1: mean −log σ(r_w − r_l) + η mean (r_w + r_l)², η = 0.01."""
    rw, rl = x["score(policy, chosen)"], x["score(policy, rejected)"]
    return (-F.logsigmoid(rw - rl)).mean() + center_rewards_coefficient * ((rw + rl) ** 2).mean()


METHODS = {f.__name__: f for f in (online_dpo, online_ipo, xpo, spin, kd, gkd, gkd_on_policy, gkd_lambda, opd,
                                   opd_sampled, iw_opd, minillm, distillm, seqkd, reward_model_margin,
                                   reward_model_centered)}
