"""Hypothesis strategies for the leaf tensors of each data shape, keyed by canonical leaf names.

Shapes are small (rows in 1..4, or 1..3 prompts x n samples; T in 1..6) and ragged: every row
of a mask is a contiguous run of True of length >= 1 starting at column 0.  Positions outside
the mask hold *garbage* (huge values, and sometimes nan / +-inf), because compiled losses
promise to ignore them; a loss that reads them is wrong.

Valid log-probs are drawn from ``[-8, -2**-10]`` (-2**-10 is about -1e-3).  They are kept strictly below 0 because a
token-mean log-prob of exactly 0 (probability 1) sends ORPO's ``log(1 - p)`` to -inf.

All tensors are float64 unless ``dtype`` says otherwise; masks are bool.  Use
:func:`requires_grad_` to turn the policy log-probs into leaves that require grad.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

MAX_ROWS = 4
MAX_LEN = 6
MAX_PROMPTS = 3
LOGPROB_MIN = -8.0
LOGPROB_MAX = -(2.0**-10)  # about -1e-3, exact in float32 too

_GARBAGE_SPECIALS = [math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0, 7.0]


def _float_width(dtype: torch.dtype) -> int:
    return 32 if dtype == torch.float32 else 64


def _garbage(dtype: torch.dtype) -> st.SearchStrategy[float]:
    """Values for masked-out positions: large finite numbers, and sometimes nan / inf."""
    return st.one_of(
        st.sampled_from(_GARBAGE_SPECIALS),
        st.floats(min_value=-1e6, max_value=1e6, width=_float_width(dtype)),
    )


def _logprob(dtype: torch.dtype) -> st.SearchStrategy[float]:
    return st.floats(min_value=LOGPROB_MIN, max_value=LOGPROB_MAX, width=_float_width(dtype))


def _lengths(draw, rows: int, max_len: int) -> tuple[int, list[int]]:
    """A width ``T`` and one length in ``1..T`` per row."""
    width = draw(st.integers(min_value=1, max_value=max_len))
    lengths = draw(st.lists(st.integers(min_value=1, max_value=width), min_size=rows, max_size=rows))
    return width, lengths


def _mask(lengths: list[int], width: int) -> torch.Tensor:
    columns = torch.arange(width).unsqueeze(0)
    return columns < torch.tensor(lengths).unsqueeze(1)


def _token_values(draw, mask: torch.Tensor, valid: st.SearchStrategy[float], dtype: torch.dtype) -> torch.Tensor:
    """A ``[rows, T]`` tensor: ``valid`` values where ``mask``, garbage elsewhere."""
    garbage = _garbage(dtype)
    values = [
        [draw(valid) if bool(mask[i, t]) else draw(garbage) for t in range(mask.shape[1])]
        for i in range(mask.shape[0])
    ]
    return torch.tensor(values, dtype=dtype)


def _sequence_set(draw, rows: int, dtype: torch.dtype, models: tuple[str, ...], name: str) -> dict[str, torch.Tensor]:
    """Log-probs of each model in ``models`` plus the mask for one sequence set ``name``."""
    width, lengths = _lengths(draw, rows, MAX_LEN)
    mask = _mask(lengths, width)
    out = {f"logprobs({model}, {name})": _token_values(draw, mask, _logprob(dtype), dtype) for model in models}
    out[f"mask({name})"] = mask
    return out


@st.composite
def sft_inputs(draw, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """``logprobs(policy, completion)`` [B, T] and ``mask(completion)`` [B, T]."""
    rows = draw(st.integers(min_value=1, max_value=MAX_ROWS))
    return _sequence_set(draw, rows, dtype, ("policy",), "completion")


@st.composite
def preference_inputs(draw, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Policy and reference log-probs and masks for ``chosen`` and ``rejected`` (own widths)."""
    rows = draw(st.integers(min_value=1, max_value=MAX_ROWS))
    inputs = _sequence_set(draw, rows, dtype, ("policy", "reference"), "chosen")
    inputs.update(_sequence_set(draw, rows, dtype, ("policy", "reference"), "rejected"))
    return inputs


@st.composite
def unpaired_inputs(draw, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """KTO data: the completion set, ``label`` [B] bool (True = desirable), and the mismatched set.

    ``mismatched(completion)`` tensors are generated independently ([B, T2]); at run time they come
    from pairing prompt i with completion i-1.
    """
    rows = draw(st.integers(min_value=1, max_value=MAX_ROWS))
    inputs = _sequence_set(draw, rows, dtype, ("policy", "reference"), "completion")
    inputs.update(_sequence_set(draw, rows, dtype, ("policy", "reference"), "mismatched(completion)"))
    inputs["label"] = torch.tensor(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), dtype=torch.bool)
    return inputs


def _group_rewards(draw, prompts: int, n: int) -> list[float]:
    """Rewards for ``prompts`` groups of ``n``: 0/1 or continuous, some groups all equal."""
    binary = draw(st.booleans())
    reward = st.sampled_from([0.0, 1.0]) if binary else st.floats(min_value=-2.0, max_value=2.0, width=32)
    rewards: list[float] = []
    for _ in range(prompts):
        if draw(st.booleans()):  # a group whose rewards are all equal (advantage 0)
            rewards.extend([draw(reward)] * n)
        else:
            rewards.extend(draw(st.lists(reward, min_size=n, max_size=n)))
    return rewards


@st.composite
def rollout_inputs(draw, n: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """GRPO-family data: P in 1..3 prompts x ``n`` samples, contiguous groups of ``n`` rows.

    ``logprobs(old, y)`` is the policy log-prob plus small noise (|noise| <= 0.5, so the clip
    range is exercised), capped at 0, or exactly equal to the policy log-prob for the whole batch.
    ``logprobs(reference, y)`` is independent.  ``r(y)`` [rows] holds rewards.
    """
    prompts = draw(st.integers(min_value=1, max_value=MAX_PROMPTS))
    rows = prompts * n
    width, lengths = _lengths(draw, rows, MAX_LEN)
    mask = _mask(lengths, width)
    policy = _token_values(draw, mask, _logprob(dtype), dtype)
    if draw(st.booleans()):
        old = policy.clone()
    else:
        noise = _token_values(draw, mask, st.floats(min_value=-0.5, max_value=0.5, width=_float_width(dtype)), dtype)
        old = torch.where(mask, torch.clamp(policy + noise, max=0.0), noise)
    return {
        "logprobs(policy, y)": policy,
        "logprobs(old, y)": old,
        "logprobs(reference, y)": _token_values(draw, mask, _logprob(dtype), dtype),
        "mask(y)": mask,
        "r(y)": torch.tensor(_group_rewards(draw, prompts, n), dtype=dtype),
    }


@st.composite
def thinned(draw, mask: torch.Tensor, empty_rows: int = 0) -> torch.Tensor:
    """A random subset of ``mask``: tokens drop out at the start (as left padding would put
    them), in the middle (holes) or everywhere, so some rows may have no token at all (a
    fully masked completion, e.g. a masked truncation). The first ``empty_rows`` rows (in a
    random order of the rows) are always emptied. Values under the dropped tokens stay the
    valid ones drawn for them; a loss must ignore them all the same."""
    keep = torch.tensor([[draw(st.booleans()) for _ in range(mask.shape[1])] for _ in range(mask.shape[0])])
    out = mask & keep
    rows = draw(st.permutations(range(mask.shape[0])))
    for i in rows[:empty_rows]:
        out[i] = False
    return out


def requires_grad_(inputs: dict[str, torch.Tensor], keys=None) -> dict[str, torch.Tensor]:
    """Make ``keys`` (default: every ``logprobs(policy, ...)`` entry) fresh leaves that require grad.

    Replaces the entries of ``inputs`` in place (detached clones) and returns ``inputs``.
    """
    if keys is None:
        keys = [key for key in inputs if key.startswith("logprobs(policy,")]
    for key in keys:
        inputs[key] = inputs[key].detach().clone().requires_grad_(True)
    return inputs
