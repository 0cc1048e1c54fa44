"""Plain-torch references for the methods that read several datasets, written from the
papers and independently of the compiler (per row in Python where the spec is vectorised).

NPO (Zhang, Lin, Bai, Mei 2024, arXiv:2404.05868, eq. 3 and the authors' TOFU code):
L_NPO = (2/β)·E_forget[log(1 + (π_θ(y|x)/π_ref(y|x))^β)], the ratio of sequence
probabilities. NPO+RT adds the retain set's NLL, as the authors' `npo_grad_diff` loss
(Hugging Face's token-mean cross-entropy over the retain batch). The DPO + SFT mix is DPO's
sigmoid loss on the preference source plus α times the SFT source's token-mean NLL.

Inputs are the compiled methods' leaves; tokens outside a mask hold garbage (never read).
"""
from __future__ import annotations

import torch

Inputs = dict[str, torch.Tensor]


def _seq_logp(x: Inputs, model: str, s: str) -> list[torch.Tensor]:
    """log π(y|x) of each row: the sum of its valid tokens' log-probs."""
    lp, m = x[f"logprobs({model}, {s})"], x[f"mask({s})"]
    return [sum((lp[i, t] for t in range(lp.shape[1]) if m[i, t]), torch.zeros((), dtype=lp.dtype))
            for i in range(lp.shape[0])]


def _token_mean_nll(x: Inputs, s: str) -> torch.Tensor:
    """−(Σ valid log-probs) / (number of valid tokens) over the whole batch; 0 with no token."""
    lp, m = x[f"logprobs(policy, {s})"], x[f"mask({s})"]
    terms = [lp[i, t] for i in range(lp.shape[0]) for t in range(lp.shape[1]) if m[i, t]]
    if not terms:
        return torch.zeros((), dtype=lp.dtype)
    return -sum(terms) / len(terms)


def npo(x: Inputs, *, beta=0.1, forget="completion") -> torch.Tensor:
    """(2/β)·mean over forget rows of log(1 + exp(β·(log π_θ − log π_ref))), the paper's
    log(1 + (π_θ/π_ref)^β) with the ratio taken in log space."""
    pol, ref = _seq_logp(x, "policy", forget), _seq_logp(x, "reference", forget)
    terms = [2.0 / beta * torch.log1p(torch.exp(beta * (p - r))) for p, r in zip(pol, ref)]
    return sum(terms) / len(terms)


def npo_rt(x: Inputs, *, beta=0.1, npo_coeff=1.0, retain_coeff=1.0) -> torch.Tensor:
    return npo_coeff * npo(x, beta=beta) + retain_coeff * _token_mean_nll(x, "retained")


def dpo_sft_mix(x: Inputs, *, beta=0.1, label_smoothing=0.0, alpha=1.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, with cDPO's label smoothing) on the pairs + α·NLL(demos)."""
    pc, rc = _seq_logp(x, "policy", "chosen"), _seq_logp(x, "reference", "chosen")
    pr, rr = _seq_logp(x, "policy", "rejected"), _seq_logp(x, "reference", "rejected")
    losses = []
    for a, b, c, d in zip(pc, rc, pr, rr):
        z = beta * ((a - b) - (c - d))
        log_sig = -torch.log1p(torch.exp(-z))   # log σ(z)
        log_sig_neg = -torch.log1p(torch.exp(z))  # log σ(−z)
        losses.append(-(1 - label_smoothing) * log_sig - label_smoothing * log_sig_neg)
    return sum(losses) / len(losses) + alpha * _token_mean_nll(x, "completion")

