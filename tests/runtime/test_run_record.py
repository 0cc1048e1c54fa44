"""OUTPUT/run.json (issue 12 item 5): a run's record, read back and checked against what the run
was given and what it used."""
import hashlib
import json
from importlib import metadata

import pytest

import ptdsl
from ptdsl.runtime import run_record


@pytest.mark.integration
def test_run_json_records_method_options_versions_and_mode(tmp_path, capsys):
    out = tmp_path / "o"
    ptdsl.train("dpo", output=str(out), steps=2, batch_size=4, seed=3, params={"beta": 0.2}, log_steps=1,
                max_examples=16)  # a slice: the reference's precompute covers 16 examples, not 4096
    run = json.loads((out / "run.json").read_text())
    spec = (ptdsl.load("dpo").path)
    text = open(spec, encoding="utf-8").read()
    want_hash = hashlib.sha256(b"dpo.ptdsl\0" + text.encode() + b"\0").hexdigest()
    assert run["method"] == "dpo" and run["spec_sha256"] == want_hash and run["spec_files"] == ["dpo.ptdsl"]
    assert run["params"]["beta"] == 0.2 and run["seed"] == 3 and run["steps"] == 2
    assert run["options"]["batch_size"] == 4 and run["options"]["output"] == str(out)
    assert run["distributed"] == "one process (cpu)" and run["processes"] == 1
    assert run["models"]["policy"] == "embedded(seed=3)" and run["data"] is None
    assert run["versions"]["ptdsl"] == ptdsl.__version__
    assert run["versions"]["torch"] == metadata.version("torch")
    printed = capsys.readouterr()
    assert f"train `dpo` (spec {want_hash[:12]}), one process (cpu), seed 3" in printed.out + printed.err


def test_a_changed_spec_changes_the_hash(tmp_path):
    a = tmp_path / "a.ptdsl"
    text = open(ptdsl.load("dpo").path, encoding="utf-8").read().replace("method dpo", "method mine", 1)
    a.write_text(text)
    first = run_record.spec_hash(ptdsl.compile(str(a)))
    a.write_text(text.replace("logsigmoid(z)", "logsigmoid(z + 0)", 1))
    assert run_record.spec_hash(ptdsl.compile(str(a))) != first


def test_dataset_objects_are_described_not_dumped():
    import datasets
    ds = datasets.Dataset.from_list([{"prompt": "a", "completion": "b"}] * 3)
    assert run_record._described(ds) == "Dataset 3"
    assert run_record._described({"forget": "f.jsonl", "retain": ds}) == {"forget": "f.jsonl", "retain": "Dataset 3"}
    assert run_record._described(["a=x.jsonl"]) == ["a=x.jsonl"]


@pytest.mark.integration
def test_a_value_head_is_saved_as_safetensors_that_load_into_a_linear(tmp_path):
    import torch
    from safetensors.torch import load_file
    out = tmp_path / "o"
    ptdsl.train("ppo", output=str(out), steps=1, batch_size=2, quiet=True)
    weights = load_file(str(out / "final" / "value_head.safetensors"))
    head = torch.nn.Linear(weights["weight"].shape[1], 1)
    head.load_state_dict(weights)  # strict: exactly a Linear's weight and bias
    assert not (out / "final" / "value_head.pt").exists()
