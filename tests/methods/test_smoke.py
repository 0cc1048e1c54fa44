"""Every library method compiles to a training step that runs an optimizer step on the
embedded tiny model (online, distillation and reward-model methods included), and that step
trains: the gradient is finite and non-zero, and every trainable tensor (the policy's, a
value head's) moves by the first AdamW step's size.

That size is derived, not observed: AdamW's first update of an entry is
lr·g/(|g| + ε) (ε = 1e-8, no weight decay), so every entry with |g| ≫ ε moves by lr
and the largest move in a tensor that gets any gradient is lr to float precision."""
import json
import math
import zlib

import pytest
import torch

import ptdsl
from ptdsl import library
from ptdsl.runtime import embedded, embedded_tools, loop
from ptdsl.runtime.rewards import verifier_uses
from ptdsl.runtime.setup import load_models



def _lr(name: str) -> float:
    """The embedded default's learning rate for a method (runtime/loop.py): the tool model's for
    methods that play episodes."""
    plan = ptdsl.compile(name).plan
    return embedded_tools.LEARNING_RATE if embedded_tools.applies(plan) else embedded.LEARNING_RATE


def distinct(prompts, completions, **_):
    """A reward that tells any two different completions apart (a hash of the text), so a
    group of samples that are not all the same has a non-zero advantage at step 1. The
    embedded `accuracy` gives most samples of a random model 0, and a batch whose groups all
    score alike has no gradient at all (rebel, rloo and two_grpo on this batch); test_train.py
    trains with `accuracy` itself. In [0, 2): about half of all texts reach 1.0, the threshold
    of a binary verifier (rest_em keeps those samples)."""
    texts = [c if isinstance(c, str) else json.dumps(c, sort_keys=True) for c in completions]  # episodes: messages
    return [zlib.crc32(t.encode()) / 2 ** 31 for t in texts]


def _trainable(models) -> dict[str, torch.Tensor]:
    mods = {"policy": models.policy, **models.heads, **models.critics}
    return {f"{m}.{n}": p.detach() for m, mod in mods.items() for n, p in mod.named_parameters() if p.requires_grad}


@pytest.mark.integration
@pytest.mark.parametrize("name", library.all_names())
def test_one_optimizer_step_trains(tmp_path, name, monkeypatch):
    loaded, start = [], {}

    def spy(*args, **kw):
        models = load_models(*args, **kw)
        start.update({k: v.clone() for k, v in _trainable(models).items()})
        loaded.append(models)
        return models
    monkeypatch.setattr(loop, "load_models", spy)
    verifiers = sorted({v for v, _ in verifier_uses(ptdsl.load(name).definition)})
    # the default path (reference precompute included) on a small slice of the embedded data
    metrics = loop.train(name, output=str(tmp_path), steps=1, batch_size=4, max_examples=16, quiet=True,
                         reward_fns=[f"{v}={__name__}:distinct" for v in verifiers])
    assert metrics["step"] == 1 and math.isfinite(metrics["loss"])
    assert "grad_norm" in metrics and math.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0, metrics
    after = _trainable(loaded[0])
    assert after.keys() == start.keys()
    moves = {k: float((after[k] - start[k]).abs().max()) for k in after}
    still = [k for k, d in moves.items() if d == 0]
    # during a critic's warm-up (vapo: 50 steps) only the critic learns: the policy must stay put
    learners = ptdsl.compile(name).plan.learners
    warming = any(learner.warmup_steps > 0 for learner in learners)
    expect_still = [k for k in moves if k.startswith("policy.")] if warming else []
    assert still == expect_still, f"trainable tensors the step did not move: {still}; expected {expect_still}"
    # Adam's first step moves each parameter group's largest entry by its learning rate
    scale = {learner.name: learner.lr_scale for learner in learners}
    for group in {k.split(".")[0] for k in moves if k not in still}:
        biggest = max(d for k, d in moves.items() if k.split(".")[0] == group)
        assert biggest == pytest.approx(_lr(name) * scale.get(group, 1.0), rel=1e-3), group
    assert (tmp_path / "final" / "config.json").exists()
