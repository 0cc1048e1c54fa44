"""Golden records of the stable methods' numbers (stability contract C1, docs/stability.md#c1-numbers):
computing them, the non-default setting each is also pinned at, and comparing two records.

A record (tests/contract/numbers/<method>.json) holds, for the settings `defaults` and `moved`,
the params given to `ptdsl.compile`, the loss, every metric, and for every trainable leaf a
summary of the loss's gradient: sum, sum of |g|, L2 norm and the entries at three fixed flat
positions (first, middle, last). All in float64 on the inputs of tests/contract/inputs.py.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from tests.contract import inputs as I

DIR = Path(__file__).resolve().parent / "numbers"
# float64 on one CPU: two processes and 1 or 2 threads agree to a few ulps (measured: see
# tests/contract/README.md); the absolute floor is for sums that cancel to zero (group-centred
# advantages), where a relative bound on a value of 1e-17 means nothing.
REL_TOL, ABS_TOL = 1e-9, 1e-12
SETTINGS = ("defaults", "moved")


def path(method: str) -> Path:
    return DIR / f"{method}.json"


def stable_methods() -> list[str]:
    from ptdsl import library
    from ptdsl.compiler import define
    return sorted(n for n in library.all_names() if define(n).stability == "stable")


def moved_setting(method) -> dict:
    """The non-default setting: every numeric param, in name order, moved to the first of a fixed
    list of nearby values that its constraint (and the params moved before it) accept."""
    import ptdsl
    from ptdsl.diagnostics import SpecError
    setting: dict = {}
    for name, p in sorted(method.params.items()):
        if isinstance(p.default, bool) or not isinstance(p.default, (int, float)):
            continue
        for candidate in _candidates(p.default):
            try:
                ptdsl.compile(method, **setting, **{name: candidate})
            except SpecError:
                continue
            setting[name] = candidate
            break
    return setting


def _candidates(d):
    if isinstance(d, int):
        return [d + 1, d - 1]
    return [d * 1.25 if d else 0.1, d * 0.8, d + 0.1, d - 0.1, d / 2]


def compute(compiled) -> dict:
    """Loss, metrics and gradient summaries of one compiled method on the fixed inputs."""
    x = I.build(compiled)
    trainable = sorted(i.name for i in compiled.inputs if i.trainable)
    for name in trainable:
        x[name].requires_grad_(True)
    loss, metrics = compiled.loss(x, state={})
    grads = {}
    if loss.requires_grad:
        got = torch.autograd.grad(loss, [x[n] for n in trainable], allow_unused=True)
        grads = {n: _summary(g if g is not None else torch.zeros_like(x[n])) for n, g in zip(trainable, got)}
    return {"loss": float(loss.detach()), "metrics": {k: float(v) for k, v in sorted(metrics.items())},
            "grads": grads}


def _summary(g: torch.Tensor) -> dict:
    flat = g.detach().reshape(-1)
    at = sorted({0, flat.numel() // 2, flat.numel() - 1}) if flat.numel() else []
    return {"sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()), "l2": float(flat.norm()),
            "entries": {str(i): float(flat[i]) for i in at}}


def record(method: str, changed_in: str, setting: dict | None = None) -> dict:
    """A fresh record of `method` (its moved setting recomputed unless given)."""
    import ptdsl
    m = ptdsl.load(method)
    setting = moved_setting(m) if setting is None else setting
    out = {"method": method, "changed_in": changed_in, "inputs_version": I.INPUTS_VERSION, "settings": {}}
    for label, params in (("defaults", {}), ("moved", setting)):
        out["settings"][label] = {"params": params, **compute(ptdsl.compile(m, **params))}
    return out


def load(method: str) -> dict:
    return json.loads(path(method).read_text())


def dump(rec: dict) -> str:
    return json.dumps(rec, indent=1, sort_keys=False) + "\n"


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def differences(old: dict, new: dict) -> list[str]:
    """Every number of `new` that differs from `old`'s (or is missing on one side), named as in
    `dpo (defaults): loss 0.693147 → 0.700000`."""
    out = []
    for label in SETTINGS:
        a, b = old["settings"][label], new["settings"][label]
        where = f"{old['method']} ({label})"
        out += [f"{where}: {what}" for what in _diff_setting(a, b)]
    return out


def setting_text(rec: dict, label: str) -> str:
    p = rec["settings"][label]["params"]
    return ", ".join(f"{k} = {v}" for k, v in p.items()) or "the defaults"


def _diff_setting(a: dict, b: dict) -> list[str]:
    out = [] if close(a["loss"], b["loss"]) else [f"loss {_num(a['loss'])} → {_num(b['loss'])}"]
    out += _diff_named("metric", a["metrics"], b["metrics"], lambda x, y: [] if close(x, y) else [(x, y, "")])
    out += _diff_named("grad", a["grads"], b["grads"], _diff_grad)
    return out


def _diff_named(what, a: dict, b: dict, diff) -> list[str]:
    out = [f"{what} {k}: gone (was in the record)" for k in sorted(set(a) - set(b))]
    out += [f"{what} {k}: new (not in the record)" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        out += [f"{what} {part}{'of ' if part else ''}{k} {_num(x)} → {_num(y)}" for x, y, part in diff(a[k], b[k])]
    return out


def _diff_grad(a: dict, b: dict) -> list:
    out = [(a[s], b[s], f"{s} ") for s in ("sum", "abs_sum", "l2") if not close(a[s], b[s])]
    if list(a["entries"]) != list(b["entries"]):  # the flat positions moved: the leaf's shape changed
        return out + [(int(max(a["entries"], key=int)) + 1, int(max(b["entries"], key=int)) + 1, "size ")]
    return out + [(a["entries"][i], b["entries"][i], f"entry [{i}] ") for i in a["entries"]
                  if not close(a["entries"][i], b["entries"][i])]


def _num(x) -> str:
    return f"{x:.9g}"
