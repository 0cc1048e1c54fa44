"""Plain-torch references for the online RL variants (TRL GRPOTrainer loss types and
experimental trainers, RLOOTrainer), written from /work/shared/METHODS.md §8 and TRL
1.16's `_compute_loss`, independently of the compiler. Conventions as references.py:
rows are P prompts × n samples in contiguous groups; token tensors carry garbage
outside `mask(y)`; float64.
"""
from __future__ import annotations

import torch

Inputs = dict[str, torch.Tensor]


def _tok(x: Inputs, model: str) -> torch.Tensor:
    return torch.where(x["mask(y)"], x[f"logprobs({model}, y)"], torch.zeros(()))


def _adv(r: torch.Tensor, n: int, scale: bool = True) -> torch.Tensor:
    """8.0 step 3: A = (R − mean_group) / (Bessel std_group + 1e-4), or centred only."""
    g = r.reshape(-1, n)
    c = g - g.mean(1, keepdim=True)
    if scale:
        c = c / (torch.sqrt((c ** 2).sum(1, keepdim=True) / (n - 1)) + 1e-4)
    return c.reshape(-1)


def _k3(x: Inputs) -> torch.Tensor:
    d = _tok(x, "reference") - _tok(x, "policy")
    return torch.exp(d) - d - 1


def _seq_mean(x: Inputs, t: torch.Tensor) -> torch.Tensor:
    """Per-sequence token mean; an empty completion's is 0 (TRL clamps the length at 1)."""
    m = x["mask(y)"]
    return torch.where(m, t, torch.zeros(())).sum(-1) / m.sum(-1).clamp(min=1)


def _token_mean(x: Inputs, t: torch.Tensor) -> torch.Tensor:
    m = x["mask(y)"]
    return torch.where(m, t, torch.zeros(())).sum() / m.sum()


def _token_surrogate(x, n, beta, epsilon, epsilon_high):
    a = _adv(x["r(y)"], n)[:, None]
    r = torch.exp(_tok(x, "policy") - _tok(x, "old"))
    return -torch.minimum(r * a, torch.clamp(r, 1 - epsilon, 1 + epsilon_high) * a) + beta * r * _k3(x)


def bnpo(x, *, n, beta=0.0, epsilon=0.2, epsilon_high=0.2):
    """G12: the GRPO surrogate, Σ_{i,t} m l / Σ_{i,t} m over the batch."""
    return _token_mean(x, _token_surrogate(x, n, beta, epsilon, epsilon_high))


def _sequence_ratio(x):
    return torch.exp(_seq_mean(x, _tok(x, "policy") - _tok(x, "old")))


def gspo(x, *, n, beta=0.0, epsilon=3e-4, epsilon_high=4e-4):
    """G15: s_i = exp(mean_t log r); −min(s A, clip(s) A) + β s mean_t k3; mean over sequences.
    A completion without tokens adds 0 (TRL multiplies the loss by the mask before its token mean)."""
    a, s = _adv(x["r(y)"], n), _sequence_ratio(x)
    per = -torch.minimum(s * a, torch.clamp(s, 1 - epsilon, 1 + epsilon_high) * a)
    per = torch.where(x["mask(y)"].any(-1), per, torch.zeros(()))
    return (per + beta * s * _seq_mean(x, _k3(x))).mean()


def luspo(x, *, n, beta=0.0, epsilon=0.2, epsilon_high=0.2):
    """G20: GSPO's sequence loss weighted by |o_i| (TRL: (per_token_loss · mask).sum(-1).mean())."""
    a, s, m = _adv(x["r(y)"], n), _sequence_ratio(x), x["mask(y)"]
    per = -torch.minimum(s * a, torch.clamp(s, 1 - epsilon, 1 + epsilon_high) * a) * m.sum(-1)
    return (per + beta * s * torch.where(m, _k3(x), torch.zeros(())).sum(-1)).mean()


def gmpo(x, *, n, beta=0.0, epsilon=0.4, epsilon_high=0.4):
    """G17: one-sided log-space clip by sign of A, w = exp(mean_t c), −w A + β mean_t k3."""
    a = _adv(x["r(y)"], n)
    lr = _tok(x, "policy") - _tok(x, "old")
    c = torch.clamp(lr, -epsilon, epsilon_high)
    c = torch.where(a[:, None] > 0, torch.minimum(lr, c), torch.maximum(lr, c))
    w = torch.exp(_seq_mean(x, c))
    return (-w * a + beta * _seq_mean(x, _k3(x))).mean()


def cispo(x, *, n, beta=0.0, epsilon=0.2, epsilon_high=0.2):
    """G18 (TRL): −sg(min(r, ε_high)) · A · ℓ_θ per token (+ β r k3), token mean over the batch."""
    a = _adv(x["r(y)"], n)[:, None]
    pol = _tok(x, "policy")
    r = torch.exp(pol - _tok(x, "old"))
    per = -torch.clamp(r, max=epsilon_high).detach() * a * pol + beta * r * _k3(x)
    return _token_mean(x, per)


def sapo(x, *, n, beta=0.0, epsilon=0.2, epsilon_high=0.2, tau_pos=1.0, tau_neg=1.05):
    """G19: −σ(τ(r − 1))·4/τ · A per token (τ by the sign of A) + β r k3; GRPO aggregation."""
    a = _adv(x["r(y)"], n)[:, None]
    r = torch.exp(_tok(x, "policy") - _tok(x, "old"))
    tau = torch.where(a > 0, torch.tensor(tau_pos, dtype=a.dtype), torch.tensor(tau_neg, dtype=a.dtype))
    per = -torch.sigmoid(tau * (r - 1)) * 4 / tau * a + beta * r * _k3(x)
    return _seq_mean(x, per).mean()


def rloo(x, *, n, beta=0.05, epsilon=0.2, epsilon_high=0.2, normalize_advantages=False):
    """G5 (TRL RLOOTrainer): R' = R − β Σ_t(ℓ_old − ℓ_ref); A = R' − mean of the other n − 1;
    optional batch whitening (+1e-4); ρ = exp(Σ_t(ℓ_θ − ℓ_old)); mean −min(ρA, clip(ρ)A)."""
    shaped = x["r(y)"] - beta * (_tok(x, "old") - _tok(x, "reference")).sum(-1)
    g = shaped.reshape(-1, n)
    a = (g - (g.sum(1, keepdim=True) - g) / (n - 1)).reshape(-1)
    if normalize_advantages:
        a = (a - a.mean()) / (a.std() + 1e-4)
    rho = torch.exp((_tok(x, "policy") - _tok(x, "old")).sum(-1))
    return (-torch.minimum(rho * a, torch.clamp(rho, 1 - epsilon, 1 + epsilon_high) * a)).mean()
