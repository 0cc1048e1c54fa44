"""--report-to: each reporter's local store holds the numbers metrics.jsonl holds, step by
step (read back with the store's own format, not through ptdsl); a reporter that is not
installed stops the run before step 1 with its install command; --metric-names trl renames
what reporters get and nothing else; a weighted reward's sources get `rewards/NAME/mean`."""
import importlib.util
import json
import sqlite3
import struct
from pathlib import Path

import pytest

from ptdsl.runtime import embedded, reporters
from ptdsl.runtime import rewards as registry
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.loop import train

ROOT = Path(__file__).resolve().parents[2]


def metrics(out: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k != "step"} for r in rows}


def wandb_history(out: Path) -> dict[int, dict]:
    """The history records of the offline run's .wandb file: leveldb-log framing (32 KiB
    blocks, records split into 7-byte-headed chunks), each record a wandb protobuf."""
    from wandb.proto import wandb_internal_pb2 as pb
    (path,) = out.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, block, part, seen = path.read_bytes(), 7, 32768, b"", {}
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or kind == 0:  # the block's padding
            pos += left
            continue
        part, pos = part + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            r = pb.Record()
            r.ParseFromString(part)
            part = b""
            if r.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                seen[items.pop("_step")] = {k: v for k, v in items.items() if not k.startswith("_")}
    return seen


def mlflow_history(out: Path) -> dict[int, dict]:
    """metrics/NAME files of the file store: `timestamp value step` lines."""
    (run,) = [p for p in (out / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    seen: dict[int, dict] = {}
    for f in (run / "metrics").rglob("*"):
        if f.is_file():
            for line in f.read_text().splitlines():
                _, value, step = line.split()
                seen.setdefault(int(step), {})[str(f.relative_to(run / "metrics"))] = float(value)
    return seen


def trackio_history(out: Path) -> dict[int, dict]:
    with sqlite3.connect(out / "trackio" / "ptdsl.db") as db:
        return {step: json.loads(m) for step, m in db.execute("select step, metrics from metrics")}


def assert_same(seen: dict, logged: dict, where: str):
    assert seen.keys() == logged.keys(), where
    for step, row in logged.items():
        assert seen[step].keys() >= row.keys(), f"{where} step {step}: {set(row) - set(seen[step])} missing"
        for k, v in row.items():
            assert seen[step][k] == pytest.approx(v, rel=1e-6), f"{where} step {step} {k}"


STORES = {"wandb": wandb_history, "mlflow": mlflow_history, "trackio": trackio_history}


@pytest.mark.integration
def test_each_reporter_store_holds_the_logged_metrics(tmp_path, monkeypatch):
    """One run reports to every installed reporter (the `test` extra installs all three)."""
    names = tuple(n for n in STORES if importlib.util.find_spec(n) is not None)
    if not names:
        pytest.skip("none of wandb, mlflow, trackio is installed (pip install '.[test]')")
    for var in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "TRACKIO_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    train("sft", output=str(tmp_path), steps=3, log_steps=1, report_to=names, quiet=True)
    logged = metrics(tmp_path)
    assert logged.keys() == {1, 2, 3} and "loss" in logged[1]
    for name in names:
        assert_same(STORES[name](tmp_path), logged, name)


@pytest.mark.integration
def test_trl_names_reach_the_reporter_and_metrics_jsonl_keeps_the_specs(tmp_path, monkeypatch):
    pytest.importorskip("trackio")
    monkeypatch.delenv("TRACKIO_DIR", raising=False)
    train("dpo", output=str(tmp_path), steps=2, log_steps=1, report_to="trackio", metric_names="trl", quiet=True)
    logged, seen = metrics(tmp_path), trackio_history(tmp_path)
    assert {"chosen_reward", "reward_margin", "reward_accuracy", "lr"} <= logged[1].keys()
    for step, row in logged.items():
        assert seen[step]["rewards/chosen"] == pytest.approx(row["chosen_reward"], rel=1e-6)
        assert seen[step]["rewards/margins"] == pytest.approx(row["reward_margin"], rel=1e-6)
        assert seen[step]["rewards/accuracies"] == pytest.approx(row["reward_accuracy"], rel=1e-6)
        assert seen[step]["learning_rate"] == pytest.approx(row["lr"], rel=1e-6)
        assert seen[step]["loss"] == pytest.approx(row["loss"], rel=1e-6)
        assert "chosen_reward" not in seen[step] and "lr" not in seen[step]


def test_a_reporter_not_installed_stops_before_step_1_with_the_install_command(tmp_path, monkeypatch):
    real = reporters.importlib.util.find_spec
    monkeypatch.setattr(reporters.importlib.util, "find_spec", lambda n, *a: None if n == "trackio" else real(n, *a))
    with pytest.raises(RuntimeSetupError) as err:
        train("sft", output=str(tmp_path / "out"), steps=1, report_to=("tensorboard", "trackio"), quiet=True)
    assert "trackio" in str(err.value) and "pip install" in err.value.render()
    assert not (tmp_path / "out").exists()  # stopped before the run made anything


def test_an_unknown_reporter_or_naming_is_an_error_with_the_choices():
    with pytest.raises(RuntimeSetupError) as err:
        reporters.check(("wandbb",))
    assert "did you mean" in err.value.render() and "wandb" in err.value.render()
    with pytest.raises(RuntimeSetupError, match="--metric-names"):
        reporters.check((), "hf")


def test_trl_renaming_changes_only_the_mapped_names():
    row = {"loss": 1.0, "chosen_reward": 2.0, "reward_margin": 3.0, "lr": 0.1, "nll": 4.0}
    assert reporters.renamed(row, "ptdsl") == row
    assert reporters.renamed(row, "trl") == {"loss": 1.0, "rewards/chosen": 2.0, "rewards/margins": 3.0,
                                             "learning_rate": 0.1, "nll": 4.0}


@pytest.mark.integration
def test_each_source_of_a_weighted_reward_gets_its_mean(tmp_path, monkeypatch):
    """0.8 * acc_t + 0.2 * fmt_t: the logged source means are those of the scores the verifiers
    returned at that step, and mix to the spec's own mean_reward."""
    scores: dict[str, list] = {"acc_t": [], "fmt_t": []}

    def acc_t(prompts, completions, answer, **_):
        scores["acc_t"].append(v := embedded.accuracy(prompts, completions, answer))
        return v

    def fmt_t(prompts, completions, **_):
        scores["fmt_t"].append(v := embedded.digits(prompts, completions))
        return v
    monkeypatch.setattr(registry, "_REGISTRY", {"acc_t": acc_t, "fmt_t": fmt_t})
    spec = (ROOT / "methods" / "grpo.ptdsl").read_text().replace(
        'reward r = verifier("accuracy")', 'reward r = 0.8 * verifier("acc_t") + 0.2 * verifier("fmt_t")')
    (tmp_path / "weighted.ptdsl").write_text(spec)
    train(str(tmp_path / "weighted.ptdsl"), output=str(tmp_path / "out"), steps=2, batch_size=2,
          params={"num_generations": 4}, quiet=True)
    logged = metrics(tmp_path / "out")
    assert len(scores["acc_t"]) == len(scores["fmt_t"]) == 2  # scored once a step
    for step, row in logged.items():
        acc = sum(scores["acc_t"][step - 1]) / len(scores["acc_t"][step - 1])
        fmt = sum(scores["fmt_t"][step - 1]) / len(scores["fmt_t"][step - 1])
        assert row["rewards/acc_t/mean"] == pytest.approx(acc, rel=1e-9)
        assert row["rewards/fmt_t/mean"] == pytest.approx(fmt, rel=1e-9)
        assert row["mean_reward"] == pytest.approx(0.8 * acc + 0.2 * fmt, rel=1e-5)
