"""GKD's on-policy mixing (TRL GKDConfig.lmbda): `sample(…, on_policy = λ)` samples a
micro-batch's completions with probability λ and otherwise uses the dataset's; the loss
is the same JSD on whichever completions the batch holds (gkd_lambda re-declares
gkd_on_policy's `let`s: a declaration in tests/equivalence/test_identities.py; TRL's
`generalized_jsd_loss` checks it in test_distill_batch.py), scored at temperature 1 as
TRL's `generalized_jsd_loss` is called (its temperature argument left at 1.0)."""
from __future__ import annotations

import pytest

import ptdsl
from ptdsl.runtime import rollout
from ptdsl.runtime.loop import train
from ptdsl.runtime.step import scoring_temperatures


@pytest.mark.parametrize("method", ["gkd_lambda", "gkd_on_policy"])
def test_student_samples_are_scored_untempered(method):
    assert scoring_temperatures(ptdsl.compile(method).plan) == {"y": 1.0}


def test_the_draw_is_lambda_and_reproducible():
    spec = ptdsl.compile("gkd_lambda", lmbda=0.3).plan.rollouts["y"]
    draws = [rollout.samples_now(spec, 0, step, micro) for step in range(1, 1001) for micro in range(2)]
    assert 0.27 < sum(draws) / len(draws) < 0.33
    assert draws == [rollout.samples_now(spec, 0, step, micro) for step in range(1, 1001) for micro in range(2)]
    never = ptdsl.compile("gkd_lambda", lmbda=0.0).plan.rollouts["y"]
    always = ptdsl.compile("gkd_lambda", lmbda=1.0).plan.rollouts["y"]
    assert not any(rollout.samples_now(never, 0, s, 0) for s in range(500))
    assert all(rollout.samples_now(always, 0, s, 0) for s in range(500))


@pytest.mark.integration
@pytest.mark.parametrize("lmbda,forbidden", [(0.0, "sample"), (1.0, "from_dataset")])
def test_training_uses_only_the_chosen_source(tmp_path, monkeypatch, lmbda, forbidden):
    def fail(*a, **k):
        raise AssertionError(f"{forbidden} called with lmbda = {lmbda}")
    monkeypatch.setattr(rollout, forbidden, fail)
    m = train("gkd_lambda", params={"lmbda": lmbda}, output=str(tmp_path), steps=2, batch_size=4, quiet=True)
    assert m["step"] == 2


def test_off_policy_rows_are_the_dataset_completions():
    from ptdsl.runtime import embedded
    from ptdsl.runtime.setup import load_examples, load_models
    c = ptdsl.compile("gkd_lambda")
    models = load_models(c, None, 0)
    examples = load_examples(c, None, models.tokenizer, 64, None, 0, log=lambda m: None)[:3]
    rows = rollout.from_dataset(examples, "sft", models.tokenizer)
    assert rows.completion_ids == [e.completions["completion"] for e in examples]
    assert rows.texts == [r["completion"] for r in embedded.dataset("sft", n=3)]


@pytest.mark.parametrize("spec", [
    "data sft\npolicy\nrollout y = sample(policy, n = 2, on_policy = 0.5)\nloss mean(logp(policy, y))\n",
    "data prompts\npolicy\nrollout y = sample(policy, n = 1, on_policy = 0.5)\nloss mean(logp(policy, y))\n",
    "data preference\npolicy\nrollout y = sample(policy, n = 1, on_policy = 0.5)\nloss mean(logp(policy, y))\n",
])
def test_on_policy_needs_one_sample_and_one_dataset_set(tmp_path, spec):
    path = tmp_path / "m.ptdsl"
    path.write_text('method m "m"\n' + spec)
    with pytest.raises(ptdsl.SpecError) as err:
        ptdsl.compile(ptdsl.load(str(path)))
    assert any(d.code == "E0403" and "on_policy" in d.message for d in err.value.diagnostics)
