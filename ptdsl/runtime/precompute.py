"""Reference precompute: frozen queries that depend on data only (the plan marks
them precomputable) run once over the dataset before training, are cached on
disk keyed by model and data, and are read back at each step instead of a
forward pass."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ptdsl.runtime.batch import dataset_sets
from ptdsl.runtime.queries import run_model


def cache_key(model_id: str, examples, kind: str, leaf_names) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([model_id, kind, sorted(leaf_names)]).encode())
    for e in examples:
        h.update(json.dumps([e.prompt_ids, sorted(e.completions.items())]).encode())
    return h.hexdigest()[:16]


def precompute(queries, models, examples, set_info, pad_id, device, batch_size, cache_dir: Path | None,
               model_ids: dict, progress, prefix_sharing: bool = True) -> dict:
    """{leaf name: [per-example 1-D tensors]} for every precomputable query. `examples` is a list,
    or with several data sources a dict row space → examples: a query runs over its set's source.
    `prefix_sharing`: rows with one prompt may encode it once (runtime/prefix.py)."""
    out: dict[str, list] = {}
    by_model: dict[tuple[str, str], list] = {}
    for q in queries:
        by_model.setdefault((q.model, set_info[q.set].rows), []).append(q)
    sources = examples if isinstance(examples, dict) else None
    for (model_name, rows), qs in by_model.items():
        examples = sources[rows] if sources else examples
        leaves = [q.leaf for q in qs]
        key = cache_key(model_ids[model_name], examples, "precompute", leaves)
        path = cache_dir / f"{model_name}-{key}.pt" if cache_dir else None
        if path is not None and path.exists():
            out.update(torch.load(path))
            continue
        values = {q.leaf: [] for q in qs}
        sets = sorted({q.set for q in qs})
        bar = progress(range(0, len(examples), batch_size), desc=f"precompute {model_name}")
        for i in bar:
            chunk = examples[i:i + batch_size]
            rows = dataset_sets(chunk, sets, set_info)
            res = run_model(models[model_name], rows, sets, {s: {q.output for q in qs if q.set == s} for s in sets},
                            pad_id, device, frozen=True, prefix_sharing=prefix_sharing)
            for q in qs:
                t, m = res[(q.output, q.set)], res[("mask", q.set)]
                values[q.leaf].extend(t[j][m[j]].float().cpu() for j in range(len(chunk)))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(values, tmp)
            tmp.replace(path)
        out.update(values)
    return out


def lookup(cache: dict, leaf: str, examples, positions: dict, mask, dtype):
    """The cached tensor of a leaf for a micro-batch, aligned with the set's mask."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    for r, e in enumerate(examples):
        v = cache[leaf][positions[e.index]].to(dtype)
        out[r, : len(v)] = v
    return out
