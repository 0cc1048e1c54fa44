"""No silent non-finite update: a step whose loss or gradient is not finite stops the
run naming the IR node (or is skipped, counted and capped), weights an update
overflowed stop it too and are never saved, and the learning rate is blamed only
when the record says so."""
import json
from pathlib import Path

import pytest
import torch

from ptdsl.runtime import embedded
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.guard import Guard
from ptdsl.runtime.loop import train

SHORT = dict(steps=3, batch_size=4, max_examples=32, quiet=True)

# finite loss (sqrt(|0|) = 0), NaN gradient: sqrt's derivative at 0 is inf, abs's is 0
NAN_GRADIENT = '''method nangrad "a finite loss whose gradient is NaN"
data sft
policy
let d = logp(policy, completion) - stopgrad(logp(policy, completion))
loss mean(sqrt(abs(d)))
'''


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _initial_weights() -> dict:
    return embedded.model(embedded.tokenizer(), 0).state_dict()


def _final_weights(out: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(out / "final" / "model.safetensors"))


@pytest.mark.integration
def test_a_nan_gradient_under_a_finite_loss_names_the_op(tmp_path):
    spec = tmp_path / "nangrad.ptdsl"
    spec.write_text(NAN_GRADIENT)
    with pytest.raises(RuntimeSetupError) as info:
        train(str(spec), output=str(tmp_path / "o"), **SHORT)
    msg = str(info.value)
    assert "gradient is not finite at step 1" in msg and "although the loss is finite" in msg
    assert "flows into `abs` at " in msg and "nangrad.ptdsl:5:16" in msg
    assert "from the backward of `sqrt`" in msg and "nangrad.ptdsl:5:11" in msg
    assert "learning rate is not the cause" in info.value.help
    assert not (tmp_path / "o" / "final").exists() and not (tmp_path / "o" / "metrics.jsonl").exists()


@pytest.mark.integration
def test_an_overflowing_gradient_names_the_coefficient(tmp_path):
    """dpo with beta = 1e30: each gradient entry is finite, their norm overflows. Clipping
    used to scale that to a zero update every step, and the run ended with exit 0."""
    with pytest.raises(RuntimeSetupError) as info:
        train("dpo", output=str(tmp_path / "o"), params={"beta": 1e30}, **SHORT)
    msg = str(info.value)
    assert "gradient is not finite at step 1 (norm inf)" in msg
    assert "from the backward of `mul` (`rejected_reward`) at " in msg and "dpo.ptdsl:15:" in msg
    assert "lower the learning rate" not in info.value.help


@pytest.mark.integration
def test_skip_counts_each_bad_step_drops_its_update_and_stops_at_the_cap(tmp_path):
    out = tmp_path / "skip"
    train("dpo", output=str(out), params={"beta": 1e30}, nonfinite_grads="skip", max_skipped_steps=3, **SHORT)
    rows = _rows(out)
    assert [r["skipped_steps"] for r in rows] == [1, 2, 3]
    assert [r["grad_norm"] for r in rows] == ["inf"] * 3  # strict JSON: the text, not a bare Infinity
    start, final = _initial_weights(), _final_weights(out)
    assert all(torch.equal(final[k], start[k]) for k in final), "a skipped step changed the weights"
    with pytest.raises(RuntimeSetupError, match="at step 3.*2 steps skipped already"):
        train("dpo", output=str(tmp_path / "cap"), params={"beta": 1e30}, nonfinite_grads="skip",
              max_skipped_steps=2, **SHORT)


@pytest.mark.integration
def test_overflowed_weights_stop_the_run_and_are_never_saved(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(RuntimeSetupError) as info:
        train("sft", output=str(out), learning_rate=1e39, save_steps=1, **SHORT)
    assert "84,928 of 84,928 weights are not finite after the update of step 1" in str(info.value)
    assert "lower the learning rate (--lr, now 1e+39)" in info.value.help
    assert not list(out.glob("checkpoint-*")) and not (out / "final").exists()


@pytest.mark.integration
def test_divergence_after_updates_blames_the_learning_rate(tmp_path):
    with pytest.raises(RuntimeSetupError) as info:
        train("dpo", output=str(tmp_path / "o"), learning_rate=1e8, **SHORT)
    assert "not finite at step 2" in str(info.value)
    # Adam's first update moves each weight by about lr: a norm of about 1e8 · √84,928 ≈ 2.9e10
    assert "the weights' norm grew from 18.8 to 2.9e+10 in 1 update" in info.value.help
    assert "lower the learning rate (--lr, now 1e+08)" in info.value.help


def test_advice_follows_the_weights_record():
    w = torch.nn.Parameter(torch.full((4,), 0.5))  # norm 1
    guard = Guard(compiled=None, acc=None, params=[w], lr=1e-3)
    assert "not the cause" in guard._advice()
    guard.updates = 4
    assert "have not grown (norm 1 → 1 in 4 updates)" in guard._advice()
    with torch.no_grad():
        w.mul_(100)
    assert "norm grew from 1 to 100 in 4 updates" in guard._advice() and "--lr, now 0.001" in guard._advice()


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(RuntimeSetupError, match="--nonfinite-grads takes stop or skip, got `ignore`"):
        train("sft", output=str(tmp_path), nonfinite_grads="ignore")
    with pytest.raises(RuntimeSetupError, match="--max-skipped-steps must be 0 or more"):
        train("sft", output=str(tmp_path), max_skipped_steps=-1)


@pytest.mark.integration
def test_a_nan_metric_under_a_finite_loss_warns_once_with_its_line(tmp_path, capsys):
    spec = tmp_path / "nanmetric.ptdsl"
    spec.write_text('method nanmetric "SFT with a metric that is NaN"\ndata sft\npolicy\n'
                    'loss -mean(logp(policy, completion))\n'
                    'metric odd = mean(log(logp(policy, completion)))\n')
    train(str(spec), output=str(tmp_path / "o"), **{**SHORT, "quiet": False})
    text = capsys.readouterr()
    text = text.out + text.err
    assert text.count("warning: metric `odd` is nan at step 1 while the loss is finite") == 1
    assert "nanmetric.ptdsl:5:1" in text
    assert [r["odd"] for r in _rows(tmp_path / "o")] == ["nan"] * 3
