"""Reward sources as they reach the loss in a real training step: a weighted sum (`+` and
`-`, weights from params) of a built-in verifier, a verifier bound by
`ptdsl.rewards.register` and a reward model (a sequence classifier loaded from disk),
checked against each source computed independently — the reward model runs each
prompt + completion alone, unpadded."""
import copy

import pytest
import torch

import ptdsl
from ptdsl.runtime import embedded, loop
from ptdsl.runtime import rewards as registry

SPEC = """method grpo_mix extends grpo "GRPO on a mixed reward"
param w_model = 0.25 "weight of the reward model"
reward r = 0.5 * verifier("accuracy") + w_model * reward_model("{rm}") - verifier("long_answer") * 0.125
"""


def long_answer(prompts, completions, **_):
    return [float(len(c)) for c in completions]


@pytest.fixture
def reward_model(tmp_path):
    """A tiny sequence classifier (random weights, another seed than the policy) saved with the
    embedded tokenizer, as a user's reward model directory."""
    tok = embedded.tokenizer()
    model = embedded.model(tok, seed=11, sequence_classifier=True)
    path = tmp_path / "rm"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model.eval(), tok


@torch.no_grad()
def _score(model, tok, text: str) -> float:
    return float(model(torch.tensor([tok(text)["input_ids"]])).logits[0, 0])


@pytest.mark.integration
def test_a_weighted_sum_of_verifiers_and_a_reward_model_reaches_the_loss(tmp_path, reward_model, monkeypatch):
    path, model, tok = reward_model
    spec = tmp_path / "grpo_mix.ptdsl"
    spec.write_text(SPEC.format(rm=path))
    monkeypatch.setattr(registry, "_REGISTRY", {})  # what the test registers goes with it
    assert ptdsl.rewards.register("long_answer")(long_answer) is long_answer
    seen = []

    def inputs(ctx, batch):
        out = real(ctx, batch)
        seen.append((copy.deepcopy(batch), out["r(y)"].clone()))
        return out
    real = loop.loss_inputs
    monkeypatch.setattr(loop, "loss_inputs", inputs)
    loop.train(str(spec), output=str(tmp_path / "out"), steps=2, batch_size=4, max_examples=16, quiet=True,
               params={"num_generations": 4})
    assert len(seen) == 2
    for batch, got in seen:
        rows = batch.sets["y"]
        prompts = [e.prompt_text for e in batch.examples for _ in range(4)]
        answers = [e.columns["answer"] for e in batch.examples for _ in range(4)]
        assert len(rows.texts) == len(prompts) == 16
        right = embedded.accuracy(prompts, rows.texts, answers)
        scores = [_score(model, tok, p + c) for p, c in zip(prompts, rows.texts, strict=True)]
        want = [0.5 * a + 0.25 * s - len(c) * 0.125 for a, s, c in zip(right, scores, rows.texts, strict=True)]
        assert got.tolist() == pytest.approx(want, abs=1e-5)
        assert len(set(scores)) > 1 and any(c for c in rows.texts)  # every source varies: none drops out unseen
