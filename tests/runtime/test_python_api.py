"""`ptdsl.train` from Python (issue 12 item 8): model and tokenizer objects, datasets objects, the
trained model in the result, and an unknown option named with the valid ones."""
import json

import datasets
import pytest
import torch

import ptdsl
from ptdsl.runtime import embedded

ROWS = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(4) for b in range(4)]


def _saved_model(tmp_path, seed=5):
    tok = embedded.tokenizer()
    model = embedded.model(tok, seed=seed)
    path = tmp_path / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_an_unknown_option_is_a_type_error_naming_the_nearest_and_all():
    with pytest.raises(TypeError) as info:
        ptdsl.train("sft", learning_rat=0.1)
    msg = str(info.value)
    assert "`learning_rat`" in msg and "did you mean `learning_rate`" in msg and "batch_size" in msg


@pytest.mark.integration
def test_objects_train_exactly_as_the_same_model_and_rows_from_disk(tmp_path):
    """A loaded model, its tokenizer and a datasets.Dataset give the per-step losses of the same
    model directory and the same rows in a .jsonl file; the result carries the trained model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = _saved_model(tmp_path)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    opts = dict(steps=3, batch_size=4, learning_rate=1e-2, quiet=True, log_steps=1)
    ptdsl.train("sft", model=str(path), data=str(data), output=str(tmp_path / "a"), **opts)

    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    tok.padding_side = "right"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = ptdsl.train("sft", model=model, tokenizer=tok, data=datasets.Dataset.from_list(ROWS),
                         output=str(tmp_path / "b"), **opts)
    assert _losses(tmp_path / "b") == pytest.approx(_losses(tmp_path / "a"), rel=1e-6)
    assert isinstance(result, dict) and result["loss"] == pytest.approx(_losses(tmp_path / "b")[-1])
    assert result.model is model and result.tokenizer is not tok  # trained in place; the tokenizer copied
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert tok.padding_side == "right"  # the caller's tokenizer is not changed


@pytest.mark.integration
def test_a_dataset_dict_trains_on_its_train_split(tmp_path):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:8]),
                               "validation": datasets.Dataset.from_list([{"prompt": "x"}])})  # not read
    result = ptdsl.train("sft", data=dd, output=str(tmp_path / "o"), steps=1, batch_size=4, quiet=True)
    assert "loss" in result and "eval/loss" not in result
    # its `test` split is the held-out data (test_evaluate.py), checked as the training rows are
    dd["test"] = datasets.Dataset.from_list([{"prompt": "x"}])
    with pytest.raises(ptdsl.RuntimeSetupError, match="needs the field `completion`, and `the DatasetDict's test "
                                                      "split` does not have it"):
        ptdsl.train("sft", data=dd, output=str(tmp_path / "o"), steps=1, batch_size=4, quiet=True)


@pytest.mark.parametrize("make,message", [
    (lambda: datasets.DatasetDict({"validation": datasets.Dataset.from_list(ROWS)}), "has no `train` split"),
    (lambda: datasets.Dataset.from_list([{"question": "1+1="}] * 2), "`prompt`"),
])
def test_dataset_objects_are_validated_like_files(tmp_path, make, message):
    with pytest.raises(ptdsl.RuntimeSetupError, match=message):
        ptdsl.train("sft", data=make(), output=str(tmp_path / "o"), steps=1, quiet=True)


def test_model_objects_are_checked(tmp_path):
    tok = embedded.tokenizer()
    with pytest.raises(ptdsl.RuntimeSetupError, match="is not a causal LM"):
        ptdsl.train("sft", model=embedded.model(tok, sequence_classifier=True), tokenizer=tok,
                    output=str(tmp_path / "o"), steps=1, quiet=True)
    with pytest.raises(ptdsl.RuntimeSetupError, match="its tokenizer cannot be found"):
        ptdsl.train("sft", model=embedded.model(tok), output=str(tmp_path / "o"), steps=1, quiet=True)
    with pytest.raises(ptdsl.RuntimeSetupError, match="without model="):
        ptdsl.train("sft", tokenizer=tok, output=str(tmp_path / "o"), steps=1, quiet=True)
    with pytest.raises(ptdsl.RuntimeSetupError, match="not int 3"):
        ptdsl.train("sft", model=3, output=str(tmp_path / "o"), steps=1, quiet=True)


def test_a_changed_model_object_is_not_served_another_weights_cache():
    """Precomputed reference log-probs are cached by model identity: an object's identity is its
    weights' fingerprint, not only its name."""
    from ptdsl.runtime.setup import _identity
    tok = embedded.tokenizer()
    a, b = embedded.model(tok, seed=1), embedded.model(tok, seed=1)
    assert _identity(a) == _identity(b)
    with torch.no_grad():
        b.lm_head.weight[0, 0] += 1e-3
    assert _identity(a) != _identity(b)


def test_a_saved_dataset_dict_without_a_train_split_is_named(tmp_path):
    """The same rule for a folder save_to_disk wrote as for the object (it was a bare KeyError)."""
    from ptdsl.runtime.datafiles import read_table
    folder = tmp_path / "dd"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(folder))
    with pytest.raises(ptdsl.RuntimeSetupError, match="has no `train` split"):
        read_table(str(folder))
