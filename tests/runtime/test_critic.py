"""A separate critic in real runs (embedded default): its warm-up trains only it, --critic-lr
sets its step size, it is checkpointed and restored bit for bit, ppo trains with a head or a
critic, and the flag without a critic is refused before anything loads."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import ptdsl
from ptdsl.runtime import checkpoint, embedded
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.loop import train

SMALL = dict(batch_size=2, max_examples=16, quiet=True)


def _initial_policy():
    return {k: v.detach() for k, v in embedded.model(embedded.tokenizer(), 0).state_dict().items()}


def _final(out):
    policy = load_file(str(out / "final" / "model.safetensors"))
    critic = load_file(str(out / "final" / "value" / "model.safetensors"))
    head = load_file(str(out / "final" / "value" / "value_head.safetensors"))
    return policy, critic, head


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.integration
def test_during_the_warm_up_only_the_critic_learns(tmp_path):
    out = tmp_path / "warm"
    train("ppo_critic", output=str(out), steps=2, params={"critic_warmup_steps": 2}, **SMALL)
    policy, critic, _ = _final(out)
    initial = _initial_policy()
    assert all(torch.equal(policy[k], initial[k]) for k in policy), "the policy moved during the warm-up"
    # the critic started as a copy of the initial policy's body (`critic(policy)`), and has moved
    body = {k[len("model."):]: v for k, v in initial.items() if k.startswith("model.")}
    assert set(critic) == set(body)
    assert any(not torch.equal(critic[k], body[k]) for k in critic)
    assert all(r["grad_norm_value"] > 0 for r in _metrics(out))


@pytest.mark.integration
def test_after_the_warm_up_the_policy_learns_too(tmp_path):
    out = tmp_path / "after"
    train("ppo_critic", output=str(out), steps=2, params={"critic_warmup_steps": 1}, **SMALL)
    policy, _, _ = _final(out)
    initial = _initial_policy()
    assert any(not torch.equal(policy[k], initial[k]) for k in policy)


@pytest.mark.integration
def test_critic_lr_sets_the_critics_step(tmp_path):
    """Adam's first update moves every weight with a gradient by lr·g/(|g| + ε) ≈ lr (no weight
    decay, the schedule at its full value at the only step), so the largest change of each
    model is its own learning rate: 1e-3 for the policy, --critic-lr 1e-2 for the critic."""
    out = tmp_path / "lr"
    train("ppo_critic", output=str(out), steps=1, learning_rate=1e-3, critic_lr=1e-2, **SMALL)
    policy, critic, _ = _final(out)
    initial = _initial_policy()
    body = {k[len("model."):]: v for k, v in initial.items() if k.startswith("model.")}
    moved_policy = max(float((policy[k] - initial[k]).abs().max()) for k in policy)
    moved_critic = max(float((critic[k] - body[k]).abs().max()) for k in critic)
    assert moved_policy == pytest.approx(1e-3, rel=1e-3)
    assert moved_critic == pytest.approx(1e-2, rel=1e-3)


@pytest.mark.integration
def test_lr_scale_is_the_default_critic_lr(tmp_path):
    out = tmp_path / "scale"
    train("ppo_critic", output=str(out), steps=1, learning_rate=1e-3, params={"critic_lr_scale": 3.0}, **SMALL)
    _, critic, _ = _final(out)
    body = {k[len("model."):]: v for k, v in _initial_policy().items() if k.startswith("model.")}
    assert max(float((critic[k] - body[k]).abs().max()) for k in critic) == pytest.approx(3e-3, rel=1e-3)


@pytest.mark.integration
def test_a_resumed_run_with_a_critic_ends_bit_for_bit_as_the_uninterrupted_one(tmp_path):
    """checkpoint-3 is inside an experience (ppo: 4 passes); the resumed run restores the policy,
    the critic, their optimizer states and the recorded `values(old(value), y)`."""
    args = dict(steps=4, save_steps=1, params={"critic_warmup_steps": 1}, **SMALL)
    full = tmp_path / "full"
    train("ppo_critic", output=str(full), **args)
    assert (full / "checkpoint-3" / "value" / "model.safetensors").is_file()  # the critic's weights
    saved = torch.load(full / "checkpoint-3" / checkpoint.experience_file(0), weights_only=True)
    assert "values(old(value), y)" in saved["minibatches"][0][0]["recorded"]
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "final")
    train("ppo_critic", output=str(resumed), resume=True, **args)
    for a, b in zip(_final(full), _final(resumed)):
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in _metrics(resumed)] == [r["loss"] for r in _metrics(full)]


@pytest.mark.integration
def test_a_checkpoint_without_the_critic_is_not_resumed_from(tmp_path):
    out = tmp_path / "run"
    train("ppo_critic", output=str(out), steps=2, save_steps=1, **SMALL)
    (out / "checkpoint-1" / "value" / "model.safetensors").unlink()  # the critic's body (the manifest lists it)
    layout = checkpoint.Layout(critics=("value",), experience=True)
    found, skipped = checkpoint.choose(out, 2, layout)
    assert found is None
    assert "`value/model.safetensors` is missing" in dict((p.name, r) for p, r in skipped)["checkpoint-1"]
    import shutil
    shutil.rmtree(out / "checkpoint-1" / "value")  # the whole folder, and no manifest: the layout still asks for it
    (out / "checkpoint-1" / "manifest.json").unlink()
    found, skipped = checkpoint.choose(out, 2, layout)
    assert found is None and "`value/config.json` is missing" in dict((p.name, r) for p, r in skipped)["checkpoint-1"]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["ppo", "ppo_critic"])
def test_ppo_trains_with_a_head_or_a_critic(tmp_path, method):
    """Four passes over each experience: the ratio is 1 at its first step and clipping acts after."""
    out = tmp_path / method
    train(method, output=str(out), steps=4, **SMALL)
    rows = _metrics(out)
    assert rows[0]["clip_ratio"] == 0 and max(r["clip_ratio"] for r in rows[1:]) > 0
    assert all(r["value_loss"] > 0 for r in rows)


@pytest.mark.integration
def test_vapo_trains(tmp_path):
    out = tmp_path / "vapo"
    train("vapo", output=str(out), steps=3, params={"value_warmup_steps": 1, "num_generations": 4}, **SMALL)
    rows = _metrics(out)
    assert rows[1]["clip_ratio"] == 0 and rows[2]["clip_ratio"] > 0  # the policy's first update is step 2
    assert all(0 <= r["lam_policy"] < 1 for r in rows)


def test_critic_lr_without_a_critic_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(RuntimeSetupError) as e:
        train("ppo", output=str(tmp_path), steps=1, critic_lr=1e-4, quiet=True)
    assert "--critic-lr 0.0001 is given, but `ppo` has no critic" in str(e.value)
    assert not any(tmp_path.iterdir())  # refused before anything was loaded or written


def test_the_plan_lists_the_critic_as_a_learner():
    c = ptdsl.compile("ppo_critic", critic_lr_scale=0.5, critic_warmup_steps=3)
    (learner,) = c.plan.learners
    assert (learner.name, learner.source, learner.lr_scale, learner.warmup_steps) == ("value", "critic(policy)", 0.5, 3)
    assert "learner value = critic(policy): own parameter group, lr × 0.5, alone for the first 3 steps" \
        in c.plan.describe()
    assert ptdsl.compile("ppo").plan.learners == ()


@pytest.mark.integration
def test_with_lora_the_critic_is_a_full_copy_of_the_base_body(tmp_path):
    """--lora-r puts adapters on the policy only: the critic was copied before they were injected,
    and all of its weights train."""
    out = tmp_path / "lora"
    train("ppo_critic", output=str(out), steps=1, lora_r=4, **SMALL)
    critic = load_file(str(out / "final" / "value" / "model.safetensors"))
    body = {k[len("model."):]: v for k, v in _initial_policy().items() if k.startswith("model.")}
    assert set(critic) == set(body) and not any("lora" in k for k in critic)
    assert all(not torch.equal(critic[k], body[k]) for k in critic if k.endswith("proj.weight"))
