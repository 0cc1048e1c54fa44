"""Plain-torch references for the methods with random draws and moving averages (SamPO,
β-DPO), written from the authors' code (LuJunru/SamPO dpo_trainer.get_batch_logps with
len_norm; junkangwu/beta-DPO trainers.preference_loss and update_and_sync_tensor_mean)
and independently of the compiler: per pair and per token in Python, where the spec is
vectorised.

The authors draw with torch.multinomial; a reference given "the same random draws" takes
them as inputs instead: `draws` names the U[0, 1) leaves, and a sample of k out of n
without replacement is the k entries with the largest keys (uniform sampling: the draws
themselves; weighted: log(u)/w, Efraimidis & Spirakis 2006), ties to the earlier entry.
tests/methods/test_random_methods.py checks separately that this selection has
torch.multinomial's distribution. Same input conventions as references.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Inputs = dict[str, torch.Tensor]


def _ratio_tokens(x: Inputs, s: str) -> torch.Tensor:
    """log π_θ − log π_ref per token of set s (garbage outside the mask is never read below)."""
    return x[f"logprobs(policy, {s})"] - x[f"logprobs(reference, {s})"]


def _largest(keys: list[float], among: list[int], k: int) -> list[int]:
    """The k positions of `among` with the largest keys, ties to the earlier; NaN counts as -inf."""
    def key(t):
        v = keys[t]
        return (-(float("-inf") if v != v else v), t)
    return sorted(among, key=key)[:k]


# ---- SamPO (arXiv:2406.10957) -----------------------------------------------------------


def sampo(x: Inputs, *, beta=0.1, draws: dict) -> torch.Tensor:
    """Per pair, T_m = min(|y_w|, |y_l|); each response's log-ratio sums over T_m of its tokens
    drawn uniformly without replacement (all of them for the shorter one); DPO's loss on those."""
    rewards = {}
    lengths = {s: x[f"mask({s})"].sum(-1).tolist() for s in ("chosen", "rejected")}
    for s in ("chosen", "rejected"):
        ratio, mask, u = _ratio_tokens(x, s), x[f"mask({s})"], x[draws[s]]
        per_pair = []
        for i in range(mask.shape[0]):
            t_m = min(lengths["chosen"][i], lengths["rejected"][i])
            valid = [t for t in range(mask.shape[1]) if mask[i, t]]
            kept = _largest(u[i].tolist(), valid, t_m)
            per_pair.append(sum((ratio[i, t] for t in kept), torch.zeros((), dtype=ratio.dtype)))
        rewards[s] = beta * torch.stack(per_pair)
    return -F.logsigmoid(rewards["chosen"] - rewards["rejected"]).mean()


def sampo_kept(mask: torch.Tensor, other: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Which tokens of `mask`'s rows SamPO keeps, given the draws u (for the statistical test)."""
    out = torch.zeros_like(mask)
    for i in range(mask.shape[0]):
        t_m = int(min(mask[i].sum(), other[i].sum()))
        valid = [t for t in range(mask.shape[1]) if mask[i, t]]
        out[i, _largest(u[i].tolist(), valid, t_m)] = True
    return out


# ---- β-DPO (arXiv:2407.08639) -----------------------------------------------------------


def _delta(x: Inputs) -> torch.Tensor:
    def h(s):
        r = torch.where(x[f"mask({s})"], _ratio_tokens(x, s), torch.zeros((), dtype=torch.float64))
        return r.sum(-1)
    return h("chosen") - h("rejected")


def beta_dpo_batch_stats(x: Inputs) -> tuple[float, float]:
    """What the moving averages see of one batch: the mean and (Bessel) std of its margins Δ."""
    d = _delta(x).detach()
    return float(d.sum()) / d.numel(), float(d.std())


def beta_dpo(x: Inputs, *, beta=0.1, alpha=0.6, rho=0.2, momentum=0.9, draw: str, history=()) -> torch.Tensor:
    """The authors' preference_loss with mode_loss="beta_DPO": M₀ and σ are moving averages
    (started at 0) of each batch's mean and std of Δ, this batch included (``history`` holds the
    earlier batches' (mean, std)); keep int(N·(1 − ρ)) pairs sampled without replacement ∝
    exp(−½((Δ − M₀)/σ)²); β_b = max(β(1 + a(mean of the kept Δ − M₀)), 1e-3), no gradient; the
    kept pairs' mean −log σ(β_b Δ). A batch that keeps no pair adds 0 (the authors' code: NaN)."""
    delta = _delta(x)
    gap = delta.detach()
    m0 = sigma = 0.0
    for mean_b, std_b in [*history, beta_dpo_batch_stats(x)]:
        m0 = momentum * m0 + (1 - momentum) * mean_b
        sigma = momentum * sigma + (1 - momentum) * std_b
    weight = torch.exp(-0.5 * ((gap - m0) / sigma) ** 2)
    n = gap.shape[0]
    keys = (torch.log(x[draw]) / weight).tolist()
    kept = _largest(keys, list(range(n)), int(n * (1 - rho)))
    if not kept:
        return (delta * 0).sum()
    beta_b = max(beta * (1 + alpha * (float(gap[kept].mean()) - m0)), 1e-3)
    return torch.stack([-F.logsigmoid(beta_b * delta[i]) for i in kept]).sum() / len(kept)
