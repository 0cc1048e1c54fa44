"""Plain-torch references for the "online" batch of methods: REINFORCE-style estimators,
PPO with a value head, GRPOTrainer variants and squared-regression methods.

Written from the formulas of /work/shared/METHODS.md (entry ids in each docstring), from
the semantics of TRL 1.16's GRPOTrainer where TRL has the method, and from the named
reference implementations otherwise (verl core_algos, TRL 1.10-dev trainers), never from
the ptdsl specs. They are meant to be read: explicit Python loops over groups and
tokens where a formula is a recursion, no fused tricks.

Conventions (as references.py / references_online.py): rows of a rollout are P prompts
× n samples in contiguous groups; token tensors are [rows, T] with garbage outside
`mask(y)`, which is selected away with torch.where before any arithmetic; float64.
Notation: m mask, ℓ_θ = logprobs(policy, y), ℓ_old = logprobs(old, y), ℓ_ref =
logprobs(reference, y), R = r(y), ρ = exp(ℓ_θ − ℓ_old), k3 = e^{ℓ_ref−ℓ_θ} − (ℓ_ref − ℓ_θ) − 1,
"std" is Bessel-corrected (n − 1).
"""
from __future__ import annotations

import math

import torch

Inputs = dict[str, torch.Tensor]

# ----------------------------------------------------------------------------------------
# Small building blocks
# ----------------------------------------------------------------------------------------


def _zero(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=x.dtype)


def _tok(x: Inputs, key: str) -> torch.Tensor:
    """A token tensor with exactly 0 outside mask(y)."""
    t = x[key]
    return torch.where(x["mask(y)"], t, _zero(t))


def _lp(x: Inputs, model: str) -> torch.Tensor:
    return _tok(x, f"logprobs({model}, y)")


def _seq_sum(x: Inputs, t: torch.Tensor) -> torch.Tensor:
    return torch.where(x["mask(y)"], t, _zero(t)).sum(-1)


def _seq_mean(x: Inputs, t: torch.Tensor) -> torch.Tensor:
    return _seq_sum(x, t) / x["mask(y)"].sum(-1)


def _batch_token_mean(x: Inputs, t: torch.Tensor) -> torch.Tensor:
    """Σ m t / Σ m over the batch; a batch without tokens has mean 0 (TRL clamps the count at 1)."""
    m = x["mask(y)"]
    return torch.where(m, t, _zero(t)).sum() / m.sum().clamp(min=1)


def _lengths(x: Inputs) -> torch.Tensor:
    return x["mask(y)"].sum(-1).to(x["logprobs(policy, y)"].dtype)


def _groups(v: torch.Tensor, n: int) -> torch.Tensor:
    return v.reshape(-1, n)


def _group_mean(v: torch.Tensor, n: int) -> torch.Tensor:
    g = _groups(v, n)
    return (g.sum(1, keepdim=True) / n).expand(-1, n).reshape(-1)


def _group_std(v: torch.Tensor, n: int) -> torch.Tensor:
    g = _groups(v, n)
    mu = g.sum(1, keepdim=True) / n
    return torch.sqrt(((g - mu) ** 2).sum(1, keepdim=True) / (n - 1)).expand(-1, n).reshape(-1)


def _batch_std(v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(((v - v.mean()) ** 2).sum() / (v.numel() - 1))


def _group_z(v: torch.Tensor, n: int) -> torch.Tensor:
    """8.0 step 3: (R − mean_group) / (std_group + 1e-4)."""
    return (v - _group_mean(v, n)) / (_group_std(v, n) + 1e-4)


def _ratio(x: Inputs) -> torch.Tensor:
    return torch.exp(_lp(x, "policy") - _lp(x, "old"))


def _k3(x: Inputs) -> torch.Tensor:
    d = _lp(x, "reference") - _lp(x, "policy")
    return torch.exp(d) - d - 1


def _ppo_clip(ratio, adv, lo, hi):
    """Per token −min(ρA, clip(ρ, lo, hi)A)."""
    return -torch.minimum(ratio * adv, torch.clamp(ratio, lo, hi) * adv)


def _whiten_tokens(x: Inputs, t: torch.Tensor) -> torch.Tensor:
    """(t − mean)/sqrt(var + 1e-8) over the batch's valid tokens, unbiased var (verl/TRL
    masked_whiten). A single valid token has variance 0 (TRL divides 0 by 0 there), so it
    whitens to 0. Values outside the mask are irrelevant (callers mask them)."""
    valid = t[x["mask(y)"]]
    mean = valid.sum() / valid.numel()
    if valid.numel() == 1:
        return t - mean
    var = ((valid - mean) ** 2).sum() / (valid.numel() - 1)
    return (t - mean) / torch.sqrt(var + 1e-8)


def _last_token(x: Inputs) -> torch.Tensor:
    """[rows, T] bool: the last valid token of each row (masks are left-aligned runs)."""
    m = x["mask(y)"]
    last = m.sum(-1) - 1
    return torch.arange(m.shape[1])[None, :] == last[:, None]


def _reverse_discounted(x: Inputs, r: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = Σ_{s ≥ t, s valid} γ^{s−t} r_s, by an explicit loop per row."""
    m = x["mask(y)"]
    rows = []
    for i in range(r.shape[0]):
        length = int(m[i].sum())
        running = _zero(r)
        col = [_zero(r)] * r.shape[1]
        for t in range(length - 1, -1, -1):
            running = r[i, t] + gamma * running
            col[t] = running
        rows.append(torch.stack(col))
    return torch.stack(rows)


def _gae(x: Inputs, rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """G2: δ_t = r_t + γ V_{t+1} − V_t (V = 0 after the last valid token), Â_t = δ_t + γλ Â_{t+1}."""
    m = x["mask(y)"]
    rows = []
    for i in range(rewards.shape[0]):
        length = int(m[i].sum())
        col = [_zero(rewards)] * rewards.shape[1]
        following = _zero(rewards)
        for t in range(length - 1, -1, -1):
            next_value = values[i, t + 1] if t + 1 < length else _zero(rewards)
            delta = rewards[i, t] + gamma * next_value - values[i, t]
            following = delta + gamma * lam * following
            col[t] = following
        rows.append(torch.stack(col))
    return torch.stack(rows)


# ----------------------------------------------------------------------------------------
# G1, G6, G22, G23 — REINFORCE with baselines
# ----------------------------------------------------------------------------------------


def reinforce(x: Inputs, *, n: int, beta: float = 0.0) -> torch.Tensor:
    """G1: R' = R − β Σ_t (ℓ_old − ℓ_ref); A = R' − mean_group R'; L = mean_i −A_i Σ_t ℓ_θ."""
    shaped = x["r(y)"] - beta * _seq_sum(x, _lp(x, "old") - _lp(x, "reference"))
    adv = shaped - _group_mean(shaped, n)
    return (-adv * _seq_sum(x, _lp(x, "policy"))).mean()


def remax(x: Inputs, *, n: int = 1) -> torch.Tensor:
    """G6: A = R(y) − R(ŷ_greedy) (the greedy answer to the same prompt); L = mean −A Σ_t ℓ_θ."""
    baseline = x["r(greedy)"].repeat_interleave(n)
    adv = x["r(y)"] - baseline
    return (-adv * _seq_sum(x, _lp(x, "policy"))).mean()


def gpg(x: Inputs, *, n: int) -> torch.Tensor:
    """G22 (paper α): A_i = α (R_i − mean_group R) with α = B/(B − M), M = samples of groups whose
    rewards are all equal (their A is 0); L = Σ_{i,t} m (−A_i ℓ_θ) / Σ m."""
    r = x["r(y)"]
    g = _groups(r, n)
    all_equal = (g == g[:, :1]).all(1, keepdim=True).expand(-1, n).reshape(-1)
    B, M = r.numel(), int(all_equal.sum())
    if B == M:
        adv = torch.zeros_like(r)
    else:
        adv = torch.where(all_equal, _zero(r), (r - _group_mean(r, n)) * B / (B - M))
    return _batch_token_mean(x, -adv[:, None] * _lp(x, "policy"))


def opo(x: Inputs, *, n: int) -> torch.Tensor:
    """G23: b = Σ_group |o_j| R_j / Σ_group |o_j|; A = R − b; on-policy surrogate ρA, token mean."""
    r, lengths = x["r(y)"], _lengths(x)
    b = ((_groups(lengths * r, n).sum(1)) / _groups(lengths, n).sum(1).clamp(min=1)).repeat_interleave(n)
    adv = (r - b)[:, None]
    return _batch_token_mean(x, -adv * _ratio(x))


# ----------------------------------------------------------------------------------------
# G7, G8 — REINFORCE++
# ----------------------------------------------------------------------------------------


def reinforce_pp(x: Inputs, *, beta: float = 0.001, gamma: float = 1.0, epsilon: float = 0.2,
                 epsilon_high: float = 0.2) -> torch.Tensor:
    """G7: r_t = 1[t = last]·R − β(ℓ_old − ℓ_ref)_t; G_t = Σ_{s≥t} γ^{s−t} r_s; A = whiten(G) over the
    batch's tokens; L = Σ m · −min(ρA, clip(ρ)A) / Σ m."""
    last = _last_token(x)
    r_tok = torch.where(last, x["r(y)"][:, None], _zero(x["r(y)"])) - beta * (_lp(x, "old") - _lp(x, "reference"))
    returns = _reverse_discounted(x, r_tok, gamma)
    adv = _whiten_tokens(x, returns)
    return _batch_token_mean(x, _ppo_clip(_ratio(x), adv, 1 - epsilon, 1 + epsilon_high))


def reinforce_pp_baseline(x: Inputs, *, n: int, beta: float = 0.001, epsilon: float = 0.2,
                          epsilon_high: float = 0.2) -> torch.Tensor:
    """G8 (verl): S = R − β Σ_t(ℓ_old − ℓ_ref); Ã = S − mean_group S, on every token of its
    sequence; A = whiten(Ã) over the batch's tokens; the G7 clipped surrogate, token mean."""
    shaped = x["r(y)"] - beta * _seq_sum(x, _lp(x, "old") - _lp(x, "reference"))
    centred = (shaped - _group_mean(shaped, n))[:, None].expand_as(x["logprobs(policy, y)"])
    adv = _whiten_tokens(x, centred)
    return _batch_token_mean(x, _ppo_clip(_ratio(x), adv, 1 - epsilon, 1 + epsilon_high))


# ----------------------------------------------------------------------------------------
# GRPOTrainer variants: G13, G14, G16, G21, G24, G27, G29, k1 variant
# ----------------------------------------------------------------------------------------


def _grpo_token_loss(x, adv, beta, epsilon, epsilon_high, kl=None):
    """8.0 steps 5 and 7: −min(ρA, clip(ρ)A) + β ρ KL (KL defaults to k3)."""
    ratio = _ratio(x)
    kl = _k3(x) if kl is None else kl
    return _ppo_clip(ratio, adv[:, None], 1 - epsilon, 1 + epsilon_high) + beta * ratio * kl


def lite_ppo(x: Inputs, *, n: int, beta: float = 0.0, epsilon: float = 0.2, epsilon_high: float = 0.2) -> torch.Tensor:
    """G13: A = (R − mean_group R)/(std_batch(R) + 1e-4); GRPO surrogate; token mean over the batch."""
    r = x["r(y)"]
    adv = (r - _group_mean(r, n)) / (_batch_std(r) + 1e-4)
    return _batch_token_mean(x, _grpo_token_loss(x, adv, beta, epsilon, epsilon_high))


def two_grpo(x: Inputs, *, beta: float = 0.0, epsilon: float = 0.2, epsilon_high: float = 0.2) -> torch.Tensor:
    """G14: GRPO (per-sequence token mean, then mean) with groups of two."""
    adv = _group_z(x["r(y)"], 2)
    return _seq_mean(x, _grpo_token_loss(x, adv, beta, epsilon, epsilon_high)).mean()


def grpo_delta(x: Inputs, *, n: int, delta: float = 4.0, beta: float = 0.0, epsilon: float = 0.2,
               epsilon_high: float = 0.2) -> torch.Tensor:
    """G29: −min(min(ρ, δ)A, clip(ρ)A) + β ρ k3 (uncapped ρ in the KL); GRPO aggregation."""
    adv = _group_z(x["r(y)"], n)[:, None]
    ratio = _ratio(x)
    per = -torch.minimum(torch.clamp(ratio, max=delta) * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high) * adv)
    return _seq_mean(x, per + beta * ratio * _k3(x)).mean()


def grpo_k1(x: Inputs, *, n: int, beta: float = 0.04, epsilon: float = 0.2, epsilon_high: float = 0.2) -> torch.Tensor:
    """Variant of G9: the KL term is β ρ k1 with k1 = ℓ_θ − ℓ_ref; GRPO aggregation."""
    k1 = _lp(x, "policy") - _lp(x, "reference")
    adv = _group_z(x["r(y)"], n)
    return _seq_mean(x, _grpo_token_loss(x, adv, beta, epsilon, epsilon_high, kl=k1)).mean()


def gspo_token(x: Inputs, *, n: int, beta: float = 0.0, epsilon: float = 3e-4,
               epsilon_high: float = 4e-4) -> torch.Tensor:
    """G16: s_i = exp(mean_t log ρ); s_{i,t} = sg(s_i)·exp(ℓ_θ − sg ℓ_θ); −min(s_{i,t}A, clip(s_{i,t})A)
    + β k3 (plain, as TRL 1.10-dev); per-sequence token mean, then mean."""
    pol = _lp(x, "policy")
    s = torch.exp(_seq_mean(x, pol - _lp(x, "old"))).detach()
    s_tok = s[:, None] * torch.exp(pol - pol.detach())
    adv = _group_z(x["r(y)"], n)[:, None]
    per = _ppo_clip(s_tok, adv, 1 - epsilon, 1 + epsilon_high) + beta * _k3(x)
    return _seq_mean(x, per).mean()


def vespo(x: Inputs, *, n: int, beta: float = 0.0, k_pos: float = 2.0, lambda_pos: float = 3.0,
          k_neg: float = 3.0, lambda_neg: float = 2.0) -> torch.Tensor:
    """G21: log W = clamp(Σ_t clamp(log ρ_t, ±20), log 1e-8, 20); φ = sg(W^k e^{λ(1−W)}) with (k, λ)
    by sign(A) (A ≥ 0: pos); per token −φ A ℓ_θ + β ρ k3; token mean over the batch."""
    adv = _group_z(x["r(y)"], n)
    log_ratio = _lp(x, "policy") - _lp(x, "old")
    log_w = torch.clamp(_seq_sum(x, torch.clamp(log_ratio, -20.0, 20.0)), math.log(1e-8), 20.0)
    w = torch.exp(log_w)
    nonneg = adv >= 0
    k = torch.where(nonneg, torch.tensor(k_pos, dtype=w.dtype), torch.tensor(k_neg, dtype=w.dtype))
    lam = torch.where(nonneg, torch.tensor(lambda_pos, dtype=w.dtype), torch.tensor(lambda_neg, dtype=w.dtype))
    phi = (w ** k * torch.exp(lam * (1 - w))).detach()
    per = -phi[:, None] * adv[:, None] * _lp(x, "policy") + beta * _ratio(x) * _k3(x)
    return _batch_token_mean(x, per)


def gdpo(x: Inputs, *, n: int, correct_weight: float = 1.0, format_weight: float = 1.0, beta: float = 0.0,
         epsilon: float = 0.2, epsilon_high: float = 0.2) -> torch.Tensor:
    """G24: A_k = group z-score of each reward; A = Σ_k w_k A_k; Â = (A − mean_batch)/(std_batch + 1e-4);
    GRPO surrogate and aggregation."""
    combined = correct_weight * _group_z(x["correct(y)"], n) + format_weight * _group_z(x["format(y)"], n)
    adv = (combined - combined.mean()) / (_batch_std(combined) + 1e-4)
    return _seq_mean(x, _grpo_token_loss(x, adv, beta, epsilon, epsilon_high)).mean()


def entropy_8020(x: Inputs, *, n: int, rho: float = 0.2, beta: float = 0.0, epsilon: float = 0.2,
                 epsilon_high: float = 0.28) -> torch.Tensor:
    """G27 on DAPO: keep the policy term where H_t ≥ quantile_{1−ρ}(H over the batch's valid tokens)
    (linear interpolation); + β ρ k3 everywhere; token mean over all valid tokens."""
    h = x["entropy(policy, y)"]
    threshold = torch.quantile(h[x["mask(y)"]], 1 - rho)
    keep = h >= threshold
    adv = _group_z(x["r(y)"], n)[:, None]
    ratio = _ratio(x)
    policy_term = torch.where(keep, _ppo_clip(ratio, adv, 1 - epsilon, 1 + epsilon_high), _zero(ratio))
    return _batch_token_mean(x, policy_term + beta * ratio * _k3(x))


# ----------------------------------------------------------------------------------------
# G2, G4 — PPO with a value head
# ----------------------------------------------------------------------------------------


def _ppo_parts(x, kl_coef, k3_kl, gamma, lam):
    ref_log_ratio = _lp(x, "reference") - _lp(x, "old")
    kl = (torch.exp(ref_log_ratio) - 1) - ref_log_ratio if k3_kl else -ref_log_ratio
    score = torch.where(_last_token(x), x["rm(y)"][:, None], _zero(x["rm(y)"]))
    old_values = _tok(x, "values(old(value), y)")
    advantages = _gae(x, score - kl_coef * kl, old_values, gamma, lam)
    returns = advantages + old_values
    return _whiten_tokens(x, advantages), returns, old_values


def _value_loss(x, returns, old_values, cliprange_value):
    v = _tok(x, "values(value, y)")
    v_clipped = torch.clamp(v, old_values - cliprange_value, old_values + cliprange_value)
    return 0.5 * _batch_token_mean(x, torch.maximum((v - returns) ** 2, (v_clipped - returns) ** 2))


def ppo(x: Inputs, *, kl_coef: float = 0.05, k3_kl: bool = False, cliprange: float = 0.2,
        cliprange_value: float = 0.2, vf_coef: float = 0.1, gamma: float = 1.0, lam: float = 0.95,
        dual_clip_c: float | None = None) -> torch.Tensor:
    """G2 (TRL 1.10-dev PPOTrainer, textbook reward placement): r_t = −c_KL·kl_t (k1: ℓ_old − ℓ_ref;
    k3: (e^{ℓ_ref−ℓ_old} − 1) − (ℓ_ref − ℓ_old)) + score at the last token; GAE; returns = Â + V_old;
    Â whitened over tokens; L_pg = token mean max(−Âρ, −Â clip(ρ)); L_vf = ½ token mean
    max((V − G)², (clip(V, V_old ± ε_v) − G)²); L = L_pg + c_vf L_vf.
    G4 (dual_clip_c = c): where Â < 0 the policy term is min(that max, −c Â)."""
    adv, returns, old_values = _ppo_parts(x, kl_coef, k3_kl, gamma, lam)
    ratio = _ratio(x)
    pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - cliprange, 1 + cliprange))
    if dual_clip_c is not None:
        pg = torch.where(adv < 0, torch.minimum(pg, -adv * dual_clip_c), pg)
    return _batch_token_mean(x, pg) + vf_coef * _value_loss(x, returns, old_values, cliprange_value)


def ppo_critic(x: Inputs, **kw) -> torch.Tensor:
    """ppo with a separate critic: the formula is G2's; only the network behind V changes."""
    return ppo(x, **kw)


def dual_clip_ppo(x: Inputs, *, clip_ratio_c: float = 3.0, **kw) -> torch.Tensor:
    """G4: PPO whose negative-advantage tokens have their clipped loss capped at −c·A."""
    return ppo(x, dual_clip_c=clip_ratio_c, **kw)


# ----------------------------------------------------------------------------------------
# G35, O7 — squared regression onto rewards
# ----------------------------------------------------------------------------------------


def kimi_k15(x: Inputs, *, n: int, tau: float = 0.01, length_penalty: float = 0.0) -> torch.Tensor:
    """G35: L = mean_i (R'_i − mean_group R' − τ Σ_t(ℓ_θ − ℓ_ref))², R' = R + w·len_reward,
    len_reward = λ if R ≥ 1 else min(0, λ), λ = 0.5 − (|y| − min_g|y|)/(max_g|y| − min_g|y|)
    (0 when a group's lengths are all equal)."""
    r, lengths = x["r(y)"], _lengths(x)
    gl = _groups(lengths, n)
    lo = gl.min(1, keepdim=True).values.expand(-1, n).reshape(-1)
    hi = gl.max(1, keepdim=True).values.expand(-1, n).reshape(-1)
    lam = torch.zeros_like(r)
    for i in range(r.numel()):
        if hi[i] > lo[i]:
            lam[i] = 0.5 - (lengths[i] - lo[i]) / (hi[i] - lo[i])
    length_reward = torch.where(r >= 1, lam, torch.clamp(lam, max=0.0))
    shaped = r + length_penalty * length_reward
    log_ratio = _seq_sum(x, _lp(x, "policy") - _lp(x, "reference"))
    return ((shaped - _group_mean(shaped, n) - tau * log_ratio) ** 2).mean()


def rebel(x: Inputs, *, eta: float = 1.0, beta: float = 0.05) -> torch.Tensor:
    """O7: pairs (y, y′) = the two samples of a prompt; R' = R − β Σ_t(ℓ_old − ℓ_ref);
    h = Σ_t(ℓ_θ − ℓ_old); L = mean over pairs ((h(y) − h(y′))/η − (R'(y) − R'(y′)))²."""
    shaped = x["r(y)"] - beta * _seq_sum(x, _lp(x, "old") - _lp(x, "reference"))
    h = _seq_sum(x, _lp(x, "policy") - _lp(x, "old"))
    hp, rp = _groups(h, 2), _groups(shaped, 2)
    pair = (hp[:, 0] - hp[:, 1]) / eta - (rp[:, 0] - rp[:, 1])
    return (pair ** 2).mean()
