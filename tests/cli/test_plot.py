"""`ptdsl plot RUN_DIR`: the curves of a run's metrics.jsonl — the values drawn are the file's,
train and eval series side by side, the image is not blank — and clear errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ptdsl.cli import plot
from ptdsl.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("matplotlib")

ROWS = [{"loss": 2.0, "reward_accuracy": 0.25, "step": 1, "lr": 1e-3, "step_time": 0.1},
        {"loss": 1.5, "reward_accuracy": 0.5, "step": 2, "lr": 1e-3, "step_time": 0.1},
        {"step": 2, "eval/loss": 1.8, "eval/reward_accuracy": 0.4, "eval/win_rate": 0.6},
        {"loss": "nan", "reward_accuracy": 0.75, "step": 3, "lr": 5e-4, "step_time": 0.1},
        {"loss": 1.0, "reward_accuracy": 0.5, "step": 4, "lr": 0.0, "step_time": 0.1},
        {"step": 4, "eval/loss": 1.2, "eval/reward_accuracy": 0.7, "eval/win_rate": 0.8}]


@pytest.fixture
def run(tmp_path) -> Path:
    lines = [json.dumps(r) for r in ROWS] + ['{"loss": 0.9, "st']  # a last line cut short by a kill
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_the_series_are_the_files_values_train_and_eval(run):
    series = plot.read_series(run)
    assert list(series) == ["loss", "reward_accuracy", "lr", "win_rate"]  # step_time is not a curve
    assert series["reward_accuracy"]["train"] == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 0.5)]
    assert series["reward_accuracy"]["eval"] == [(2, 0.4), (4, 0.7)]
    assert series["win_rate"] == {"train": [], "eval": [(2, 0.6), (4, 0.8)]}
    fig = plot.figure(series, ["loss", "win_rate"])
    loss, win = fig.axes[0], fig.axes[1]
    (train, ev) = loss.get_lines()
    assert list(train.get_xdata()) == [1, 2, 3, 4] and list(train.get_ydata())[:2] == [2.0, 1.5]
    assert str(train.get_ydata()[2]) == "nan"  # a gap, not a dropped point
    assert list(ev.get_xdata()) == [2, 4] and list(ev.get_ydata()) == [1.8, 1.2]
    assert loss.get_title() == "loss" and [ln.get_label() for ln in win.get_lines()] == ["eval"]


def test_plot_writes_a_png_with_one_panel_per_chosen_metric(run, tmp_path, capsys):
    out = tmp_path / "pics" / "curves.png"
    assert main(["plot", str(run), "--metrics", "loss,eval/win_rate", "-o", str(out)]) == 0
    assert f"wrote {out} (2 metrics: loss, win_rate)" in capsys.readouterr().out
    from matplotlib.image import imread
    pixels = imread(out)
    assert pixels.shape[1] > pixels.shape[0] > 100  # two panels side by side
    ink = (pixels[..., :3] < 0.5).any(axis=-1)  # dark pixels: axes, ticks, text, lines
    assert 0.005 < ink.mean() < 0.5
    colored = (abs(pixels[..., 0] - pixels[..., 2]) > 0.3)  # the blue and orange curves, not grey
    assert colored.sum() > 200


def test_default_output_and_every_metric(run, capsys):
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").stat().st_size > 1000
    assert "4 metrics: loss, reward_accuracy, lr, win_rate" in capsys.readouterr().out


def test_an_absent_metric_is_usage_with_did_you_mean(run, capsys):
    with pytest.raises(SystemExit) as info:
        main(["plot", str(run), "--metrics", "loss,reward_acuracy"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "no metric `reward_acuracy`" in err and "did you mean `reward_accuracy`" in err


@pytest.mark.parametrize("make, said", [
    (lambda d: None, "has no metrics.jsonl"),
    (lambda d: (d / "metrics.jsonl").write_text(""), "has no metrics rows yet"),
])
def test_a_run_dir_without_metrics_is_an_error(tmp_path, capsys, make, said):
    make(tmp_path)
    assert main(["plot", str(tmp_path)]) == 1
    assert said in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nowhere")]) == 1
    assert "is not a directory" in capsys.readouterr().err


def test_missing_matplotlib_names_the_install_command(run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["plot", str(run)]) == 1
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "pip install 'ptdsl[plot]'" in err and "Traceback" not in err


def test_plot_does_not_import_torch(run):
    code = (f"import sys; from ptdsl.cli.main import main; rc = main(['plot', {str(run)!r}]); "
            "sys.exit(3 if 'torch' in sys.modules else rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
