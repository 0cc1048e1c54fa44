"""Asynchronous generation (runtime/async_gen.py, `--async-staleness K`): with K = 1 each
experience is sampled by the policy one version behind the step that trains on it, and the
`old` log-probs the loss reads are those of the sampling version's weights (checked against
an independent forward of the weights the trainer had at that version), not the current
policy's; K = 0 keeps the synchronous path's numbers; bad values and unsupported runs are
refused before step 1."""
import argparse
import copy
import sys

import pytest
import torch

from ptdsl.cli.train_flags import add_to
from ptdsl.runtime import async_gen, loop
from ptdsl.runtime.errors import RuntimeSetupError

REWARD = "def f(completions, **kwargs):\n    return [float(len(c) % 5) for c in completions]\n"
ARGS = dict(batch_size=2, max_examples=8, quiet=True, params={"num_generations": 2}, rollout={"max_tokens": 8})
# K = 0, two steps of ARGS, computed on the synchronous path before asynchronous generation
# existed: (loss, grad_norm, mean_reward) per step
PINNED_K0 = [(0.0, 1.4980319738388062, 2.5), (0.0, 1.114367127418518, 1.5)]


@pytest.fixture(scope="module")
def reward(tmp_path_factory):
    """A reward that varies with the completion, so the advantages (and the updates) are not 0."""
    where = tmp_path_factory.mktemp("reward")
    (where / "async_len_reward.py").write_text(REWARD)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(where))
        yield "async_len_reward:f"
    sys.modules.pop("async_len_reward", None)


def _train(out, reward, staleness: int, steps: int):
    """Train grpo; return (the metrics rows, the model, what each optimizer step's loss read:
    its step, its batch's sampling version, `old`, the rollout rows and the trainer's weights then)."""
    import json
    seen, real = [], loop.loss_inputs

    def spy(ctx, batch):
        inputs = real(ctx, batch)
        if torch.is_grad_enabled():  # the step's own loss (not a re-run of a non-finite step)
            seen.append({"step": ctx.clock.step, "version": batch.version, "rows": batch.sets["y"],
                         "old": inputs["logprobs(old, y)"].detach().clone(),
                         "weights": {k: v.detach().clone() for k, v in ctx.models.policy.state_dict().items()}})
        return inputs

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "loss_inputs", spy)
        result = loop.train("grpo", output=str(out), reward_fns=[reward], async_staleness=staleness, steps=steps,
                            **ARGS)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, result.model, seen


def _forward_logprobs(model, weights, rows) -> list[torch.Tensor]:
    """Each completion token's log-prob under `weights`, one unpadded row at a time (grpo
    scores at its sampling temperature, 1)."""
    m = copy.deepcopy(model)
    m.load_state_dict(weights)
    m.eval()
    out = []
    with torch.no_grad():
        for p, c in zip(rows.prompt_ids, rows.completion_ids):
            logits = m(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1:-1].float()
            out.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None])[:, 0])
    return out


@pytest.fixture(scope="module")
def k1(reward, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("k1"), reward, 1, 3)


@pytest.mark.integration
def test_old_is_the_sampling_versions_forward_not_the_current_policys(k1):
    rows, model, seen = k1
    assert [s["step"] for s in seen] == [0, 1, 2]
    assert [s["version"] for s in seen] == [0, 0, 1]  # after step 1: the trainer's version − 1
    assert [r[async_gen.METRIC] for r in rows] == [0.0, 1.0, 1.0]
    weights = [s["weights"] for s in seen]  # weights[v]: the policy after v optimizer steps
    for s in seen[1:]:
        assert any(not torch.equal(a, b) for a, b in zip(weights[s["step"]].values(), weights[s["version"]].values()))
        sampled = _forward_logprobs(model, weights[s["version"]], s["rows"])
        current = _forward_logprobs(model, weights[s["step"]], s["rows"])
        for i, (want, now) in enumerate(zip(sampled, current)):
            got = s["old"][i, :len(want)]
            torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
            assert (got - now).abs().max() > 1e-4  # the current policy's would be another number


@pytest.mark.integration
def test_k1_samples_are_reproducible_with_a_fixed_seed(k1, reward, tmp_path):
    rows, _, seen = k1
    again_rows, _, again = _train(tmp_path, reward, 1, 3)
    assert [s["rows"].completion_ids for s in again] == [s["rows"].completion_ids for s in seen]
    assert [r["loss"] for r in again_rows] == [r["loss"] for r in rows]


@pytest.mark.integration
def test_k0_keeps_the_synchronous_numbers(reward, tmp_path):
    rows, _, seen = _train(tmp_path, reward, 0, 2)
    assert [(r["loss"], r["grad_norm"], r["mean_reward"]) for r in rows] == PINNED_K0
    assert all(async_gen.METRIC not in r for r in rows) and {s["version"] for s in seen} == {None}


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True])
def test_a_staleness_that_is_not_a_whole_number_is_refused(bad, tmp_path):
    with pytest.raises(RuntimeSetupError, match=r"--async-staleness must be a whole number ≥ 0, got"):
        loop.train("grpo", output=str(tmp_path), async_staleness=bad, steps=1, quiet=True)


def test_runs_the_worker_cannot_serve_are_refused_before_step_1(tmp_path):
    with pytest.raises(RuntimeSetupError, match=r"`dpo` samples nothing \(it has no rollout\)"):
        loop.train("dpo", output=str(tmp_path), async_staleness=1, steps=1, quiet=True)
    with pytest.raises(RuntimeSetupError, match=r"--lora-dropout 0.1 draws from torch's global generator"):
        loop.train("grpo", output=str(tmp_path), async_staleness=2, lora_r=4, lora_dropout=0.1, steps=1, quiet=True)


def test_the_flag():
    parser = argparse.ArgumentParser()
    add_to(parser)
    assert parser.parse_args(["--async-staleness", "2"]).async_staleness == 2
    assert parser.parse_args([]).async_staleness is None  # the default (0) lives in TrainOptions
    assert loop.TrainOptions().async_staleness == 0


@pytest.mark.integration
def test_an_error_in_the_worker_stops_the_run_with_that_error(tmp_path, monkeypatch):
    """A verifier that raises while the worker scores: the trainer raises it (no hang)."""
    (tmp_path / "async_bad_reward.py").write_text("def f(completions, **kwargs):\n    raise ValueError('bad row')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Exception, match="bad row"):
        loop.train("grpo", output=str(tmp_path / "out"), reward_fns=["async_bad_reward:f"], async_staleness=1,
                   steps=2, **ARGS)


@pytest.mark.slow
def test_a_run_resumed_inside_an_experience_continues_it_with_its_version(reward, tmp_path):
    """Two passes per experience, K = 1: checkpoint-3 is taken inside experience 1 (sampled on
    version 1); the resumed run continues it from the saved file, version included, and its last
    step matches the uninterrupted run's."""
    import json
    import shutil
    args = dict(ARGS, params={"num_generations": 2, "num_iterations": 2}, max_examples=16)
    full = tmp_path / "full"
    loop.train("grpo", output=str(full), reward_fns=[reward], async_staleness=1, steps=4, save_steps=1, **args)
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "final")
    shutil.rmtree(resumed / "checkpoint-4", ignore_errors=True)
    loop.train("grpo", output=str(resumed), reward_fns=[reward], async_staleness=1, steps=4, save_steps=1,
               resume=True, **args)

    def rows(out):
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [(r["loss"], r[async_gen.METRIC]) for r in map(json.loads, lines)]
    assert rows(full) == rows(resumed)
    assert [s for _, s in rows(full)] == [0.0, 1.0, 1.0, 2.0]


def test_w0202_is_not_said_when_old_comes_from_the_sampling_version(tmp_path):
    """W0202 says `old` is the current policy (ratios 1) when each batch feeds one step; with
    K ≥ 1 the worker records `old` on the sampling version's weights, so the warning would be wrong."""
    import ptdsl
    spec = tmp_path / "no_update.ptdsl"
    spec.write_text('method no_update "GRPO without an update line"\nexperimental\ndata prompts\npolicy\n'
                    'reward r = verifier("accuracy")\nrollout y = sample(policy, n = 2)\n'
                    'let ratio = exp(logprobs(policy, y) - logprobs(old, y))\n'
                    'loss mean(mean_tokens(-ratio * (r(y) - group_mean(r(y)))))\n')
    compiled = ptdsl.compile(str(spec))
    assert [w.code for w in loop.startup_warnings(compiled, 0)] == ["W0202"]
    assert loop.startup_warnings(compiled, 1) == []
