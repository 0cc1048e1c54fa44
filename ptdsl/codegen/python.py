"""Codegen: readable Python source of the loss function, one statement per IR
node, each commented with the spec line it came from.

The source is built only from the validated IR: op templates from the table
below, numeric constants, and leaf names (which are emitted as string literals
with repr). User-derived text (the spec's path, spec lines in comments) reaches
it only through `safety.comment_text`, and `safety.check_source` vets the module
before it runs (api.CompiledMethod). No spec text is ever executed.
"""
from __future__ import annotations

import math

from ptdsl.codegen.safety import comment_text
from ptdsl.ir.graph import order
from ptdsl.ir.ops import GROUPED, OPS
from ptdsl.passes.batching import split_analysis

# op → template over operand variables {0}, {1}, … and attributes {a[name]}
EMIT = {
    "neg": "-{0}", "exp": "torch.exp({0})", "log": "torch.log({0})", "log1p": "torch.log1p({0})",
    "expm1": "torch.expm1({0})", "sigmoid": "torch.sigmoid({0})", "logsigmoid": "F.logsigmoid({0})",
    "softplus": "F.softplus({0})", "relu": "torch.relu({0})", "abs": "torch.abs({0})",
    "sqrt": "torch.sqrt({0})", "square": "torch.square({0})", "tanh": "torch.tanh({0})",
    "log1mexp": "K.log1mexp({0})", "sign": "torch.sign({0})", "stopgrad": "{0}.detach()",
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}",
    "pow": "torch.pow({0}, {1})", "minimum": "torch.minimum({0}, {1})",
    "maximum": "torch.maximum({0}, {1})", "logaddexp": "torch.logaddexp({0}, {1})",
    "clip": "torch.clamp({0}, {1}, {2})", "where": "torch.where({0}, {1}, {2})",
    # comparisons in the wider dtype of the two (a bare `<` rounds a 0-dim float32 operand to bfloat16)
    "lt": "K.lt({0}, {1})", "le": "K.le({0}, {1})", "gt": "K.gt({0}, {1})", "ge": "K.ge({0}, {1})",
    "eq": "K.eq({0}, {1})", "ne": "K.ne({0}, {1})",
    "and": "torch.logical_and({0}, {1})", "or": "torch.logical_or({0}, {1})",
    "not": "torch.logical_not({0})", "to_real": "{0}.to(dt)",
    "sum_tokens": "K.sum_tokens({0}, {1})", "mean_tokens": "K.mean_tokens({0}, {1})",
    "length": "K.length({0}, dt)",
    "mean": "K.mean_rows({0}, norm.get({nkey!r}))", "sum": "{0}.sum()", "std": "{0}.std()", "max_rows": "{0}.max()",
    "min_rows": "{0}.min()",
    "token_mean": "K.token_mean({0}, {1}, norm.get({nkey!r}))", "token_sum": "K.token_sum({0}, {1})",
    "group_mean": "K.group_mean({0}, {n})", "group_std": "K.group_std({0}, {n})",
    "group_sum": "K.group_sum({0}, {n})", "group_max": "K.group_max({0}, {n})",
    "group_min": "K.group_min({0}, {n})", "group_logsumexp": "K.group_logsumexp({0}, {n})",
    "group_suffix_logsumexp": "K.group_suffix_logsumexp({0}, {n})",
    "softmax": "torch.softmax({0}, -1)", "log_softmax": "torch.log_softmax({0}, -1)",
    "sum_vocab": "{0}.sum(-1)",
    "at_last": "K.at_last({0}, {1})", "gae": "K.gae({0}, {1}, {2}, {a[gamma]!r}, {a[lam]!r})",
    "gae_varying": "K.gae({0}, {1}, {4}, {2}, {3})",
    "discounted_sum": "K.discounted_sum({0}, {1}, {a[gamma]!r})", "whiten": "K.whiten({0}, {1})",
    "positions": "K.positions({0}, dt)", "token_quantile": "K.token_quantile({0}, {1}, {a[q]!r})",
    "sort_rows": "torch.sort({0}).values", "expand_rows": "K.expand_rows({0}, {n})",
    "sum_group": "K.sum_group({0}, {n})", "mean_group": "K.mean_group({0}, {n})",
    "running_mean": "K.running_mean({0}, state, {a[key]!r}, norm.get('sum_over_processes'))",
    "running_var": "K.running_var({0}, state, {a[key]!r}, norm.get('sum_over_processes'))",
    "ema": "K.ema({0}, state, {a[key]!r}, {a[decay]!r}, {a[init]!r}, norm.get('sum_over_processes'))",
    "row_rank": "K.row_rank({0}, dt)", "num_rows": "K.num_rows({0}, dt)", "token_rank": "K.token_rank({0}, {1}, dt)",
    "pair_other": "K.pair_other({0}, {n})", "sum_pairs": "K.sum_pairs({0}, {n})", "group_rank": "K.group_rank({0}, {n})",
    # leaf, const and expand are emitted by their own functions below; `uniform` never reaches
    # codegen: the level checker turns it into a leaf (a draw the runtime supplies)
    "leaf": None, "const": None, "expand": None, "uniform": None,
}

_EXPAND = {("seq", "pair"): "{0}[:, None]", ("seq", "token"): "{0}[:, None]", ("seq", "vocab"): "{0}[:, None, None]",
           ("token", "vocab"): "{0}[..., None]"}


def normalizer_key(g, n, linear: set[int]) -> str | None:
    """The global count a batch reduction divides by when the batch is split:
    `rows:R` for a mean over rows of R, `tokens:S` for a token mean over set S.
    Only reductions in linear position of an output take it (passes/batching.py);
    a batch mean used non-linearly (e.g. inside a sigmoid) stays local."""
    if n not in linear:
        return None
    d = g.nodes[n]
    if d["op"] == "mean":
        return f"rows:{g.nodes[d['args'][0]]['level'].rows}"
    if d["op"] == "token_mean":
        return f"tokens:{g.nodes[d['args'][1]]['attrs']['set']}"
    return None


def _const(value) -> str:
    if isinstance(value, bool):
        return f"torch.tensor({value})"
    v = float(value)
    # repr(inf) is `inf`, which is no Python literal: non-finite values are torch's names
    text = repr(v) if math.isfinite(v) else "torch.nan" if math.isnan(v) else ("-" if v < 0 else "") + "torch.inf"
    return f"torch.tensor({text}, dtype=dt)"


def _statement(g, n, var, masks, linear) -> str:
    d = g.nodes[n]
    op, attrs = d["op"], d["attrs"]
    args = [var[a] for a in d["args"]]
    if op == "leaf":
        src = f"inputs[{attrs['name']!r}]"
        if attrs["kind"] == "mask":
            return f"K.as_mask({src})"
        if attrs["level"] in ("token", "vocab"):
            return f"K.clean({src}, {masks[attrs['set']]})"
        return src
    if op == "const":
        return _const(attrs["value"])
    if op == "expand":
        src_kind = g.nodes[d["args"][0]]["level"].kind
        return _EXPAND[(src_kind, attrs["to"])].format(*args)
    return EMIT[op].format(*args, a=attrs, n=group_size(g, n, args), nkey=normalizer_key(g, n, linear))


def group_size(g, n, args):
    """What a group op reads its groups from: the variable holding the list sizes (ragged rows,
    their last operand) or the rows per group (an int); None for other ops."""
    d = g.nodes[n]
    if d["op"] not in GROUPED:
        return None
    if len(d["args"]) > OPS[d["op"]].arity:
        return args[-1]
    rows = d["level"].rows if d["op"] == "expand_rows" else g.nodes[d["args"][0]]["level"].rows
    return g.graph["rows"][rows]


def _comment(d, sources) -> str:
    span = d["span"]
    if span is None:
        return ""
    lines = sources.get(span.file, "").split("\n")  # spans count lines by "\n" only, as the grammar does
    text = lines[span.line - 1].strip() if 0 < span.line <= len(lines) else ""
    short = text if len(text) <= 60 else text[:57] + "..."
    return comment_text(f"{span.file.rsplit('/', 1)[-1]}:{span.line}  {short}")


def emit_source(g, sources: dict[str, str], fn_name: str = "loss_fn") -> tuple[str, dict[str, int]]:
    """The loss function's source, and a map from variable name to IR node."""
    nodes = order(g)
    masks_first = [n for n in nodes if g.nodes[n]["op"] == "leaf" and g.nodes[n]["attrs"]["kind"] == "mask"]
    rest = [n for n in nodes if n not in set(masks_first)]
    var: dict[int, str] = {}
    masks: dict[str, str] = {}
    linear, _ = split_analysis(g)
    body, where = [], {}
    for n in masks_first + rest:
        d = g.nodes[n]
        name = f"v{n}"
        if d["name"] and d["name"].isidentifier():
            name = f"{d['name']}_{n}"
        var[n] = name
        where[name] = n
        if d["op"] == "leaf" and d["attrs"]["kind"] == "mask":
            masks[d["attrs"]["set"]] = name
        stmt = f"{name} = {_statement(g, n, var, masks, linear)}"
        comment = _comment(d, sources)
        body.append(f"    {stmt:<60}  # {d['level']}  {comment}".rstrip())
    metrics = ", ".join(f"{k!r}: {var[v]}.detach()" for k, v in g.graph["metrics"].items())
    header = [
        "# " + comment_text(f"Generated by ptdsl from {g.graph['file']}: the loss of method `{g.graph['method']}`."),
        "# One statement per IR node; each comment gives the value's level and its spec line.",
        "# `norm` holds global row/token counts when a batch is split (gradient accumulation,",
        "# several processes); empty, every reduction divides by the local count.",
        "# `state` carries running statistics from step to step (updated in place).",
        f"def {fn_name}(inputs, dt, norm, state):",
    ]
    body.append(f"    return {var[g.graph['loss']]}, {{{metrics}}}")
    return "\n".join(header + body) + "\n", where
