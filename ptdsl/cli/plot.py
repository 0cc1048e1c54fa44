"""`ptdsl plot RUN_DIR [--metrics a,b] [-o curves.png]`: a run's curves from its metrics.jsonl.

One subplot per metric, over the optimizer step: the training series, and beside it the
evaluation series where the file has rows with `eval/NAME` keys. A metric is named without
its `eval/` prefix (`--metrics loss` draws `loss` and `eval/loss`); one only evaluated is
named the same way. Non-finite values (written "nan", "inf") leave a gap. matplotlib is an
optional dependency (`pip install 'ptdsl[plot]'`), drawn with the Agg backend: no display
needed. Model-free: this command does not import torch."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

EVAL = "eval/"
SKIPPED = ("step", "step_time")  # not curves anyone reads off a plot by default
INSTALL = "pip install 'ptdsl[plot]'  (or: pip install matplotlib)"


def register(sub) -> None:
    s = sub.add_parser("plot", help="plot a run's metrics (train and eval curves) from RUN_DIR/metrics.jsonl")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a training run's --output directory")
    s.add_argument("--metrics", metavar="NAME,…", help="the metrics to plot, comma-separated (default: all "
                   "but step_time); NAME also draws eval/NAME")
    s.add_argument("--output", "-o", metavar="FILE.png", help="where to write the image (default RUN_DIR/curves.png)")
    s.set_defaults(fn=cmd_plot)


class PlotError(Exception):
    """The run directory or its file cannot be plotted: exit 1 with the message."""


def cmd_plot(args) -> int:
    from ptdsl.cli.main import Usage
    try:
        series = read_series(Path(args.run_dir))
        names = chosen(series, args.metrics)
        if names is None:
            raise Usage(unknown_message(series, args.metrics))
        out = Path(args.output) if args.output else Path(args.run_dir) / "curves.png"
        draw(series, names, out)
    except PlotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({len(names)} metric{'s' if len(names) != 1 else ''}: {', '.join(names)})")
    return 0


# ---- reading ---------------------------------------------------------------------------

def read_series(run_dir: Path) -> dict[str, dict[str, list]]:
    """{metric: {"train": [(step, value)], "eval": [(step, value)]}} from run_dir/metrics.jsonl,
    in file order. A line cut short (a killed run) is skipped, with a note on stderr."""
    path = run_dir / "metrics.jsonl"
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir} is not a directory (give the --output directory of a training run)")
    if not path.is_file():
        raise PlotError(f"{run_dir} has no metrics.jsonl (is it the --output directory of a training run?)")
    series: dict[str, dict[str, list]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = _row(line)
        if row is None:
            if line.strip():
                print(f"note: {path}:{number} is not a metrics row; skipped", file=sys.stderr)
            continue
        for key, value in row.items():
            if key not in SKIPPED and (v := _number(value)) is not None:
                kind, name = ("eval", key[len(EVAL):]) if key.startswith(EVAL) else ("train", key)
                series.setdefault(name, {"train": [], "eval": []})[kind].append((row["step"], v))
    if not series:
        raise PlotError(f"{path} has no metrics rows yet")
    return series


def _row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), (int, float)) else None


def _number(value) -> float | None:
    """A metric value as a float: numbers, and the "nan"/"inf"/"-inf" text metrics_log writes."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return None


# ---- choosing --------------------------------------------------------------------------

def chosen(series: dict, metrics: str | None) -> list[str] | None:
    """The metric names to plot (an `eval/` prefix dropped), or None if one is not in the file."""
    if not metrics:
        return sorted(series, key=lambda n: n != "loss")  # the loss first, the rest in file order
    names = [m.strip().removeprefix(EVAL) for m in metrics.split(",") if m.strip()]
    return names if names and all(n in series for n in names) else None


def unknown_message(series: dict, metrics: str | None) -> str:
    from ptdsl.diagnostics import did_you_mean
    names = [m.strip().removeprefix(EVAL) for m in (metrics or "").split(",") if m.strip()]
    if not names:
        return "--metrics names no metric"
    missing = [n for n in names if n not in series][0]
    hint = did_you_mean(missing, series)
    return (f"the run has no metric `{missing}`" + (f"; {hint}" if hint else "")
            + f" (its metrics: {', '.join(series)})")


# ---- drawing ---------------------------------------------------------------------------

def draw(series: dict, names: list[str], out: Path) -> None:
    fig = figure(series, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)


def figure(series: dict, names: list[str]):
    """One subplot per name (three to a row): its train line and its eval line and points."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for kind, style in (("train", {"linewidth": 1.2}), ("eval", {"marker": "o", "linewidth": 1.2})):
            points = series[name][kind]
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], label=kind, **style)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if series[name]["eval"]:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError(f"`ptdsl plot` needs matplotlib, which is not installed: {INSTALL}") from None
    matplotlib.use("Agg")  # files only: no display, the same image everywhere
    import matplotlib.pyplot as plt
    return plt
