"""Group kernels for groups of varying size: the responses of ranked lists, K per list.

A ragged row space holds its groups as consecutive rows, group g with `sizes[g]` rows
(between 1 and K_max, the largest in the batch). Each op scatters the rows into a
[groups, K_max] table, computes over the valid cells of each group and gathers the
result back to the rows, so a padded cell is in no sum, statistic, rank or pair and
nothing is computed from a value that is not there. Padded cells hold a value that
is finite wherever the op reads the table (the fill of a sum is 0, of a max −inf,
of a pair the row's own value): a padded cell never sends a NaN into a gradient.

With every size equal to n these are the fixed-size kernels (kernels.py) exactly.
"""
from __future__ import annotations

import torch


class Groups:
    """Where each row sits: its group, its place in the group, and the valid cells."""

    def __init__(self, sizes: torch.Tensor, rows: int):
        sizes = sizes.to(torch.long)
        self.sizes = sizes
        self.width = int(sizes.max()) if sizes.numel() else 0
        self.group = torch.repeat_interleave(torch.arange(sizes.numel(), device=sizes.device), sizes, output_size=rows)
        starts = torch.cumsum(sizes, 0) - sizes
        self.place = torch.arange(rows, device=sizes.device) - starts[self.group]
        self.valid = torch.arange(self.width, device=sizes.device)[None, :] < sizes[:, None]

    def table(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        """[groups, K_max]: row r at (its group, its place); `fill` in the padded cells."""
        t = torch.full((self.sizes.numel(), self.width), fill, dtype=x.dtype, device=x.device)
        return t.index_put((self.group, self.place), x)

    def rows(self, per_group: torch.Tensor) -> torch.Tensor:
        """A per-group value back on each of its rows."""
        return per_group[self.group]


def group_sum(x, sizes):
    g = Groups(sizes, x.shape[0])
    return g.rows(g.table(x, 0.0).sum(1))


def group_mean(x, sizes):
    g = Groups(sizes, x.shape[0])
    return g.rows(g.table(x, 0.0).sum(1) / g.sizes.to(x.dtype))


def group_std(x, sizes):
    """Bessel-corrected: a group of one has no spread (0/0: NaN, as torch.std of one value)."""
    g = Groups(sizes, x.shape[0])
    n = g.sizes.to(x.dtype)
    mean = g.table(x, 0.0).sum(1) / n
    dev = torch.where(g.valid, g.table(x, 0.0) - mean[:, None], torch.zeros((), dtype=x.dtype, device=x.device))
    var = (dev ** 2).sum(1) / (n - 1)
    # as torch.std: a zero spread has gradient 0 whatever flows into it (even a NaN from a
    # division by that zero std), not √'s infinite slope at 0; a group of one stays NaN
    positive = var > 0
    flat = torch.where(var == 0, var.detach(), var)
    std = torch.where(positive, torch.sqrt(torch.where(positive, var, torch.ones_like(var))), flat)
    return g.rows(std)


def group_max(x, sizes):
    g = Groups(sizes, x.shape[0])
    return g.rows(g.table(x, -torch.inf).amax(1))


def group_min(x, sizes):
    g = Groups(sizes, x.shape[0])
    return g.rows(g.table(x, torch.inf).amin(1))


def group_logsumexp(x, sizes):
    g = Groups(sizes, x.shape[0])
    return g.rows(torch.logsumexp(g.table(x, -torch.inf), 1))


def group_suffix_logsumexp(x, sizes):
    """Row k: log Σ_{i ≥ k} exp x_i over its group. Each row's cells i ≥ k of its group's table,
    [rows, K_max]; its own cell is always in, so no row's log-sum-exp is over nothing."""
    g = Groups(sizes, x.shape[0])
    cells = torch.arange(g.width, device=x.device)[None, :]
    keep = (cells >= g.place[:, None]) & g.valid[g.group]
    vals = torch.where(keep, g.table(x, 0.0)[g.group], torch.full((), -torch.inf, dtype=x.dtype, device=x.device))
    return torch.logsumexp(vals, 1)


def group_rank(x, sizes):
    """0-based rank within the group, largest first (ties: the earlier row first); padded cells
    (−inf, after every row of the group) rank last."""
    g = Groups(sizes, x.shape[0])
    t = g.table(x.detach(), -torch.inf)
    order = torch.sort(t, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(g.width, device=x.device).expand_as(order))
    return ranks[g.group, g.place].to(x.dtype)


def pair_other(x, sizes):
    """[rows, K_max]: for row i, x_j of each row j of its group; past the group's end, x_i again
    (a finite stand-in that `sum_pairs` leaves out)."""
    g = Groups(sizes, x.shape[0])
    return torch.where(g.valid[g.group], g.table(x, 0.0)[g.group], x[:, None])


def sum_pairs(x, sizes):
    """Σ_j over the valid pairs (i, j) of row i's group."""
    g = Groups(sizes, x.shape[0])
    return torch.where(g.valid[g.group], x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(-1)


def sum_group(x, sizes):
    """seq[R] → one value per group (per example): the sum of its rows."""
    g = Groups(sizes, x.shape[0])
    return g.table(x, 0.0).sum(1)


def mean_group(x, sizes):
    g = Groups(sizes, x.shape[0])
    return g.table(x, 0.0).sum(1) / g.sizes.to(x.dtype)


def expand_rows(x, sizes):
    """A per-example value on each row of its group."""
    return torch.repeat_interleave(x, sizes.to(torch.long), dim=0, output_size=int(sizes.sum()))
