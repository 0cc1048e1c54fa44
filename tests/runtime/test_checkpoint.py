"""Checkpoints --resume can trust: every kind of damage is named, the newest valid
checkpoint is chosen, and a resumed run trains exactly as an uninterrupted one and
logs each step once. metrics.jsonl stays strict JSON."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from ptdsl.runtime import checkpoint, metrics_log
from ptdsl.runtime.checkpoint import Layout
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.loop import train

ARGS = dict(steps=4, save_steps=1, batch_size=4, max_examples=32, quiet=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 4-step run that kept checkpoint-2 and checkpoint-3."""
    out = tmp_path_factory.mktemp("run")
    train("dpo", output=str(out), **ARGS)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(run, out)
    return out


def _truncate(f: Path):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _chosen(out: Path, total: int = 4):
    found, skipped = checkpoint.choose(out, total, Layout())
    return found, {p.name: reason for p, reason in skipped}


@pytest.mark.integration
def test_a_saved_checkpoint_is_valid_and_has_a_manifest(run):
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    found, skipped = _chosen(run)
    assert found.path.name == "checkpoint-3" and found.step == 3 and skipped == {}
    manifest = json.loads((found.path / "manifest.json").read_text())["files"]
    assert manifest["model.safetensors"] == (found.path / "model.safetensors").stat().st_size


@pytest.mark.integration
@pytest.mark.parametrize("damage, reason", [
    (lambda c: (c / "trainer_state.json").write_text("{not json"), "trainer_state.json is not valid JSON"),
    (lambda c: (c / "trainer_state.json").write_text('{"step": -5}'), "says step -5"),
    (lambda c: _truncate(c / "model.safetensors"), "`model.safetensors` has"),
    (lambda c: _truncate(c / "optimizer.bin"), "`optimizer.bin` has"),
    (lambda c: (c / "random_states_0.pkl").unlink(), "`random_states_0.pkl` is missing"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(run, tmp_path, damage, reason):
    out = _copy(run, tmp_path)
    damage(out / "checkpoint-3")
    found, skipped = _chosen(out)
    assert found.path.name == "checkpoint-2"
    assert reason in skipped["checkpoint-3"], skipped


@pytest.mark.integration
def test_damage_without_a_manifest_is_still_found(run, tmp_path):
    """A checkpoint written before manifests existed: the file checks alone catch a cut file."""
    out = _copy(run, tmp_path)
    (out / "checkpoint-3" / "manifest.json").unlink()
    _truncate(out / "checkpoint-3" / "optimizer.bin")
    found, skipped = _chosen(out)
    assert found.path.name == "checkpoint-2" and "not a complete torch file" in skipped["checkpoint-3"]
    (out / "checkpoint-2" / "manifest.json").unlink()
    _truncate(out / "checkpoint-2" / "model.safetensors")
    found, skipped = _chosen(out)
    assert found is None and "unreadable" in skipped["checkpoint-2"]


@pytest.mark.integration
def test_misnamed_incomplete_and_out_of_run_checkpoints_are_skipped(run, tmp_path):
    out = _copy(run, tmp_path)
    shutil.copytree(out / "checkpoint-3", out / "checkpoint-latest")
    (out / "checkpoint-9").mkdir()
    (out / "checkpoint-9" / "trainer_state.json").write_text('{"step": 9}')
    found, skipped = _chosen(out, total=10)
    assert found.path.name == "checkpoint-3"
    assert "not named `checkpoint-<step>`" in skipped["checkpoint-latest"]
    assert "`config.json`, `custom_checkpoint_0.pkl`, `optimizer.bin`, `random_states_0.pkl` are missing" \
        in skipped["checkpoint-9"]
    found, skipped = _chosen(out, total=2)  # a shorter run: checkpoint-3 is beyond it
    assert found.path.name == "checkpoint-2" and "not one of this run's steps (1 to 2)" in skipped["checkpoint-3"]


@pytest.mark.integration
def test_non_finite_weights_are_never_resumed_from(run, tmp_path):
    """A checkpoint written by an older ptdsl with NaN weights is skipped, with the count."""
    from safetensors.torch import load_file, save_file
    out = _copy(run, tmp_path)
    f = out / "checkpoint-3" / "model.safetensors"
    weights = load_file(str(f))
    first = sorted(weights)[0]
    weights[first].view(-1)[:7] = float("nan")
    save_file(weights, str(f), metadata={"format": "pt"})
    (out / "checkpoint-3" / "manifest.json").unlink()
    found, skipped = _chosen(out)
    assert found.path.name == "checkpoint-2" and "holds 7 non-finite weights" in skipped["checkpoint-3"]


@pytest.mark.integration
def test_resume_past_a_damaged_checkpoint_trains_as_the_uninterrupted_run(run, tmp_path, capsys):
    out = _copy(run, tmp_path)
    shutil.rmtree(out / "final")
    _truncate(out / "checkpoint-3" / "optimizer.bin")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"loss": 0.69, "st')  # a kill mid-write
    train("dpo", output=str(out), resume=True, **{**ARGS, "quiet": False})
    text = capsys.readouterr()
    assert "skipping" in text.out + text.err and "checkpoint-3" in text.out + text.err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    want = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx(want, rel=1e-6)
    from safetensors.torch import load_file
    a, b = load_file(str(out / "final" / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_metrics_are_strict_json_with_non_finite_values_as_text(tmp_path):
    metrics_log.append(tmp_path, {"step": 1, "loss": float("nan"), "grad_norm": float("inf"), "m": -math.inf})
    line = (tmp_path / "metrics.jsonl").read_text()
    row = json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in {line}"))
    assert row == {"step": 1, "loss": "nan", "grad_norm": "inf", "m": "-inf"}
    assert math.isnan(float(row["loss"])) and float(row["m"]) == -math.inf


def test_truncate_keeps_steps_up_to_the_checkpoint(tmp_path):
    for step in (1, 2, 3, 4):  # a run killed after step 4, resumed from checkpoint-2
        metrics_log.append(tmp_path, {"step": step, "loss": float("nan") if step == 1 else float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')
    assert metrics_log.truncate(tmp_path, 2) == 3
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "loss": "nan"}\n{"step": 2, "loss": 2.0}\n'


@pytest.mark.integration
def test_resume_with_no_usable_checkpoint_names_every_reason(run, tmp_path):
    out = _copy(run, tmp_path)
    (out / "checkpoint-3" / "trainer_state.json").write_text("[]")
    (out / "checkpoint-2" / "optimizer.bin").unlink()
    with pytest.raises(RuntimeSetupError) as info:
        train("dpo", output=str(out), resume=True, **ARGS)
    assert str(info.value) == (f"--resume: no usable checkpoint in `{out}` (checkpoint-3: trainer_state.json has "
                               "no integer `step`; checkpoint-2: `optimizer.bin` is missing)")


@pytest.mark.integration
def test_a_checkpoint_is_the_policy_of_its_step_in_hugging_face_layout(tmp_path):
    """`from_pretrained(OUTPUT/checkpoint-N)` loads the weights the policy had after step N (seen
    by a callback on the model object being trained), with no `lm.` prefix."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from ptdsl.runtime import embedded
    tok = embedded.tokenizer()
    policy = embedded.model(tok, 0)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in embedded.dataset("preference", seed=0)[:32]))
    seen = {}

    class Snapshot:
        def on_step_end(self, step, metrics):
            if step == 2:  # the end of the third step: what checkpoint-3 must hold
                seen.update({k: v.detach().clone() for k, v in policy.state_dict().items()})
    out = tmp_path / "out"
    train("dpo", model=policy, tokenizer=tok, data=str(data), output=str(out), learning_rate=3e-3,
          callbacks=(Snapshot(),), **{**ARGS, "max_examples": None})
    loaded = AutoModelForCausalLM.from_pretrained(out / "checkpoint-3").state_dict()
    assert set(loaded) == set(seen) and all(torch.equal(loaded[k], seen[k]) for k in seen)
    assert not any(torch.equal(loaded[k], policy.state_dict()[k]) for k in ("lm_head.weight",))  # step 4 moved on
    assert not any(k.startswith("lm.") for k in load_file(str(out / "checkpoint-3" / "model.safetensors")))
    assert AutoTokenizer.from_pretrained(out / "checkpoint-3")("1+1=")["input_ids"]


@pytest.mark.integration
def test_a_checkpoint_of_ptdsl_0_2_still_resumes(run, tmp_path):
    """0.2 checkpoints held accelerate's files for the models (`lm.`-prefixed names, no
    config.json): --resume still loads them, and trains as the uninterrupted run."""
    from safetensors.torch import load_file, save_file
    out = _copy(run, tmp_path)
    shutil.rmtree(out / "final")
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in
                                               (run / "metrics.jsonl").read_text().splitlines()[:3]))
    shutil.rmtree(out / "checkpoint-2")
    old = out / "checkpoint-3"
    weights = load_file(str(old / "model.safetensors"))
    save_file({"lm." + k: v for k, v in weights.items()}, str(old / "model.safetensors"), metadata={"format": "pt"})
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "manifest.json"):
        (old / f).unlink(missing_ok=True)
    train("dpo", output=str(out), resume=True, **ARGS)
    a, b = load_file(str(out / "final" / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
