"""Checking the leaf tensors given to a compiled loss, with messages that name
the input, what it should be and what it is (never a bare KeyError or a shape
error from deep inside torch). Imports torch only inside the functions."""
from __future__ import annotations

from ptdsl.ir.graph import leaves


class InputError(ValueError):
    """A compiled loss was given inputs that do not fit it."""


def _describe(a, level) -> str:
    who = f" of `{a['model']}`" if a.get("model") else ""
    return f"{a['kind']}{who}, {level}"


def check_inputs(g, inputs: dict) -> None:
    import torch
    missing, bad = [], []
    masks, rows = {}, {}
    for n in leaves(g):
        a, level = g.nodes[n]["attrs"], g.nodes[n]["level"]
        name = a["name"]
        if name not in inputs:
            missing.append(f"`{name}` ({_describe(a, level)})")
            continue
        x = inputs[name]
        if not isinstance(x, torch.Tensor):
            bad.append(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
            continue
        want_dim = {"scalar": 0, "seq": 1, "token": 2, "vocab": 3}[level.kind]
        if x.dim() != want_dim:
            shape = {0: "[]", 1: "[rows]", 2: "[rows, tokens]", 3: "[rows, tokens, vocab]"}[want_dim]
            bad.append(f"`{name}` must have shape {shape} ({level}), got {list(x.shape)}")
            continue
        if a["kind"] == "mask":
            masks[a["set"]] = x
        if want_dim and level.rows:
            rows.setdefault(level.rows, []).append((name, x.shape[0]))
    if missing:
        raise InputError(f"method `{g.graph['method']}` needs input{'s' if len(missing) > 1 else ''} "
                         + ", ".join(missing) + f"; given: {', '.join(sorted(inputs)) or 'nothing'}")
    for n in leaves(g):
        a, level = g.nodes[n]["attrs"], g.nodes[n]["level"]
        x = inputs[a["name"]]
        if level.kind in ("token", "vocab") and a["kind"] != "mask" and a["set"] in masks:
            m = masks[a["set"]]
            if tuple(x.shape[:2]) != tuple(m.shape):
                bad.append(f"`{a['name']}` has shape {list(x.shape)} but `mask({a['set']})` has "
                           f"{list(m.shape)}: token tensors must align with their mask")
    for space, seen in rows.items():
        sizes = {s for _, s in seen}
        if len(sizes) > 1:
            bad.append(f"inputs on rows `{space}` disagree on the number of rows: "
                       + ", ".join(f"`{nm}` has {s}" for nm, s in seen))
        group = g.graph["rows"].get(space)
        lists = inputs.get(f"sizes({space})")
        if lists is not None and sizes:  # ragged groups (ranked lists): as many rows as the sizes add up to
            if bool((lists < 1).any()) or int(lists.sum()) != next(iter(sizes)):
                bad.append(f"`sizes({space})` must be whole numbers ≥ 1 that add up to the rows of `{space}` "
                           f"({next(iter(sizes))}), got {lists.tolist()}")
        elif group and sizes and next(iter(sizes)) % group:
            bad.append(f"rows of `{space}` come in groups of n = {group}, but there are {next(iter(sizes))}")
    if bad:
        raise InputError(f"method `{g.graph['method']}`: " + "; ".join(bad))


def float_dtype(g, inputs: dict):
    """The dtype the loss computes in: that of its floating-point inputs."""
    import torch
    for n in leaves(g):
        x = inputs.get(g.nodes[n]["attrs"]["name"])
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.dtype
    return torch.get_default_dtype()
