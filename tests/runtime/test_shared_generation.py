"""Shared-prompt generation (runtime/prefill.py, issue 14 item 2): the n samples of a prompt
read one prefill of it, and sample from the same distributions as the unshared path.

References: the unshared path (`prefix_sharing=False`: `generate` prefills every row), a
fresh forward of the model over prompt + completion without a KV cache, and the exact
first- and second-token distributions (one forward per candidate first token, V = 21)
for a chi-square test of the sampled tokens."""
import math

import pytest
import torch
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

from ptdsl.ir.declare import Rollout
from ptdsl.runtime import embedded, prefill
from ptdsl.runtime.data import Example
from ptdsl.runtime.queries import run_model
from ptdsl.runtime.rollout import GeometricMixture, sample

TOK = embedded.tokenizer()
TEXTS = ["1+2=", "7+8=33", "3*3=?", "12"]   # ragged: 5, 7, 6 and 3 tokens with BOS


def _model(kind: str, seed: int = 0, sharpen: float = 1.0):
    """A tiny causal LM from a config; `sharpen` scales its LM head (random-init logits are
    nearly uniform; the statistical test wants a peaked, not degenerate, distribution)."""
    cfg = dict(vocab_size=len(TOK), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, pad_token_id=TOK.pad_token_id,
               bos_token_id=TOK.bos_token_id, eos_token_id=TOK.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**cfg))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**cfg))
    else:  # a window shorter than every prompt but one: the cache keeps only its last 3 keys
        model = MistralForCausalLM(MistralConfig(sliding_window=4, **cfg))
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
    return model.eval()


def _examples(texts=TEXTS):
    return [Example(i, p, [TOK.bos_token_id] + TOK(p, add_special_tokens=False)["input_ids"], {})
            for i, p in enumerate(texts)]


def _prefill_widths(model, run):
    """Run `run()` and return the [rows, columns] of every forward of `model`'s embeddings."""
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    try:
        run()
    finally:
        hook.remove()
    return seen


KINDS = ["llama", "qwen2", "mistral_sliding_window"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_prompt_is_prefilled_once_for_its_samples(kind):
    """4 prompts × n = 3: one prefill of the 4 distinct prompts' first P − 1 columns, then
    `generate` runs the last prompt column for all 12 rows; unshared it prefills 12 rows."""
    model = _model(kind)
    roll = Rollout("y", "policy", {"n": 3, "greedy": True})
    shared = _prefill_widths(model, lambda: sample(model, TOK, _examples(), roll, "cpu", {"max_tokens": 2}))
    unshared = _prefill_widths(model, lambda: sample(model, TOK, _examples(), roll, "cpu", {"max_tokens": 2},
                                                     prefix_sharing=False))
    assert shared[:2] == [(4, 6), (12, 1)]
    assert unshared[0] == (12, 7)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("keep_logprobs", [False, True])
def test_greedy_decoding_is_token_identical(kind, keep_logprobs):
    """Greedy completions equal the unshared path's token for token (past the sliding window:
    12 new tokens), and so do the recorded log-probs within fp32 rounding. The empty prompt
    (BOS alone) has only padding in the prefilled columns."""
    model = _model(kind, sharpen=20.0)
    roll = Rollout("y", "policy", {"n": 3, "greedy": True})
    examples = _examples(TEXTS + [""])
    a = sample(model, TOK, examples, roll, "cpu", {"max_tokens": 12}, keep_logprobs)
    b = sample(model, TOK, examples, roll, "cpu", {"max_tokens": 12}, keep_logprobs, prefix_sharing=False)
    assert a.completion_ids == b.completion_ids and a.truncated == b.truncated
    assert len({tuple(c) for c in a.completion_ids}) > 1   # the prompts lead to different answers
    if keep_logprobs:
        for x, y in zip(a.sampler_logprobs, b.sampler_logprobs):
            torch.testing.assert_close(torch.tensor(x), torch.tensor(y), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_sampled_logprobs_are_the_models_under_teacher_forcing(kind):
    """The sampler log-probs recorded with sharing equal log softmax(z / T) of a fresh forward
    (no cache) over the sampled prompt + completion."""
    model = _model(kind, sharpen=5.0)
    torch.manual_seed(0)
    rows = sample(model, TOK, _examples(), Rollout("y", "policy", {"n": 3, "temperature": 0.7}), "cpu",
                  {"max_tokens": 10}, keep_logprobs=True)
    res = run_model(model, {"y": rows}, ["y"], {"y": ["logprobs"]}, 0, "cpu", frozen=True,
                    temperatures={"y": 0.7})
    want, mask = res[("logprobs", "y")], res[("mask", "y")]
    got = torch.zeros_like(want)
    for i, lp in enumerate(rows.sampler_logprobs):
        got[i, :len(lp)] = torch.tensor(lp)
    assert mask.sum() > 40
    torch.testing.assert_close(got[mask], want[mask], rtol=0, atol=1e-5)


def test_a_fixed_seed_reproduces_the_samples():
    model = _model("llama", sharpen=5.0)
    roll = Rollout("y", "policy", {"n": 4})
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(sample(model, TOK, _examples(), roll, "cpu", {"max_tokens": 8}, keep_logprobs=True))
    assert runs[0].completion_ids == runs[1].completion_ids
    assert runs[0].sampler_logprobs == runs[1].sampler_logprobs


# ---- the sampling distribution ----------------------------------------------------------------

def _exact_two_token_law(model, prompt_ids):
    """The first token's distribution p1 [V] and the second token's marginal p2 [V] after a
    prompt: Σ_t p1(t)·p(·|prompt, t), where a first EOS leaves a pad (generate's filler)."""
    V = len(TOK)
    with torch.no_grad():
        p1 = model(torch.tensor([prompt_ids])).logits[0, -1].double().softmax(-1)
        grown = torch.tensor([prompt_ids + [t] for t in range(V)])
        cond = model(grown).logits[:, -1].double().softmax(-1)
    cond[TOK.eos_token_id] = 0
    cond[TOK.eos_token_id, TOK.pad_token_id] = 1
    return p1, p1 @ cond


def _chi_square_p_value(counts, probs):
    """Pearson's goodness of fit, cells with an expected count below 5 pooled into one; the
    p-value is the chi-square survival function, Q(df / 2, x / 2)."""
    N = counts.sum()
    expected = probs * N
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum()[None]])
    exp = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    stat = ((obs - exp) ** 2 / exp).sum()
    df = len(exp) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2))


def _token_counts(rows, prompt, position):
    V = len(TOK)
    toks = [c[position] if len(c) > position else TOK.pad_token_id
            for p, c in zip(rows.prompt_ids, rows.completion_ids) if p == prompt]
    return torch.bincount(torch.tensor(toks), minlength=V).double()


@pytest.mark.parametrize("share", [True, False])
def test_sampled_tokens_follow_the_models_distribution(share):
    """2 ragged prompts × n = 1500: the first and second sampled tokens of each prompt fit the
    exact distributions (chi-square, α = 1e-4 per test; 8 tests), with and without sharing.
    The control: the first prompt's samples tested against the second prompt's law fail, so
    a gather that crossed prompts' caches would be caught."""
    model = _model("mistral", sharpen=6.0)
    examples = _examples(["1+2=", "7+8=33"])
    torch.manual_seed(7)
    rows = sample(model, TOK, examples, Rollout("y", "policy", {"n": 1500}), "cpu", {"max_tokens": 2},
                  prefix_sharing=share)
    laws = [_exact_two_token_law(model, e.prompt_ids) for e in examples]
    for e, (p1, p2) in zip(examples, laws):
        assert p1.max() < 0.9 and (p1 > 0.02).sum() >= 3   # peaked, not degenerate
        assert _chi_square_p_value(_token_counts(rows, e.prompt_ids, 0), p1) > 1e-4
        assert _chi_square_p_value(_token_counts(rows, e.prompt_ids, 1), p2) > 1e-4
    assert _chi_square_p_value(_token_counts(rows, examples[0].prompt_ids, 0), laws[1][0]) < 1e-6


# ---- which rows share, and which models ---------------------------------------------------------

def test_repeated_prompts_share_a_prefill_even_with_one_sample_each():
    model = _model("llama")
    examples = _examples(["1+2=", "7+8=", "1+2="])
    roll = Rollout("y", "policy", {"n": 1, "greedy": True})
    widths = _prefill_widths(model, lambda: sample(model, TOK, examples, roll, "cpu", {"max_tokens": 2}))
    assert widths[0] == (2, 4)


def test_distinct_prompts_or_the_switch_off_prefill_every_row():
    model = _model("llama")
    roll = Rollout("y", "policy", {"n": 1, "greedy": True})
    distinct = _prefill_widths(model, lambda: sample(model, TOK, _examples(), roll, "cpu", {"max_tokens": 2}))
    assert distinct[0] == (4, 7)
    grouped = Rollout("y", "policy", {"n": 2, "greedy": True})
    off = _prefill_widths(model, lambda: sample(model, TOK, _examples(), grouped, "cpu",
                                                {"max_tokens": 2, "prefix_sharing": False}))
    assert off[0] == (8, 7)


def test_prompt_groups_key_on_the_mask_too():
    """A pad id that is also a real token: equal padded ids, different masks, different prompts."""
    ids = torch.tensor([[0, 5], [0, 5], [0, 5]])
    att = torch.tensor([[0, 1], [1, 1], [0, 1]])
    groups = prefill.prompt_groups(i + a for i, a in zip(ids.tolist(), att.tolist()))
    assert groups == prefill.PromptGroups([0, 1], [0, 1, 0])


def test_other_cache_kinds_are_not_gathered():
    """A static cache (or a model configured to use one) is sampled unshared, not gathered."""
    from transformers.cache_utils import StaticCache
    model = _model("llama")
    assert prefill.shareable(model)
    assert prefill.gathered_cache(StaticCache(config=model.config, max_cache_len=8), torch.tensor([0, 0])) is None
    model.generation_config.cache_implementation = "static"
    assert not prefill.shareable(model)


# ---- the geometric mixture's own decode loop ------------------------------------------------------

@pytest.mark.parametrize("greedy", [True, False])
def test_the_mixture_shares_its_prefill(greedy):
    """Both models prefill the distinct prompts once; greedy tokens and the mixed log-probs
    equal the unshared loop's (sampled: the same seed draws the same tokens, whose log-probs
    then agree within fp32 rounding)."""
    a, b = _model("llama", 0, sharpen=10.0), _model("mistral", 1, sharpen=10.0)
    roll = Rollout("y", "mix", {"n": 3, "greedy": greedy, "temperature": 0.8})
    runs = []
    for share in (True, False):
        torch.manual_seed(3)
        widths = _prefill_widths(a, lambda: runs.append(sample(GeometricMixture(a, b, 0.4), TOK, _examples(), roll,
                                                               "cpu", {"max_tokens": 10}, True, share)))
        assert widths[0] == ((4, 7) if share else (12, 7))
    assert runs[0].completion_ids == runs[1].completion_ids
    for x, y in zip(runs[0].sampler_logprobs, runs[1].sampler_logprobs):
        torch.testing.assert_close(torch.tensor(x), torch.tensor(y), rtol=0, atol=1e-5)


def test_chi_square_helper_matches_a_known_quantile():
    """Pearson's statistic 3.84 on 1 degree of freedom has p ≈ 0.05 (the textbook value)."""
    counts = torch.tensor([50.0 + math.sqrt(3.84 * 25), 50.0 - math.sqrt(3.84 * 25)])
    assert abs(_chi_square_p_value(counts, torch.tensor([0.5, 0.5])) - 0.05) < 1e-3


def test_a_frozen_models_once_samples_share_too_unless_switched_off():
    """`once = true` rollouts (rollout.sample_once) sample prompt by prompt: each prompt's n
    samples read one prefill; `prefix_sharing=False` reaches `sample`."""
    from ptdsl.runtime.rollout import sample_once
    model = _model("llama")
    roll = Rollout("y", "ref", {"n": 3, "greedy": True, "once": True})
    for share, want in ((True, (1, 4)), (False, (3, 5))):
        widths = _prefill_widths(model, lambda: sample_once({}, model, TOK, _examples(["1+2="]), roll, "cpu",
                                                            {"max_tokens": 2}, 0, prefix_sharing=share))
        assert widths[0] == want
