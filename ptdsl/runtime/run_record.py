"""OUTPUT/run.json: what a run was, so that a metrics file can be traced back to it: the method
(name, a hash of its spec files, the params it compiled with), the resolved options, the seed,
the model and data it read, the package versions and the distributed mode actually used, and
the same in one start-up line."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

from ptdsl.runtime.datafiles import is_dataset_object

PACKAGES = ("torch", "transformers", "accelerate", "datasets", "peft", "trl")


def distributed_mode(acc) -> str:
    """e.g. `one process (cpu)`, `DDP (MULTI_CPU), 2 processes`."""
    kind = str(acc.distributed_type).split(".")[-1]
    if acc.num_processes == 1:
        return f"one process ({acc.device.type})"
    name = {"MULTI_CPU": "DDP", "MULTI_GPU": "DDP", "FSDP": "FSDP", "DEEPSPEED": "DeepSpeed"}.get(kind, kind)
    return f"{name} ({kind}), {acc.num_processes} processes"


def spec_hash(compiled) -> str:
    """sha256 over the spec files the method was built from (parents included), in a fixed order."""
    h = hashlib.sha256()
    for path, text in sorted(compiled.method.definition.sources.items()):
        h.update(Path(path).name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def record(compiled, opts, acc, model_ids: dict, data, mixed_precision: str, distributed: str | None = None) -> dict:
    """`distributed`: the mode actually used (sharding.Mode.describe); default: accelerate's."""
    options = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name != "callbacks"}
    return {
        "method": compiled.name,
        "spec_files": sorted(Path(p).name for p in compiled.method.definition.sources),
        "spec_sha256": spec_hash(compiled),
        "params": dict(compiled.params),
        "seed": opts.seed,
        "options": {**options, "eval_data": _described(opts.eval_data)},
        "models": dict(model_ids),
        "data": _described(data),
        "distributed": distributed or distributed_mode(acc),
        "processes": acc.num_processes,
        "mixed_precision": mixed_precision,
        "versions": {**_versions(), "python": platform.python_version()},
    }


def write(out: Path, rec: dict) -> None:
    (out / "run.json").write_text(json.dumps(rec, indent=2, default=str) + "\n")


def startup_line(rec: dict) -> str:
    models = ", ".join(f"{k}: {v}" for k, v in rec["models"].items())
    return (f"ptdsl {rec['versions'].get('ptdsl', '?')} train `{rec['method']}` "
            f"(spec {rec['spec_sha256'][:12]}), {rec['distributed']}, seed {rec['seed']}; {models}")


def _described(data):
    """Paths as given; a dataset object by its type and size (never its rows)."""
    if data is None or isinstance(data, str):
        return data
    if isinstance(data, (list, tuple)):
        return [_described(d) for d in data]
    if is_dataset_object(data):
        sizes = {k: len(v) for k, v in data.items()} if isinstance(data, dict) else len(data)
        return f"{type(data).__name__} {sizes}"
    if isinstance(data, dict):
        return {k: _described(v) for k, v in data.items()}
    return type(data).__name__


def _versions() -> dict:
    from ptdsl.version import __version__
    out = {"ptdsl": __version__}  # this code's, not whatever copy pip has installed
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
