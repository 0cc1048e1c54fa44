"""Plain-torch references for the self-training batch (METHODS.md §2: DFT, RAFT, ReST-EM),
written from the METHODS.md formulas, independently of the compiler and the spec files.

Conventions as references.py: inputs keyed by canonical leaf names, token tensors
[rows, tokens] aligned with a bool mask(S) and holding garbage outside it (selected away
with torch.where before any arithmetic), float64, one scalar loss.
"""
from __future__ import annotations

import torch

Inputs = dict[str, torch.Tensor]


def _tokens(x: Inputs, s: str) -> tuple[torch.Tensor, torch.Tensor]:
    mask = x[f"mask({s})"]
    return torch.where(mask, x[f"logprobs(policy, {s})"], torch.zeros((), dtype=torch.float64)), mask


def dft(x: Inputs) -> torch.Tensor:
    """S2: per token −sg(p_t)·log p_t, p_t = exp(log p_t); one token mean over the batch."""
    logp, mask = _tokens(x, "completion")
    return -(logp.detach().exp() * logp).sum() / mask.sum()


def raft(x: Inputs) -> torch.Tensor:
    """S5: SFT NLL (token mean over the batch) on the best-of-K sample of each prompt; the
    pick itself is the runtime's (tested separately)."""
    logp, mask = _tokens(x, "best(y, r)")
    return -logp.sum() / mask.sum()


def rest_em(x: Inputs, *, threshold: float = 1.0) -> torch.Tensor:
    """S7: SFT NLL on the samples whose reward is at least the threshold: Σ over kept rows'
    tokens / number of kept tokens; 0 when nothing is kept."""
    logp, mask = _tokens(x, "y")
    keep = x["r(y)"] >= threshold
    kept = logp[keep]
    tokens = mask[keep].sum()
    if tokens == 0:
        return -kept.sum() * 0.0
    return -kept.sum() / tokens


METHODS = {f.__name__: f for f in (dft, raft, rest_em)}
