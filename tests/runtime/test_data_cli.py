"""`ptdsl train` with a bad dataset: rejected before step 1 (exit 1, the rows named, no
traceback), or with --skip-invalid-rows trained on the rows that fit."""
import json

import pytest

from ptdsl.cli.main import main


def _write(tmp_path, bad_rows: dict[int, dict], n: int = 24):
    rows = [{"prompt": f"{i % 10}+1=", "chosen": str(i % 10 + 1), "rejected": str(i % 10 + 2)} for i in range(n)]
    for i, row in bad_rows.items():
        rows[i] = row
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return p


BAD = {2: {"prompt": "1+1=", "chosen": None, "rejected": "3"}, 17: {"prompt": "1+1=", "chosen": "2"}}


def test_a_bad_file_stops_train_before_step_1(tmp_path, capsys):
    data = _write(tmp_path, BAD)
    code = main(["train", "dpo", "--data", str(data), "--steps", "1", "--batch-size", "2",
                 "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: 2 of 24 rows of" in err and "row 3 (line 3): `chosen` is null" in err
    assert "row 18 (line 18): `rejected` is missing" in err and "--skip-invalid-rows" in err
    assert "Traceback" not in err and "E0901" not in err
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


@pytest.mark.integration
def test_skip_invalid_rows_trains_on_the_rest(tmp_path, capsys):
    data = _write(tmp_path, BAD)
    code = main(["train", "dpo", "--data", str(data), "--steps", "1", "--batch-size", "2",
                 "--output", str(tmp_path / "out"), "--skip-invalid-rows"])
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped 2 of 24 rows of" in out and "row 3 (line 3): `chosen` is null" in out
    assert (tmp_path / "out" / "metrics.jsonl").exists()


def test_prompts_without_the_column_a_verifier_reads_stop_before_step_1(tmp_path, capsys):
    """GRPO's `accuracy` reads `answer`: a prompt-only file without it used to train on reward 0
    everywhere (zero gradients, exit 0); one row lacking it is named too."""
    rows = [{"prompt": f"{i % 10}+1="} for i in range(8)]
    data = tmp_path / "p.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    code = main(["train", "grpo", "--data", str(data), "--steps", "1", "--batch-size", "2",
                 "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "needs the field `answer` (a verifier reads it)" in err and "Traceback" not in err
    rows = [{"prompt": f"{i % 10}+1=", "answer": str(i % 10 + 1)} for i in range(8)]
    del rows[5]["answer"]
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    code = main(["train", "grpo", "--data", str(data), "--steps", "1", "--batch-size", "2",
                 "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "row 6 (line 6): `answer` is missing" in err
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_conversational_data_needs_a_chat_template_or_chat_template_plain(tmp_path, capsys):
    rows = [{"prompt": [{"role": "user", "content": f"{i}+1="}],
             "completion": [{"role": "assistant", "content": str(i + 1)}]} for i in range(8)]
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    args = ["train", "sft", "--data", str(data), "--steps", "1", "--batch-size", "2", "--quiet"]
    assert main(args + ["--output", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "the dataset is conversational, and the embedded default's tokenizer has no chat template" in err
    assert "--chat-template plain" in err and err.count("no chat template") == 1   # once, not per row
    assert "Traceback" not in err and "E0901" not in err
    assert main(args + ["--output", str(tmp_path / "b"), "--chat-template", "plain"]) == 0
