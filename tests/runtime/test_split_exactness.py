"""Normalisation does not depend on how a batch is split: with the global row and
token counts given to the compiled loss, the gradients of the micro-batch losses
sum to the full-batch gradient — for a per-sequence mean (DPO, GRPO), a token
mean over the batch (SFT, DAPO) and a constant denominator (Dr. GRPO) — for
accumulation 1, 2 and 4, and for listwise losses over ranked lists of varying length. Random draws are per row (runtime/draws.py), so methods that
draw (SamPO's token subsets; random tokens of a grouped rollout) split exactly too.
(2 processes: test_train.py::test_two_processes_match_one.)"""
from pathlib import Path
import copy

import pytest
import torch

import ptdsl
from ptdsl.runtime import rollout
from ptdsl.runtime.batch import Batch, SetRows, list_sizes
from ptdsl.runtime.loop import _global_counts
from ptdsl.runtime.rewards import RewardSources
from ptdsl.runtime.setup import load_examples, load_models
from ptdsl.runtime.step import StepContext, build_batch, loss_inputs


class _OneProcess:
    num_processes, device = 1, "cpu"

    def reduce(self, t, op):
        return t


def _full_batch(compiled, n_prompts=8, seed=0):
    torch.manual_seed(seed)
    models = load_models(compiled, None, seed)
    examples = load_examples(compiled, None, models.tokenizer, 64, None, seed, log=lambda m: None)[:n_prompts]
    batch = build_batch(compiled, examples)
    for name, spec in compiled.plan.rollouts.items():
        rows = rollout.sample(models.policy, models.tokenizer, examples, spec, "cpu", {"max_tokens": 5})
        # ragged lengths on purpose: cut some completions short
        rows.completion_ids = [c[: 1 + i % 5] for i, c in enumerate(rows.completion_ids)]
        batch.sets[name] = rows
        rs = RewardSources(compiled.plan, (), embedded_default=True)
        n = spec.options["n"]
        cols = {"answer": [e.columns["answer"] for e in examples for _ in range(n)]}
        texts = [models.tokenizer.decode(c) for c in rows.completion_ids]
        batch.rewards["r(y)"] = rs.evaluate("r", [e.prompt_text for e in examples for _ in range(n)], texts, cols)
    return models, batch


def _split(compiled, batch: Batch, k: int) -> list[Batch]:
    """k micro-batches of whole examples (a rollout's groups stay together)."""
    parts = []
    for i in range(k):
        idx = list(range(i, len(batch.examples), k))
        b = build_batch(compiled, [batch.examples[j] for j in idx])
        for name, spec in compiled.plan.rollouts.items():
            n = spec.options["n"]
            rows = [j * n + t for j in idx for t in range(n)]
            full = batch.sets[name]
            b.sets[name] = SetRows([full.prompt_ids[r] for r in rows], [full.completion_ids[r] for r in rows],
                                   [full.truncated[r] for r in rows])
            b.rewards = {key: [v[r] for r in rows] for key, v in batch.rewards.items()}
        parts.append(b)
    return parts


def _grads(compiled, models, batches):
    policy = copy.deepcopy(models.policy)
    ctx = StepContext(compiled, copy.copy(models), "cpu", {}, {})
    ctx.models.policy = policy
    norm = _global_counts(compiled, batches, _OneProcess())
    total = 0.0
    for b in batches:
        loss, _ = compiled.loss(loss_inputs(ctx, b), normalizers=norm)
        loss.backward()
        total += loss.item()
    return total, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method,params", [
    ("dpo", {}), ("sft", {}), ("grpo", {"num_generations": 4}), ("dapo", {"num_generations": 4}),
    ("dr_grpo", {"num_generations": 4, "max_completion_length": 5}),
    ("sampo", {}), (str(Path(__file__).parent / "specs" / "grpo_token_dropout.ptdsl"), {}),
    # ranked lists of 2, 3 and 4 responses (the embedded lists vary), so micro-batches hold
    # different numbers of response rows: each list's loss averaged over lists still splits exactly
    ("pro", {}), ("rrhf", {}), ("lipo", {}), ("infonca", {}),
])
def test_accumulation_gives_the_full_batch_gradient(method, params):
    compiled = ptdsl.compile(method, **params)
    models, batch = _full_batch(compiled)
    if compiled.plan.data == "ranked":
        assert len(set(list_sizes(batch.examples, "responses"))) == 3  # lists of 2, 3 and 4 in one batch
    full_loss, full = _grads(compiled, models, [batch])
    assert any(g.abs().sum() > 0 for g in full.values())
    for k in (2, 4):
        loss, split = _grads(compiled, models, _split(compiled, batch, k))
        assert abs(loss - full_loss) < 1e-5 * max(1, abs(full_loss)), (k, loss, full_loss)
        for name in full:
            torch.testing.assert_close(split[name], full[name], rtol=1e-4, atol=1e-7, msg=f"{method} k={k} {name}")


def test_local_means_would_differ():
    """Without global counts, token means of micro-batches do not sum to the full loss."""
    compiled = ptdsl.compile("sft")
    models, batch = _full_batch(compiled)
    ctx = StepContext(compiled, models, "cpu", {}, {})
    full = compiled.loss(loss_inputs(ctx, batch))[0].item()
    parts = _split(compiled, batch, 2)
    local = sum(compiled.loss(loss_inputs(ctx, b))[0].item() for b in parts) / 2
    assert abs(local - full) > 1e-6
