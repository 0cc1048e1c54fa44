"""Small torch kernels the generated loss code calls for ops that are more than
one torch expression. Token tensors are [rows, tokens] with a boolean mask of
the same shape; masked-out positions may hold anything and never leak (torch.where,
never multiplication, so a NaN there stays out of both value and gradient).
Precision: counts and quantiles are kept in at least float32 and comparisons see
exact values, so no discrete decision depends on bfloat16 rounding."""
from __future__ import annotations

import torch

from ptdsl.codegen import ragged


def as_mask(m: torch.Tensor) -> torch.Tensor:
    return m if m.dtype == torch.bool else m != 0


def clean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero what masked-out positions hold, so no later op sees it."""
    m = mask if x.dim() == mask.dim() else mask[..., None]
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


def sum_tokens(x, mask):
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(-1)


def mean_tokens(x, mask):
    # an empty sequence (e.g. a truncated rollout masked out) has token mean 0, as in TRL
    return sum_tokens(x, mask) / mask.sum(-1).clamp(min=1).to(x.dtype)


def token_sum(x, mask):
    return sum_tokens(x, mask).sum()


def token_mean(x, mask, count=None):
    """Σ m x / Σ m; `count` is the global token count when the batch is split."""
    n = mask.sum().clamp(min=1) if count is None else count
    return token_sum(x, mask) / torch.as_tensor(n).to(x.dtype)


def mean_rows(x, count=None):
    """Σ x / rows; `count` is the global row count when the batch is split."""
    return x.sum() / (x.shape[0] if count is None else count)


def _ragged_too(fixed):
    """Group kernels take `n`, the rows of every group (an int: a rollout's samples), or a tensor
    of each group's size (ranked lists of varying length): that goes to ragged.py's kernel."""
    other = getattr(ragged, fixed.__name__)

    def kernel(x, n):
        return fixed(x, n) if isinstance(n, int) else other(x, n)
    kernel.__name__, kernel.__doc__ = fixed.__name__, fixed.__doc__
    return kernel


def _groups(x, n):
    return x.reshape(-1, n)


@_ragged_too
def group_mean(x, n):
    return _groups(x, n).mean(1, keepdim=True).expand(-1, n).reshape(-1)


@_ragged_too
def group_sum(x, n):
    return _groups(x, n).sum(1, keepdim=True).expand(-1, n).reshape(-1)


@_ragged_too
def group_std(x, n):
    return _groups(x, n).std(1, keepdim=True).expand(-1, n).reshape(-1)


@_ragged_too
def group_max(x, n):
    # amax: at ties the gradient is shared evenly by the tied rows, as the interpreter's full max
    # does (`.max(dim)` would give it all to one index)
    return _groups(x, n).amax(1, keepdim=True).expand(-1, n).reshape(-1)


@_ragged_too
def group_min(x, n):
    return _groups(x, n).amin(1, keepdim=True).expand(-1, n).reshape(-1)


@_ragged_too
def group_logsumexp(x, n):
    return torch.logsumexp(_groups(x, n), 1, keepdim=True).expand(-1, n).reshape(-1)


@_ragged_too
def group_suffix_logsumexp(x, n):
    """Row k of a group: log Σ_{i ≥ k} exp x_i (the group's rows in order)."""
    return torch.logcumsumexp(_groups(x, n).flip(1), 1).flip(1).reshape(-1)


@_ragged_too
def sum_group(x, n):
    """A group's rows → one value per group (its example): their sum."""
    return _groups(x, n).sum(1)


@_ragged_too
def mean_group(x, n):
    return _groups(x, n).mean(1)


@_ragged_too
def expand_rows(x, n):
    """A per-example value on each row of its group."""
    return torch.repeat_interleave(x, n, dim=0)


def log1mexp(x):
    """log(1 - e^x) for x < 0: log(-expm1(x)) near 0, log1p(-e^x) far from it."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def at_last(x, mask):
    """x (one value per row) at each row's last completion token, 0 elsewhere."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    last = torch.where(mask, positions, -1).max(-1).values
    hit = positions[None, :] == last[:, None]
    x = x[:, None] if x.dim() == 1 else x
    return torch.where(hit, x, torch.zeros((), dtype=x.dtype, device=x.device))


def discounted_sum(x, mask, gamma):
    x = sum_tokens_keep(x, mask)
    out, running = [], torch.zeros_like(x[:, 0])
    for t in range(x.shape[1] - 1, -1, -1):
        running = x[:, t] + gamma * running
        out.append(running)
    return torch.stack(out[::-1], 1)


def gae(rewards, values, mask, gamma, lam):
    """Â_t = δ_t + γλ Â_{t+1}, δ_t = r_t + γ V_{t+1} − V_t, with V = 0 past the last token.

    γ and λ are numbers (constant options), or tensors the loss computed (a scalar, one per
    row `[rows, 1]` or one per token `[rows, T]`), read at each token as the scan passes it."""
    r, v = sum_tokens_keep(rewards, mask), sum_tokens_keep(values, mask)
    T = r.shape[1]
    gamma, lam = _per_token(gamma, r), _per_token(lam, r)
    adv, last = [], torch.zeros_like(r[:, 0])
    for t in range(T - 1, -1, -1):
        next_v = v[:, t + 1] if t + 1 < T else torch.zeros_like(v[:, 0])
        g = gamma if isinstance(gamma, float) else gamma[:, t]
        delta = r[:, t] + g * next_v - v[:, t]
        last = delta + g * (lam if isinstance(lam, float) else lam[:, t]) * last
        out_t = torch.where(mask[:, t], last, torch.zeros_like(last))
        last = out_t
        adv.append(out_t)
    return torch.stack(adv[::-1], 1)


def _per_token(option, like):
    """A scan option as a float, or a tensor broadcast to `like`'s [rows, T] (no gradient: an
    option says how the scan runs; it is not a quantity the loss is differentiated in)."""
    if not torch.is_tensor(option):
        return float(option)
    return torch.broadcast_to(option.detach().to(like.dtype), like.shape)


def whiten(x, mask):
    """(x − mean) / sqrt(var + 1e-8) over the valid tokens of the batch (unbiased var).

    One valid token has no spread to estimate (the n − 1 variance would be 0/0, which
    TRL's masked_whiten leaves as NaN): its variance is 0, so it whitens to 0. With no
    valid token the mean and variance are 0 and nothing downstream reads the result."""
    n = mask.sum().to(x.dtype)
    mean = token_sum(x, mask) / n.clamp(min=1)
    var = sum_tokens((x - mean) ** 2, mask).sum() / (n - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + 1e-8)


def sum_tokens_keep(x, mask):
    """x with masked-out positions zeroed (shape kept)."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _count_dtype(dtype):
    # counts in at least float32: bfloat16 holds integers exactly only up to 256, so a
    # position would compare wrongly with a length beyond it
    return torch.promote_types(dtype, torch.float32)


def length(mask, dtype):
    """Σ_t m_t: each row's number of valid tokens."""
    return mask.sum(-1).to(_count_dtype(dtype))


def positions(mask, dtype):
    """Each valid token's 0-based index among its sequence's valid tokens (0 elsewhere), as
    TRL's LD-DPO counts: with holes or left padding in a mask, the column index would not
    be comparable with `length`. For a left-aligned run of tokens the two coincide."""
    counted = torch.where(mask, mask.cumsum(-1) - 1, 0)
    return counted.to(_count_dtype(dtype))


def token_quantile(x, mask, q):
    """Computed, and returned, in at least float32 (torch.quantile has no bfloat16 kernel;
    rounding the result back to bfloat16 would move a threshold onto a token's value, so
    comparisons keep it wide, see below). A batch without tokens has nothing to compare
    with the quantile: 0, like an empty mean."""
    vals = x[mask].detach().to(torch.promote_types(x.dtype, torch.float32))
    if vals.numel() == 0:
        return torch.zeros((), dtype=vals.dtype, device=x.device)
    return torch.quantile(vals, q)


# -- comparisons of the exact values: both operands in the wider of their dtypes. torch's
# own promotion lets a tensor with dimensions round a 0-dim operand to its dtype (bfloat16
# entropies >= a float32 quantile compare in bfloat16), which can flip the answer.
def _widened(a, b):
    dt = torch.promote_types(a.dtype, b.dtype)
    return a.to(dt), b.to(dt)


def lt(a, b):
    return torch.lt(*_widened(a, b))


def le(a, b):
    return torch.le(*_widened(a, b))


def gt(a, b):
    return torch.gt(*_widened(a, b))


def ge(a, b):
    return torch.ge(*_widened(a, b))


def eq(a, b):
    return torch.eq(*_widened(a, b))


def ne(a, b):
    return torch.ne(*_widened(a, b))


def running_mean(x, state, key, sum_over_processes=None):
    """The mean of every value seen so far, this batch included; `state[key]` holds
    (sum, count) from earlier calls and is updated in place (no gradient). With several
    processes, `sum_over_processes` adds up the batch's (sum, count) over all of them first
    (as TRL's BCO gathers its rewards), so every process keeps the same statistic."""
    x = x.detach()
    batch = torch.stack([x.sum().to(torch.float64), torch.tensor(float(x.numel()), dtype=torch.float64,
                                                                 device=x.device)])
    if sum_over_processes is not None:
        batch = sum_over_processes(batch)
    total, count = state.get(key, (0.0, 0))
    total, count = total + float(batch[0]), count + int(batch[1])
    state[key] = (total, count)
    return torch.tensor(total / count, dtype=x.dtype, device=x.device)


def _batch_sum_count(x, sum_over_processes):
    """(Σx, number of values) of this batch in float64, over every process when there are several."""
    batch = torch.stack([x.sum().to(torch.float64), torch.tensor(float(x.numel()), dtype=torch.float64,
                                                                 device=x.device)])
    if sum_over_processes is not None:
        batch = sum_over_processes(batch)
    return float(batch[0]), int(batch[1])


def ema(x, state, key, decay, init=None, sum_over_processes=None):
    """Exponential moving average of the batch means: m ← decay·m + (1 − decay)·x̄, this batch
    included. It starts at the first batch's mean, or from `init` when given (β-DPO's code starts
    its margin baseline at 0). `state[key]` holds (m, batches seen); no gradient."""
    total, count = _batch_sum_count(x.detach(), sum_over_processes)
    mean = total / count if count else float("nan")
    before, seen = state.get(key, (init, 0))
    value = mean if before is None else decay * before + (1 - decay) * mean
    state[key] = (value, seen + 1)
    return torch.tensor(value, dtype=x.dtype, device=x.device)


def running_var(x, state, key, sum_over_processes=None):
    """The Bessel-corrected variance of every value seen so far, this batch included (0 while at
    most one value has been seen). `state[key]` holds (count, mean, M2): each batch's own mean and
    squared deviations are computed first (over all processes), then merged with Chan et al.'s
    pairwise update, so no large sum of squares loses precision; no gradient."""
    dtype, x = x.dtype, x.detach().to(torch.float64)
    total, n_b = _batch_sum_count(x, sum_over_processes)
    mean_b = total / n_b if n_b else 0.0
    m2_b, _ = _batch_sum_count((x - mean_b) ** 2, sum_over_processes)
    n_a, mean_a, m2_a = state.get(key, (0, 0.0, 0.0))
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n if n else 0.0
    m2 = m2_a + m2_b + delta * delta * n_a * n_b / n if n else 0.0
    state[key] = (n, mean, m2)
    return torch.tensor(m2 / (n - 1) if n > 1 else 0.0, dtype=dtype, device=x.device)


def _nan_last(x):
    """Ranks put a NaN last, with -inf (torch's sort would put it first)."""
    x = x.detach()
    return torch.where(torch.isnan(x), torch.full((), -torch.inf, dtype=x.dtype, device=x.device), x)


def row_rank(x, dtype):
    """0-based rank of each row's value among the batch's rows, largest first; ties: the earlier
    row first (a stable sort); NaN ranks as -inf. A count: at least float32; no gradient."""
    order = torch.sort(_nan_last(x), descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.shape[0], device=x.device)
    return ranks.to(_count_dtype(dtype))


def num_rows(x, dtype):
    return torch.tensor(float(x.shape[0]), dtype=_count_dtype(dtype), device=x.device)


def token_rank(x, mask, dtype):
    """Each valid token's 0-based rank among its row's valid tokens, largest value first; ties: the
    earlier token first; NaN ranks as -inf. Masked-out positions are 0. Two stable sorts: by value,
    then valid tokens before masked ones, so a masked position never counts (whatever it holds).
    No gradient."""
    by_value = torch.sort(_nan_last(x), dim=-1, descending=True, stable=True).indices
    valid_first = torch.sort((~mask).gather(-1, by_value).to(torch.uint8), dim=-1, stable=True).indices
    order = by_value.gather(-1, valid_first)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=x.device).expand_as(order))
    return torch.where(mask, ranks, 0).to(_count_dtype(dtype))


@_ragged_too
def pair_other(x, n):
    """[rows, n]: for row i, the values of the n rows of its group (x_j)."""
    g = _groups(x, n)                                   # [groups, n]
    return g[:, None, :].expand(-1, n, -1).reshape(-1, n)


@_ragged_too
def sum_pairs(x, n):
    """Σ_j over row i's pairs (ragged groups: the pairs within the group only)."""
    return x.sum(-1)


@_ragged_too
def group_rank(x, n):
    """0-based rank within the group, largest first (ties: the earlier row first)."""
    g = _groups(x, n).detach()
    order = torch.sort(g, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=x.device).expand_as(order))
    return ranks.reshape(-1).to(x.dtype)
