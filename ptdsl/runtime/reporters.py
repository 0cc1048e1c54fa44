"""`--report-to`: the metrics reporters (accelerate's trackers), each writing to a local
store under OUTPUT, and the names the metrics are reported under.

A requested reporter that is not installed stops the run before step 1 with the command
that installs it: accelerate alone would drop it with a debug message, and the user would
find an empty dashboard after the run. Stores stay on this machine unless the user says
otherwise: wandb runs offline (WANDB_MODE, when set, wins) in OUTPUT/wandb, mlflow writes a
file store in OUTPUT/mlruns (mlflow-skinny suffices; MLFLOW_TRACKING_URI, when set, wins), trackio a local database
in OUTPUT/trackio (TRACKIO_DIR, when set, wins), tensorboard event files in OUTPUT/ptdsl.

metrics.jsonl always keeps the spec's metric names (stable methods' names are a contract,
docs/stability.md); `--metric-names trl` renames only what the reporters receive, to the
names TRL's trainers log (docs/metrics.md), so dashboards of both line up.

This module does not import torch or the reporters' packages until a run starts them."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ptdsl.diagnostics import did_you_mean
from ptdsl.runtime.errors import RuntimeSetupError


@dataclass(frozen=True)
class Reporter:
    module: str     # what must import
    install: str    # the command that installs it (the extra of ptdsl first)
    store: str = ""  # its local store under OUTPUT
    env: str = ""    # the variable that, when the user sets it, puts the store elsewhere


REPORTERS = {
    "tensorboard": Reporter("tensorboard", "pip install 'ptdsl[tensorboard]'  (or: pip install tensorboard)",
                            "ptdsl"),
    "wandb": Reporter("wandb", "pip install 'ptdsl[wandb]'  (or: pip install wandb)", "wandb", "WANDB_MODE"),
    "mlflow": Reporter("mlflow", "pip install 'ptdsl[mlflow]'  (or: pip install mlflow-skinny)", "mlruns",
                       "MLFLOW_TRACKING_URI"),
    "trackio": Reporter("trackio", "pip install 'ptdsl[trackio]'  (or: pip install trackio)", "trackio",
                        "TRACKIO_DIR"),
}
NAMINGS = ("ptdsl", "trl")
_OURS = [""]  # the TRACKIO_DIR this module set (an earlier run's), told apart from the user's

# ptdsl's (the library's specs') metric name → the name TRL 1.16's trainers log for the same
# quantity. Only names whose meaning matches TRL's are mapped; the rest are reported as they are.
TRL_NAMES = {
    "lr": "learning_rate",
    "chosen_reward": "rewards/chosen",
    "rejected_reward": "rewards/rejected",
    "reward_accuracy": "rewards/accuracies",
    "reward_margin": "rewards/margins",
    "mean_reward": "reward",
    "reward_std": "reward_std",
    "completion_length": "completions/mean_length",
    "clip_ratio": "clip_ratio/region_mean",
    "episode/tool_calls": "tools/call_frequency",
}


def check(report_to, metric_names: str = "ptdsl") -> tuple[str, ...]:
    """The requested reporters as a tuple, each known and installed, else RuntimeSetupError
    naming it and the install command. A single name (train(report_to="wandb")) is one reporter."""
    names = (report_to,) if isinstance(report_to, str) else tuple(report_to or ())
    for name in names:
        if name not in REPORTERS:
            raise RuntimeSetupError(f"unknown reporter `{name}` in --report-to",
                                    help=did_you_mean(name, list(REPORTERS))
                                    or f"the reporters: {', '.join(REPORTERS)}")
        if importlib.util.find_spec(REPORTERS[name].module) is None:
            raise RuntimeSetupError(f"--report-to {name}: the `{REPORTERS[name].module}` package is not installed",
                                    help=f"install it: {REPORTERS[name].install}")
    if metric_names not in NAMINGS:
        raise RuntimeSetupError(f"--metric-names is one of {', '.join(NAMINGS)}, not `{metric_names}`")
    return names


def stores(names, out) -> list[str]:
    """Where each reporter's run is, for the end of `ptdsl train`: "wandb: out/wandb (offline)", …"""
    said = []
    for name in names:
        r = REPORTERS[name]
        user = os.environ.get(r.env) if r.env and os.environ.get(r.env) != _OURS[0] else None
        if name == "wandb":
            said.append(f"wandb: {Path(out) / r.store} ({user or 'offline'}; `wandb sync` uploads it)")
        else:
            said.append(f"{name}: {user or Path(out) / r.store}")
    return said


def start(acc, names: tuple[str, ...], out: Path, config: dict) -> None:
    """Point each reporter at its local store under `out`, then start them (main process)."""
    out = Path(out).resolve()
    init: dict[str, dict] = {}
    if "wandb" in names:
        (out / "wandb").mkdir(parents=True, exist_ok=True)
        init["wandb"] = {"dir": str(out), "mode": os.environ.get("WANDB_MODE", "offline")}
    if "mlflow" in names and "MLFLOW_TRACKING_URI" not in os.environ:
        import mlflow
        # a file store needs no database package (mlflow-skinny suffices); mlflow 3 refuses
        # one unless MLFLOW_ALLOW_FILE_STORE says it is wanted
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri((out / "mlruns").as_uri())
    if "trackio" in names and os.environ.get("TRACKIO_DIR", _OURS[0]) == _OURS[0]:  # not the user's
        _trackio_local(out / "trackio")
    acc.init_trackers("ptdsl", config=config, init_kwargs=init)


def _trackio_local(where: Path) -> None:
    """trackio reads TRACKIO_DIR once, when its modules load, and several of them copy it
    (`from trackio.utils import TRACKIO_DIR`): the variable is set for a first import, and the
    copies of modules already loaded (an earlier run in this process) are pointed here too."""
    import sys
    where.mkdir(parents=True, exist_ok=True)
    os.environ["TRACKIO_DIR"] = _OURS[0] = str(where)
    for name, mod in list(sys.modules.items()):
        if (name == "trackio" or name.startswith("trackio.")) and isinstance(getattr(mod, "TRACKIO_DIR", None), Path):
            mod.TRACKIO_DIR = where


def renamed(metrics: dict, naming: str) -> dict:
    """The metrics as the reporters receive them: TRL's names with `trl`, else unchanged."""
    if naming != "trl":
        return metrics
    return {TRL_NAMES.get(k, k): v for k, v in metrics.items()}


def log(acc, metrics: dict, naming: str) -> None:
    acc.log(renamed({k: v for k, v in metrics.items() if k != "step"}, naming), step=metrics["step"])
