"""Experience reuse (`update passes = …`) in real training runs.

* Against TRL 1.16's GRPOTrainer, its own training loop, with num_iterations = 2 and
  steps_per_generation = 2: both runs start from the same tiny model and get the same
  completions and rewards (injected: TRL's `_generate` and ptdsl's `generators.sample_rows`
  return fixed token ids, one reward table serves both). The per-step losses of all
  8 optimizer steps (2 generations × 2 passes × 2 mini-batches) and the recorded old
  log-probs of both generations agree. TRL shuffles each generation batch's rows
  before splitting it into micro-batches (`shuffle_sequence_dict`); the test patches
  that to the identity, so TRL's micro-batches are ptdsl's mini-batches, in ptdsl's
  order (TRL's dataset is given ptdsl's prompt order, without shuffling).
* The recorded `old` log-probs equal the policy's before the experience's first
  update, and differ from the current ones after it.
"""
from __future__ import annotations

import json
import os
import random
import warnings

import pytest
import torch

import ptdsl
from ptdsl.runtime import embedded, experience, generators
from ptdsl.runtime import rewards as reward_registry
from ptdsl.runtime.batch import SetRows
from ptdsl.runtime.step import loss_inputs

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

N_GEN, PROMPTS, LR, STEPS = 2, 2, 1e-2, 8
OLD = "logprobs(old, y)"


def _task(tmp_path):
    """8 distinct prompts (two experiences of 2 mini-batches × 2 prompts), each with N_GEN fixed
    completions (1–3 digits and EOS, every text distinct) and a reward per completion text."""
    tok = embedded.tokenizer()
    rng = random.Random(7)
    prompts = [f"{a}+{b}=" for a, b in [(1, 2), (3, 4), (5, 1), (2, 7), (8, 0), (6, 6), (9, 3), (4, 4)]]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "answer": "0"}) + "\n" for p in prompts))
    texts, completions, rewards = set(), {}, {}
    for p in prompts:
        completions[p] = []
        while len(completions[p]) < N_GEN:
            text = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 3)))
            if text in texts:
                continue
            texts.add(text)
            completions[p].append(tok.convert_tokens_to_ids(list(text)) + [tok.eos_token_id])
            rewards[text] = round(rng.random(), 3)
    return tok, data, completions, rewards


def _reward_fn(rewards):
    def fixed(prompts, completions, **_):
        return [rewards[c] for c in completions]
    return fixed


def _inject_samples(monkeypatch, tok, completions, seen):
    """ptdsl's rollouts return the fixed completions of each prompt (and note its prompt ids): the
    policy's samples come from its generator through generators.sample_rows."""
    def sample(generator, tok_, examples, spec, overrides=None, keep_logprobs=False):
        n = int(spec.options["n"])
        for e in examples:
            seen[e.prompt_text] = e.prompt_ids
        comps = [c for e in examples for c in completions[e.prompt_text][:n]]
        return SetRows([e.prompt_ids for e in examples for _ in range(n)], comps, [False] * len(comps),
                       [tok.decode(c[:-1]) for c in comps])
    monkeypatch.setattr(generators, "sample_rows", sample)


def _train_ptdsl(tmp_path, monkeypatch, method="grpo", **params):
    tok, data, completions, rewards = _task(tmp_path)
    seen, made = {}, []
    _inject_samples(monkeypatch, tok, completions, seen)
    monkeypatch.setitem(reward_registry._REGISTRY, "accuracy", _reward_fn(rewards))
    make = experience.Experiences.make

    def keep(self, k):
        made.append(make(self, k))
        return made[-1]
    monkeypatch.setattr(experience.Experiences, "make", keep)
    out = tmp_path / "ptdsl"
    ptdsl.train(method, data=str(data), output=str(out), params={"num_generations": N_GEN, **params}, steps=STEPS,
                batch_size=PROMPTS, learning_rate=LR, warmup_ratio=0.0, max_grad_norm=1.0, quiet=True)
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return losses, made, seen


def _train_trl(tmp_path, monkeypatch, order, prompt_ids, completions, rewards):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    import trl.trainer.grpo_trainer as grpo_module
    # TRL shuffles the rows of each generation batch before splitting it into micro-batches;
    # the identity keeps its micro-batches equal to ptdsl's mini-batches
    monkeypatch.setattr(grpo_module, "shuffle_sequence_dict", lambda batch: batch)
    tok = embedded.tokenizer()
    model = embedded.model(tok, 0)  # ptdsl.train's embedded model for seed 0: the same weights
    cfg = GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=PROMPTS * N_GEN,
                     num_generations=N_GEN, num_iterations=2, steps_per_generation=2, gradient_accumulation_steps=1,
                     max_completion_length=8, temperature=1.0, beta=0.0, loss_type="grpo", learning_rate=LR,
                     lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0, max_steps=STEPS,
                     optim="adamw_torch_fused", logging_steps=1, save_strategy="no", report_to="none",
                     disable_tqdm=True, use_cpu=True, bf16=False, seed=0, shuffle_dataset=False,
                     gradient_checkpointing=False, dataloader_num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(model=model, reward_funcs=_reward_fn(rewards), args=cfg,
                              train_dataset=Dataset.from_dict({"prompt": order}), processing_class=tok)

    def generate(prompts):  # RepeatSampler: each prompt N_GEN times in a row, the j-th gets completion j
        count: dict = {}
        comps = []
        for p in prompts:
            comps.append(completions[p][count.get(p, 0)])
            count[p] = count.get(p, 0) + 1
        return ([prompt_ids[p] for p in prompts], comps, None, [tok.decode(c[:-1]) for c in comps], None, {},
                None, None)

    losses, olds = [], []
    compute_loss, make = trainer._compute_loss, trainer._generate_and_score_completions

    def loss(model_, inputs):
        value = compute_loss(model_, inputs)
        losses.append(value.item())
        return value

    def generation(inputs):
        out = make(inputs)
        olds.append((out["old_per_token_logps"].detach().clone(), out["completion_mask"].bool()))
        return out
    trainer._generate, trainer._compute_loss, trainer._generate_and_score_completions = generate, loss, generation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return losses, olds


def _trl():
    trl = pytest.importorskip("trl")
    if trl.__version__ != "1.16.0":
        pytest.skip(f"needs trl==1.16.0 (found {trl.__version__})")


@pytest.mark.integration
def test_grpo_with_two_iterations_and_two_steps_per_generation_trains_as_trl(tmp_path, monkeypatch):
    _trl()
    params = {"num_iterations": 2, "steps_per_generation": 2}
    losses, made, prompt_ids = _train_ptdsl(tmp_path, monkeypatch, **params)
    assert [e.index for e in made] == [0, 1]  # two experiences, each made once for its 4 steps
    order = [e.prompt_text for exp in made for mb in exp.minibatches for b in mb for e in b.examples]
    assert sorted(order) == sorted(prompt_ids) and len(order) == 8
    _, _, completions, rewards = _task(tmp_path)
    trl_losses, trl_olds = _train_trl(tmp_path, monkeypatch, order, prompt_ids, completions, rewards)

    assert len(trl_losses) == len(losses) == STEPS
    # the policy moved (lr 1e-2): the reused steps are off-policy, so this is not the on-policy loss
    assert max(abs(v) for v in losses) > 1e-3
    assert losses == pytest.approx(trl_losses, rel=1e-4, abs=1e-6), (losses, trl_losses)
    assert len(trl_olds) == 2
    for exp, (trl_old, trl_mask) in zip(made, trl_olds):
        rows = 0
        for (batch,) in exp.minibatches:  # one micro-batch per mini-batch (grad accumulation 1)
            mine = batch.recorded[OLD]
            n, width = mine.shape
            mask = trl_mask[rows:rows + n, :width]
            assert int(mask.sum()) == sum(len(c) for c in batch.sets["y"].completion_ids)
            torch.testing.assert_close(mine[mask], trl_old[rows:rows + n, :width][mask], rtol=1e-5, atol=1e-6)
            rows += n
        assert rows == trl_old.shape[0]


@pytest.mark.integration
def test_recorded_old_is_the_policy_before_the_first_update_and_not_after(tmp_path, monkeypatch):
    """Each step's loss inputs, as the loop builds them: on an experience's first step the recorded
    old log-probs equal the policy's own (the weights have not moved since they were recorded);
    on its later steps they differ."""
    seen: list = []
    mb = experience.Experiences.minibatch

    def spy(self, step):
        batches = mb(self, step)
        with torch.no_grad():
            inputs = loss_inputs(self.ctx, batches[0])
        seen.append((step, inputs[OLD].clone(), inputs["logprobs(policy, y)"].clone(), inputs["mask(y)"]))
        return batches
    monkeypatch.setattr(experience.Experiences, "minibatch", spy)
    _train_ptdsl(tmp_path, monkeypatch, num_iterations=2, steps_per_generation=2)
    assert [s for s, *_ in seen] == list(range(STEPS))
    for step, old, current, mask in seen:
        if step % 4 == 0:  # the first step of experience step // 4
            torch.testing.assert_close(old[mask], current[mask], rtol=0, atol=1e-6)
        else:
            assert (old[mask] - current[mask]).abs().max() > 1e-4, step


@pytest.mark.integration
@pytest.mark.parametrize("args,per_experience", [(["grpo", "--set", "num_iterations=2", "--steps", "3"], 2),
                                                 (["ppo", "--steps", "5"], 4)], ids=["grpo", "ppo"])
def test_clipping_acts_after_the_first_update_of_each_experience(tmp_path, args, per_experience):
    """`ptdsl train` on the embedded default: on the first step of each experience the policy is the
    one that sampled, so no ratio is clipped; after an update on the same experience, ratios move
    past 1 ± ε and `clip_ratio` is positive (before issue 10 it was 0 in every run)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "ptdsl", "train", *args, "--output", str(tmp_path), "--quiet"],
                       cwd=root, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    firsts = [row for row in rows if (row["step"] - 1) % per_experience == 0]
    assert [row["step"] for row in firsts] == [1, per_experience + 1]
    assert all(row["clip_ratio"] == 0 for row in firsts)
    assert rows[1]["clip_ratio"] > 0  # step 2: the second step on experience 0


def test_trl_defaults_of_experience_reuse_match_the_specs():
    """num_iterations = 1 in GRPOConfig and RLOOConfig; steps_per_generation unset becomes the
    gradient accumulation steps, which the specs' 0 means."""
    _trl()
    import tempfile

    from trl import GRPOConfig, RLOOConfig
    for config, methods in ((GRPOConfig, ("grpo", "gdpo", "dapo", "minillm")), (RLOOConfig, ("rloo",))):
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = config(output_dir=tmp, use_cpu=True, bf16=False, report_to="none", gradient_accumulation_steps=3)
        assert cfg.steps_per_generation == cfg.gradient_accumulation_steps == 3
        for name in methods:
            params = ptdsl.load(name).params
            assert params["num_iterations"].default == cfg.num_iterations == 1
            assert params["steps_per_generation"].default == 0
            schedule = ptdsl.compile(name).plan.schedule
            assert schedule.minibatches_for(3) == cfg.steps_per_generation // 3 == 1
            assert ptdsl.compile(name, steps_per_generation=6).plan.schedule.minibatches_for(3) == 2
    ppo = ptdsl.load("ppo").params
    assert (ppo["num_ppo_epochs"].default, ppo["num_mini_batches"].default) == (4, 1)  # TRL 1.10 PPOConfig
