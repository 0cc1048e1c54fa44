"""The IR interpreter: the reference semantics of every op.

It evaluates a graph node by node, written for clarity rather than speed (group
statistics and scans loop over rows and tokens) and independently of the
kernels the generated code calls, so that codegen and the optimisation passes
can be tested against it. Works on the unoptimised graph too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ptdsl.ir.graph import order
from ptdsl.ir.ops import OPS


def _z(x):
    return torch.zeros((), dtype=x.dtype, device=x.device)


def _masked(x, m):
    # a vocab-level value has one more axis than the mask; a scalar (a number where a
    # token-level operand is allowed) broadcasts to the mask's [rows, T]
    return torch.where(m[..., None] if x.dim() > m.dim() else m, x, _z(x))


def _spans(g, d, args, rows: int) -> list[tuple[int, int]]:
    """(first row, end) of each group: the list sizes when the rows are ragged (the op's extra
    last operand), else groups of the row space's n."""
    if len(d["args"]) > OPS[d["op"]].arity:
        ends = torch.cumsum(args[-1].to(torch.long), 0).tolist()
        return list(zip([0] + ends[:-1], ends))
    space = d["level"].rows if d["op"] == "expand_rows" else g.nodes[d["args"][0]]["level"].rows
    n = g.graph["rows"][space]
    return [(s, s + n) for s in range(0, rows, n)]


def _group_apply(x, spans, fn):
    out = torch.empty_like(x)
    for start, end in spans:
        out[start:end] = fn(x[start:end])
    return out


def _pairs(x, spans):
    """Row i: x_j of each row j of its group, then x_i again up to the widest group."""
    width = max(e - s for s, e in spans)
    return torch.stack([torch.cat([x[s:e], x[r].expand(width - (e - s))]) for s, e in spans for r in range(s, e)])


def _log1mexp(x):
    # log(1 - e^x), computed two ways and picked by x (Mächler 2012)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _at_last(x, m):
    out = torch.zeros(m.shape, dtype=x.dtype, device=x.device)
    for i in range(m.shape[0]):
        idx = torch.nonzero(m[i]).flatten()
        if len(idx):
            out[i, idx[-1]] = x[i] if x.dim() else x
    return out


def _reverse_scan(step, T):
    vals, carry = [None] * T, None
    for t in reversed(range(T)):
        carry = step(t, carry)
        vals[t] = carry
    return torch.stack(vals, 1)


def _gae(r, v, m, gamma, lam):
    r, v = _masked(r, m), _masked(v, m)
    T = r.shape[1]
    # options as [rows, T] grids: a number, or a value of the loss (scalar, [rows, 1], [rows, T])
    gamma, lam = (torch.as_tensor(o, dtype=r.dtype).detach().expand(r.shape) for o in (gamma, lam))

    def step(t, carry):
        nv = v[:, t + 1] if t + 1 < T else torch.zeros_like(v[:, 0])
        delta = r[:, t] + gamma[:, t] * nv - v[:, t]
        a = delta + gamma[:, t] * lam[:, t] * (carry if carry is not None else torch.zeros_like(delta))
        return torch.where(m[:, t], a, torch.zeros_like(a))
    return _reverse_scan(step, T)


def _discounted(x, m, gamma):
    x = _masked(x, m)
    return _reverse_scan(lambda t, c: x[:, t] + gamma * (c if c is not None else 0), x.shape[1])


def _whiten(x, m):
    vals = x[m]
    if vals.numel() == 0:  # no valid token: mean and variance 0
        return x / torch.sqrt(torch.tensor(1e-8, dtype=x.dtype, device=x.device))
    mean = vals.mean()
    # one token: no spread to estimate, variance 0 (not the n − 1 estimator's 0/0)
    var = vals.var(unbiased=True) if vals.numel() > 1 else _z(x)
    return (x - mean) / torch.sqrt(var + 1e-8)


def _counts(dtype):
    # lengths and positions are integers: exact in at least float32 (bfloat16 stops at 256)
    return torch.promote_types(dtype, torch.float32)


def _exact(compare):
    # compare the operands' values, in the wider of their two dtypes: a 0-dim float32 operand
    # (a quantile) is not rounded to the other's bfloat16, as torch's promotion would
    def exact(a, b):
        wide = torch.promote_types(a.dtype, b.dtype)
        return compare(a.to(wide), b.to(wide))
    return exact


_UNARY = {
    "neg": torch.neg, "exp": torch.exp, "log": torch.log, "log1p": torch.log1p, "expm1": torch.expm1,
    "sigmoid": torch.sigmoid, "logsigmoid": F.logsigmoid, "softplus": F.softplus, "relu": torch.relu,
    "abs": torch.abs, "sqrt": torch.sqrt, "square": lambda x: x * x, "tanh": torch.tanh,
    "log1mexp": _log1mexp, "sign": torch.sign, "stopgrad": lambda x: x.detach(),
    "not": torch.logical_not, "sum": torch.sum, "std": lambda x: x.std(unbiased=True),
    "max_rows": torch.max, "min_rows": torch.min,
    "softmax": lambda x: torch.softmax(x, -1), "log_softmax": lambda x: torch.log_softmax(x, -1),
    "sum_vocab": lambda x: x.sum(-1),
}
_BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "minimum": torch.minimum, "maximum": torch.maximum, "logaddexp": torch.logaddexp,
    **{name: _exact(getattr(torch, name)) for name in ("lt", "le", "gt", "ge", "eq", "ne")},
    "and": torch.logical_and, "or": torch.logical_or,
    "sum_tokens": lambda x, m: _masked(x, m).sum(-1),
    "mean_tokens": lambda x, m: _masked(x, m).sum(-1) / torch.clamp(m.sum(-1), min=1).to(x.dtype),
    "token_sum": lambda x, m: _masked(x, m).sum(),
    "at_last": _at_last, "whiten": _whiten,
}


def evaluate(g, inputs: dict, dtype: torch.dtype, norm: dict | None = None, state: dict | None = None):
    """(loss, metrics, values): values maps every node id to its tensor.

    `norm` gives global counts for batch means when the batch is split (see
    codegen/python.normalizer_key); without it, means divide by local counts."""
    from ptdsl.codegen.python import normalizer_key
    from ptdsl.passes.batching import split_analysis
    norm = norm or {}
    linear = split_analysis(g)[0] if norm else set()
    val: dict[int, torch.Tensor] = {}
    mask_of: dict[str, torch.Tensor] = {}
    for n in order(g):  # masks first: token leaves are cleaned with their set's mask
        d = g.nodes[n]
        if d["op"] == "leaf" and d["attrs"]["kind"] == "mask":
            m = inputs[d["attrs"]["name"]]
            val[n] = mask_of[d["attrs"]["set"]] = m if m.dtype == torch.bool else m != 0
    for n in order(g):
        if n not in val:
            count = norm.get(normalizer_key(g, n, linear))
            val[n] = _node(g, n, [val[a] for a in g.nodes[n]["args"]], inputs, mask_of, dtype, count,
                           state if state is not None else {})
    metrics = {k: val[v].detach() for k, v in g.graph["metrics"].items()}
    return val[g.graph["loss"]], metrics, val


def _node(g, n, args, inputs, mask_of, dtype, count=None, state=None):
    d = g.nodes[n]
    op, a = d["op"], d["attrs"]
    if op == "positions":  # the k-th valid token of a row is at position k − 1
        out = torch.zeros(args[0].shape, dtype=_counts(dtype), device=args[0].device)
        for i, row in enumerate(args[0]):
            valid = torch.nonzero(row).flatten()
            out[i, valid] = torch.arange(len(valid), dtype=out.dtype, device=out.device)
        return out
    if op == "token_quantile":
        x, m = args
        vals = x[m].detach().to(torch.promote_types(x.dtype, torch.float32))
        # at least float32, kept (not rounded back to x's dtype); no tokens: a zero quantile
        return torch.quantile(vals, a["q"]) if vals.numel() else torch.zeros((), dtype=vals.dtype, device=x.device)
    if op == "sort_rows":
        return torch.sort(args[0]).values
    if op == "expand_rows":
        sizes = args[1].to(torch.long).tolist() if len(args) > 1 else [a["n"]] * len(args[0])
        return torch.cat([x.reshape(1).expand(k) for x, k in zip(args[0], sizes)])
    if op in ("sum_group", "mean_group"):
        reduce = torch.sum if op == "sum_group" else torch.mean
        return torch.stack([reduce(args[0][s:e]) for s, e in _spans(g, d, args, len(args[0]))])
    if op == "running_mean":
        x = args[0].detach()
        total, seen = state.get(a["key"], (0.0, 0))
        state[a["key"]] = (total + float(x.sum()), seen + x.numel())
        return torch.tensor(state[a["key"]][0] / state[a["key"]][1], dtype=x.dtype)
    if op in ("ema", "running_var"):
        return _STATEFUL[op](args[0].detach(), state, a)
    if op == "row_rank":  # rank = how many rows come before it: a larger value, or an equal one earlier
        x = args[0]
        return torch.tensor([_before(x, i, range(len(x))) for i in range(len(x))], dtype=_counts(dtype))
    if op == "num_rows":
        return torch.tensor(float(args[0].shape[0]), dtype=_counts(dtype))
    if op == "token_rank":
        x, m = args
        out = torch.zeros(m.shape, dtype=_counts(dtype))
        for r in range(m.shape[0]):
            valid = torch.nonzero(m[r]).flatten().tolist()
            for t in valid:
                out[r, t] = _before(x[r], t, valid)
        return out
    if op == "mean":
        return args[0].sum() / (args[0].shape[0] if count is None else count)
    if op == "token_mean":
        x, m = args
        return _masked(x, m).sum() / (torch.clamp(m.sum(), min=1) if count is None else count)
    if op == "leaf":
        x = inputs[a["name"]]
        return _masked(x, mask_of[a["set"]]) if a["level"] in ("token", "vocab") else x
    if op == "const":
        return torch.tensor(a["value"]) if isinstance(a["value"], bool) else torch.tensor(float(a["value"]), dtype=dtype)
    if op == "expand":
        src = g.nodes[d["args"][0]]["level"].kind
        x = args[0]
        depth = {"pair": 1, "token": 1, "vocab": 2}[a["to"]] - {"seq": 0, "token": 1}[src]
        return x.reshape(x.shape + (1,) * depth)
    if op == "pair_other":
        return _pairs(args[0], _spans(g, d, args, len(args[0])))
    if op == "sum_pairs":
        spans = _spans(g, d, args, len(args[0]))
        return torch.stack([args[0][r, :e - s].sum() for s, e in spans for r in range(s, e)])
    if op == "to_real":
        return args[0].to(dtype)
    if op == "length":
        return args[0].sum(-1).to(_counts(dtype))
    if op.startswith("group_"):
        spans = _spans(g, d, args, len(args[0]))
        fn = {"group_mean": lambda x: x.mean().expand(x.shape), "group_sum": lambda x: x.sum().expand(x.shape),
              "group_std": lambda x: x.std(unbiased=True).expand(x.shape),
              "group_max": lambda x: x.max().expand(x.shape), "group_min": lambda x: x.min().expand(x.shape),
              "group_logsumexp": lambda x: torch.logsumexp(x, 0).expand(x.shape),
              "group_suffix_logsumexp": lambda x: torch.stack([torch.logsumexp(x[k:], 0)
                                                               for k in range(len(x))]),
              "group_rank": lambda x: torch.tensor(
                  [sum(1 for j in range(len(x)) if x[j] > x[i] or (x[j] == x[i] and j < i)) for i in range(len(x))],
                  dtype=x.dtype)}[op]
        return _group_apply(args[0], spans, fn)
    if op == "clip":
        return torch.clamp(args[0], args[1], args[2])
    if op == "where":
        return torch.where(*args)
    if op == "gae":
        return _gae(*args, a["gamma"], a["lam"])
    if op == "gae_varying":  # (r, v, gamma, lam, mask)
        return _gae(args[0], args[1], args[4], args[2], args[3])
    if op == "discounted_sum":
        return _discounted(*args, a["gamma"])
    if op in _UNARY:
        return _UNARY[op](*args)
    return _BINARY[op](*args)


def _before(x, i, among) -> int:
    """How many of the positions `among` rank before position i: a larger value, or an equal one
    earlier (largest first, ties in order; a NaN counts as -inf)."""
    v = [-float("inf") if x[j] != x[j] else float(x[j]) for j in range(len(x))]
    return sum(1 for j in among if v[j] > v[i] or (v[j] == v[i] and j < i))


def _ema(x, state, a):
    # m ← decay·m + (1 − decay)·(this batch's mean), starting from the first mean or from `init`
    batch_mean = float(x.to(torch.float64).mean())
    m, seen = state.get(a["key"], (a.get("init"), 0))
    m = batch_mean if m is None else a["decay"] * m + (1 - a["decay"]) * batch_mean
    state[a["key"]] = (m, seen + 1)
    return torch.tensor(m, dtype=x.dtype)


def _running_var(x, state, a):
    # Welford's update, one value at a time: (count, mean, sum of squared deviations)
    n, mean, m2 = state.get(a["key"], (0, 0.0, 0.0))
    for v in x.to(torch.float64).reshape(-1).tolist():
        n += 1
        d = v - mean
        mean += d / n
        m2 += d * (v - mean)
    state[a["key"]] = (n, mean, m2)
    return torch.tensor(m2 / (n - 1) if n > 1 else 0.0, dtype=x.dtype)


_STATEFUL = {"ema": _ema, "running_var": _running_var}

# `uniform` is listed for the per-op table test: the level checker replaces it by a leaf before
# any graph is interpreted.
OPS_INTERPRETED = {"uniform", "ema", "running_var", "row_rank", "num_rows", "token_rank"} | set(_UNARY) | set(_BINARY) | {"pair_other", "sum_pairs", "group_rank", "group_max", "group_min", "group_logsumexp",
                                                 "group_suffix_logsumexp", "positions", "token_quantile", "sort_rows", "expand_rows",
                                                 "running_mean", "mean", "token_mean", "leaf", "const", "expand", "to_real", "length", "group_mean",
                                                 "group_std", "group_sum", "clip", "where", "gae", "sum_group", "mean_group", "gae_varying",
                                                 "discounted_sum"}
