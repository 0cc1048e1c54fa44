"""`ptdsl train`'s option surface (issue 12 item 6): a YAML `--config`, TRL's flag names,
`--epochs`, did-you-mean for a mistyped flag, `--format json`, and a missing data file.

What reaches train() is observed by replacing ptdsl's own train() (the plumbing under test
ends there); what the options do is checked by real runs on the embedded default."""
import json

import pytest

from ptdsl.cli.main import main
from ptdsl.runtime import loop


@pytest.fixture
def seen(monkeypatch) -> list:
    """The (method, keywords) of each train() call, which returns at once."""
    calls = []

    def fake(method, **kwargs):
        calls.append((method, kwargs))
        return {"step": 1, "loss": 0.5}
    monkeypatch.setattr(loop, "train", fake)
    return calls


def _yaml(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_trl_flag_names_reach_train_as_ptdsl_options(seen):
    assert main(["train", "dpo", "--learning_rate", "0.01", "--per_device_train_batch_size", "4",
                 "--gradient_accumulation_steps", "2", "--bf16", "--logging_steps", "5", "--save_steps", "3",
                 "--num_train_epochs", "2.5", "--max_steps", "7", "--output_dir", "o", "--quiet"]) == 0
    (method, kw), = seen
    assert method == "dpo"
    assert kw == {"learning_rate": 0.01, "batch_size": 4, "grad_accum": 2, "mixed_precision": "bf16",
                  "log_steps": 5, "save_steps": 3, "epochs": 2.5, "steps": 7, "output": "o", "quiet": True}


def test_a_config_file_sets_options_and_flags_override_it(seen, tmp_path):
    cfg = _yaml(tmp_path, "method: orpo\nlearning_rate: 0.02\nper_device_train_batch_size: 2\nbf16: true\n"
                          "precompute: false\nset: [beta=0.3]\ntemperature: 0.5\nreport_to: [tensorboard]\n"
                          "data: [d.jsonl]\nseed: 7\n")
    assert main(["train", "--config", cfg, "--seed", "9", "--quiet"]) == 0
    (method, kw), = seen
    assert method == "orpo"
    assert kw == {"learning_rate": 0.02, "batch_size": 2, "mixed_precision": "bf16", "precompute": False,
                  "params": {"beta": 0.3}, "rollout": {"temperature": 0.5}, "report_to": ("tensorboard",),
                  "data": ["d.jsonl"], "seed": 9, "quiet": True}


def test_params_may_be_a_mapping_and_the_method_argument_wins(seen, tmp_path):
    cfg = _yaml(tmp_path, "method: orpo\nparams: {beta: 0.25}\nno_precompute: true\n")
    assert main(["train", "dpo", "--config", cfg, "--quiet"]) == 0
    (method, kw), = seen
    assert method == "dpo" and kw["params"] == {"beta": 0.25} and kw["precompute"] is False


@pytest.mark.parametrize("text,message", [
    ("learning_rat: 0.1\n", "unknown option `learning_rat`; did you mean `learning_rate`"),
    ("batch_size: eight\n", "`batch_size` takes a number, not 'eight'"),
    ("bf16: 1\n", "`bf16` takes true or false"),
    ("mixed_precision: fp8\n", "`mixed_precision` is one of no, bf16, fp16"),
    ("seed: [1, 2]\n", "`seed` takes one value"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("a: [\n", "is not valid YAML"),
    ("!!python/object/apply:os.system ['true']\n", "is not valid YAML"),  # safe_load: never builds objects
])
def test_config_mistakes_are_usage_errors_naming_the_key(seen, tmp_path, capsys, text, message):
    with pytest.raises(SystemExit) as info:
        main(["train", "dpo", "--config", _yaml(tmp_path, text)])
    assert info.value.code == 2 and message in capsys.readouterr().err and not seen


def test_a_missing_config_file_and_a_missing_method_are_usage_errors(seen, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "dpo", "--config", str(tmp_path / "none.yaml")])
    assert "No such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--config", _yaml(tmp_path, "seed: 1\n")])
    assert "train needs a METHOD" in capsys.readouterr().err


@pytest.mark.parametrize("argv,hint", [
    (["train", "dpo", "--learning-rte", "0.1"], "did you mean `--learning_rate`"),
    (["train", "dpo", "--batchsize", "2"], "did you mean `--batch-size`"),
    (["show", "dpo", "--unoptimized"], "did you mean `--unoptimised`"),
])
def test_a_mistyped_flag_gets_the_nearest_flags(seen, capsys, argv, hint):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "unrecognized arguments" in err and hint in err and not seen


def test_json_summary_is_one_object_on_stdout(seen, capsys):
    assert main(["train", "dpo", "--output", "runs/a", "--format", "json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"method": "dpo", "output": "runs/a", "metrics": {"step": 1, "loss": 0.5}, "steps": 1,
                       "model": "runs/a/final", "metrics_file": "runs/a/metrics.jsonl",
                       "plot": "ptdsl plot runs/a", "reporters": []}


def test_the_text_summary_says_where_the_metrics_curves_and_reporter_stores_are(seen, capsys):
    assert main(["train", "dpo", "--output", "runs/b", "--report-to", "tensorboard"]) == 0
    out = capsys.readouterr().out
    assert "metrics in runs/b/metrics.jsonl" in out and "`ptdsl plot runs/b` writes runs/b/curves.png" in out
    assert "tensorboard: runs/b/ptdsl" in out and seen[-1][1]["report_to"] == ("tensorboard",)


@pytest.mark.parametrize("data", ["missing.jsonl", "./nowhere/rows", "~/no_such_ptdsl_dir/x.parquet"])
def test_a_missing_local_data_file_says_no_such_file(tmp_path, capsys, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "sft", "--data", data, "--steps", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"no such file: `{data}`" in err and "Hub" not in err and "Traceback" not in err


@pytest.mark.integration
@pytest.mark.parametrize("epochs,steps", [("1", 2), ("1.5", 3), ("2", 4)])
def test_epochs_set_the_number_of_optimizer_steps(tmp_path, epochs, steps):
    """16 rows at 8 per step: an epoch is 2 optimizer steps."""
    out = tmp_path / "o"
    assert main(["train", "sft", "--max-examples", "16", "--batch-size", "8", "--epochs", epochs,
                 "--output", str(out), "--quiet", "--format", "json"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))


def test_epochs_must_be_positive(tmp_path, capsys):
    assert main(["train", "sft", "--epochs", "0", "--output", str(tmp_path / "o")]) == 1
    assert "--epochs must be a positive number" in capsys.readouterr().err


@pytest.mark.integration
def test_a_config_file_drives_a_real_run(tmp_path, capsys):
    out = tmp_path / "o"
    cfg = _yaml(tmp_path, f"method: sft\nmax_steps: 3\nper_device_train_batch_size: 4\nlearning_rate: 0.001\n"
                          f"output_dir: {out}\nlogging_steps: 1\n")
    assert main(["train", "--config", cfg, "--format", "json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 3 and [r["step"] for r in rows] == [1, 2, 3]
    assert summary["metrics"]["loss"] == pytest.approx(rows[-1]["loss"])
