"""`ptdsl train`'s optimisation and sampling flags, each with its observable effect, run
in-process through the CLI's `main()` on the embedded default: what the optimizer is
given at each step (learning rate, clipped gradient), what the model computes in
(--mixed-precision), what the sampler is asked for (--temperature, --max-tokens) and
what a seed fixes."""
import json

import pytest
import torch

from ptdsl.cli.main import main
from ptdsl.runtime import experience, loop
from ptdsl.runtime.setup import load_models


def _train(tmp_path, name, *args) -> list[dict]:
    out = tmp_path / name
    assert main(["train", *args, "--output", str(out), "--quiet"]) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def optimizer_steps(monkeypatch) -> list[dict]:
    """Each optimizer step's learning rate and the L2 norm of the gradient it is given."""
    seen = []
    make = loop._adamw

    def adamw(params, lr, weight_decay):
        opt = make(params, lr, weight_decay)
        grads = lambda: torch.cat([p.grad.flatten() for g in opt.param_groups for p in g["params"]  # noqa: E731
                                   if p.grad is not None])
        opt.register_step_pre_hook(lambda o, a, k: seen.append({"lr": o.param_groups[0]["lr"],
                                                                 "grad_norm": float(grads().norm())}))
        return opt
    monkeypatch.setattr(loop, "_adamw", adamw)
    return seen


@pytest.mark.integration
def test_lr_and_warmup_ratio_set_each_steps_learning_rate(tmp_path, optimizer_steps):
    rows = _train(tmp_path, "o", "sft", "--steps", "5", "--batch-size", "4", "--lr", "1e-3", "--warmup-ratio", "0.4")
    # int(0.4 · 5) = 2 warmup steps rising linearly to the peak, then linear decay to 0 after step 5
    want = [1e-3 * f for f in (1 / 2, 1, 1, 2 / 3, 1 / 3)]
    assert [s["lr"] for s in optimizer_steps] == pytest.approx(want, rel=1e-9)
    # the logged lr is the rate the step used (it was the next step's, as the schedule had moved on)
    assert [r["lr"] for r in rows] == pytest.approx(want, rel=1e-9)


@pytest.mark.integration
def test_max_grad_norm_clips_the_gradient_the_optimizer_gets(tmp_path, optimizer_steps):
    rows = _train(tmp_path, "clip", "sft", "--steps", "2", "--batch-size", "4", "--max-grad-norm", "0.05")
    assert all(r["grad_norm"] > 0.05 for r in rows)  # else clipping would not show
    assert [s["grad_norm"] for s in optimizer_steps] == pytest.approx([0.05, 0.05], rel=1e-4)
    optimizer_steps.clear()
    rows = _train(tmp_path, "none", "sft", "--steps", "2", "--batch-size", "4", "--max-grad-norm", "0")
    assert [s["grad_norm"] for s in optimizer_steps] == pytest.approx([r["grad_norm"] for r in rows], rel=1e-4)


@pytest.mark.integration
def test_seed_fixes_model_data_and_samples(tmp_path):
    args = ["grpo", "--steps", "2", "--batch-size", "2", "--set", "num_generations=4"]
    a, b = _train(tmp_path, "a", *args, "--seed", "3"), _train(tmp_path, "b", *args, "--seed", "3")
    other = _train(tmp_path, "c", *args, "--seed", "4")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "step_time"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    assert [r["completion_length"] for r in a] != [r["completion_length"] for r in other] or \
        [r["grad_norm"] for r in a] != [r["grad_norm"] for r in other]


@pytest.mark.integration
def test_mixed_precision_bf16_runs_the_model_in_bfloat16(tmp_path, monkeypatch):
    dtypes = []

    def load(*a, **kw):
        models = load_models(*a, **kw)
        models.policy.model.layers[0].self_attn.q_proj.register_forward_hook(
            lambda mod, args, out: dtypes.append(out.dtype))
        return models
    monkeypatch.setattr(loop, "load_models", load)
    full = _train(tmp_path, "no", "sft", "--steps", "2", "--batch-size", "4")
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    half = _train(tmp_path, "bf16", "sft", "--steps", "2", "--batch-size", "4", "--mixed-precision", "bf16")
    assert set(dtypes) == {torch.bfloat16}
    # bfloat16 keeps 8 bits of mantissa: the loss agrees to about 2⁻⁸ relative, and not exactly
    assert half[0]["loss"] == pytest.approx(full[0]["loss"], rel=2e-2) and half[0]["loss"] != full[0]["loss"]
    dtypes.clear()  # and the next run in this process is in float32 again (accelerate's state is per process)
    again = _train(tmp_path, "again", "sft", "--steps", "2", "--batch-size", "4")
    assert set(dtypes) == {torch.float32} and [r["loss"] for r in again] == [r["loss"] for r in full]


@pytest.mark.integration
def test_temperature_and_max_tokens_reach_the_sampler(tmp_path, monkeypatch):
    calls, lengths = [], []

    def load(*a, **kw):
        models = load_models(*a, **kw)
        generate = models.policy.generate

        def spy(*args, **kwargs):
            calls.append((kwargs["temperature"], kwargs["max_new_tokens"]))
            return generate(*args, **kwargs)
        models.policy.generate = spy
        return models

    def micro(*a, **kw):
        batches = real(*a, **kw)
        lengths.extend(len(c) for b in batches for c in b.sets["y"].completion_ids)
        return batches
    real = experience.Experiences.minibatch
    monkeypatch.setattr(loop, "load_models", load)
    monkeypatch.setattr(experience.Experiences, "minibatch", micro)
    args = ["grpo", "--steps", "2", "--batch-size", "2", "--set", "num_generations=4"]
    _train(tmp_path, "default", *args)
    from ptdsl.runtime.embedded import ROLLOUT_MAX_TOKENS
    assert calls == [(1.0, ROLLOUT_MAX_TOKENS)] * 2  # grpo's temperature param; the embedded task's length
    calls.clear()
    lengths.clear()
    _train(tmp_path, "set", *args, "--temperature", "0.5", "--max-tokens", "2")
    assert calls == [(0.5, 2)] * 2
    assert len(lengths) == 16 and max(lengths) == 2
