"""What reaches the loss in a real training step: every model query's leaf tensor of the
first micro-batch (log-probs, logits, entropies, value-head values, sequence and token
scores; live, `old` and precomputed; on dataset, rollout and mismatched sets) equals an
independent computation — each row run alone through a copy of the models as they were
loaded, unpadded, with Hugging Face's own forward, the row built from the examples
(not from the runtime's batch) wherever the data defines it.

The runtime batches rows of several sets into one left-padded forward, gathers
log-probs through a tiled kernel, slices completions at a shared column and looks
cached values up by example; a misaligned slice, a wrong row order, a wrong
temperature, a padding leak or a stale cache shows here as a wrong number."""
import copy

import pytest
import torch

import ptdsl
from ptdsl.runtime import loop
from ptdsl.runtime.setup import load_models

ATOL = 1e-5  # float32; padding and batching change summation order only


def _one_step(method: str, tmp_path, monkeypatch, **kw):
    """Train one step; (compiled, models as loaded, first micro-batch, its loss inputs)."""
    seen = {}

    def load(*a, **k):
        models = load_models(*a, **k)
        seen["models"] = copy.deepcopy(models)
        return models

    def inputs(ctx, batch):
        out = loop_inputs(ctx, batch)
        seen.setdefault("batch", copy.deepcopy(batch))
        seen.setdefault("inputs", {k: v.detach().clone() for k, v in out.items()})
        return out
    loop_inputs = loop.loss_inputs
    monkeypatch.setattr(loop, "load_models", load)
    monkeypatch.setattr(loop, "loss_inputs", inputs)
    loop.train(method, output=str(tmp_path), steps=1, batch_size=4, max_examples=16, quiet=True, **kw)
    return ptdsl.compile(method), seen["models"], seen["batch"], seen["inputs"]


def _rows(compiled, batch, s, eos: int) -> list[tuple[list[int], list[int], list[bool]]]:
    """(prompt ids, completion ids, which completion tokens the set holds) of each row of set
    `s`, from the examples themselves (rollouts: the sampled rows, checked against the prompts;
    with `mask_truncated`, a sample without EOS holds no token)."""
    info, ex = compiled.graph.graph["sets"][s], batch.examples
    if info.source == "data":
        return [(e.prompt_ids, e.completions[s], e.token_masks.get(s, [True] * len(e.completions[s]))) for e in ex]
    if info.source == "derived":  # mismatched: each prompt with the previous example's completion, cyclic
        return [(e.prompt_ids, ex[i - 1].completions[info.base], [True] * len(ex[i - 1].completions[info.base]))
                for i, e in enumerate(ex)]
    rows = batch.sets[s]
    n = len(rows) // len(ex)
    assert len(rows) == n * len(ex) and rows.prompt_ids == [e.prompt_ids for e in ex for _ in range(n)]
    cut = compiled.plan.rollouts[s].options.get("mask_truncated")
    return [(p, c, [not (cut and c[-1:] != [eos])] * len(c))
            for p, c in zip(rows.prompt_ids, rows.completion_ids, strict=True)]


def _model(models, q):
    """(Hugging Face model, value head or None) a query reads, as loaded."""
    name = "policy" if q.model == "old" else q.model[4:-1] if q.model.startswith("old(") else q.model
    if name in models.heads:
        return models.policy, models.heads[name]
    return (models.policy if name == "policy" else models.frozen[name]), None


@torch.no_grad()
def _expected(kind, model, head, prompt, completion, temperature):
    ids = torch.tensor([prompt + completion])
    P, L = len(prompt), len(completion)
    if kind == "score":  # the classifier's own pooling (its last token)
        return model(ids).logits[0, 0]
    if kind == "token_score":  # a causal classifier's score of each prefix ending at the token
        return torch.stack([model(ids[:, :P + t + 1]).logits[0, 0] for t in range(L)])
    if kind == "values":
        return head(model.model(ids).last_hidden_state[0, P - 1:P - 1 + L]).squeeze(-1)
    logits = model(ids).logits[0, P - 1:P - 1 + L].float() / temperature
    logp = torch.log_softmax(logits, -1)
    return {"logits": logits, "logprobs": logp[torch.arange(L), torch.tensor(completion)],
            "entropy": -(logp.exp() * logp).sum(-1)}[kind]


def _temperature(compiled, s) -> float:
    """A rollout is scored at its `score_temperature`, else at its sampling temperature."""
    r = compiled.plan.rollouts.get(s)
    if r is None or r.options.get("greedy"):
        return 1.0
    return float(r.options.get("score_temperature", r.options.get("temperature", 1.0)))


def _check_leaves(compiled, models, batch, inputs) -> set:
    kinds = set()
    for q in compiled.plan.queries:
        model, head = _model(models, q)
        got, mask = inputs[q.leaf], inputs[f"mask({q.set})"]
        rows = _rows(compiled, batch, q.set, models.tokenizer.eos_token_id)
        assert got.shape[0] == mask.shape[0] == len(rows), q.leaf
        compared = 0
        for r, (prompt, completion, held) in enumerate(rows):
            L, want = len(completion), _expected(q.output, model, head, prompt, completion, _temperature(compiled,
                                                                                                          q.set))
            assert mask[r, :L].tolist() == held and not mask[r, L:].any(), (q.leaf, r)
            if q.output == "score":
                torch.testing.assert_close(got[r], want, atol=ATOL, rtol=0, msg=f"{q.leaf} row {r}")
                compared += 1
                continue
            m = torch.tensor(held, dtype=torch.bool)
            torch.testing.assert_close(got[r, :L][m], want[m], atol=ATOL, rtol=0, msg=f"{q.leaf} row {r}")
            compared += int(m.sum())
        assert compared, f"{q.leaf}: no token to compare"
        kinds.add((q.output, q.role_kind, compiled.graph.graph["sets"][q.set].source))
    return kinds


CASES = {  # method: (query kinds (output, role, set source) it must cover, the run's options)
    "ppo": ({("values", "value_head", "rollout"), ("values", "old", "rollout"), ("logprobs", "frozen_copy", "rollout"),
             ("logprobs", "old", "rollout")}, {}),
    "entropy_8020": ({("entropy", "policy", "rollout")}, {}),
    "gkd": ({("logits", "model", "data"), ("logits", "policy", "data")}, {}),
    "gkd_on_policy": ({("logits", "model", "rollout")}, {}),
    "kto": ({("logprobs", "policy", "derived"), ("logprobs", "frozen_copy", "derived")}, {}),
    "tdpo1": ({("logits", "frozen_copy", "data")}, {}),
    "dpo": ({("logprobs", "frozen_copy", "data")}, {}),            # precomputed: read from the cache
    "dpo@live": ({("logprobs", "frozen_copy", "data")}, {"precompute": False}),
    "reward_model": ({("score", "policy", "data")}, {}),
    "prm": ({("token_score", "policy", "data")}, {}),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_leaf_of_a_real_step_matches_an_independent_forward(case, tmp_path, monkeypatch):
    method = case.split("@")[0]
    want, options = CASES[case]
    compiled, models, batch, inputs = _one_step(method, tmp_path, monkeypatch, **options)
    covered = _check_leaves(compiled, models, batch, inputs)
    assert want <= covered, want - covered
