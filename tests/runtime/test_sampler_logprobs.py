"""`logprobs(sampler, y)`: each sampled token's log-prob under the distribution the
generator drew it from, recorded by the rollout (runtime/rollout.py) from `generate`'s
processed scores, or from the geometric mixture's own loop.

References: a fresh forward of the model over prompt + completion, log-softmax of the
logits divided by the temperature (the distribution `generate` samples from when top-k
and top-p are off); with top-k = 1 the sampler's distribution is one token, so every
recorded log-prob is exactly 0."""
import pytest
import torch

from ptdsl.ir.declare import Rollout
from ptdsl.runtime import embedded
from ptdsl.runtime.data import Example
from ptdsl.runtime.queries import run_model
from ptdsl.runtime.rollout import GeometricMixture, sample


def _setup():
    tok = embedded.tokenizer()
    model = embedded.model(tok, 0).eval()
    prompts = ["1+2=", "7+8=", "3*3=?"]  # ragged: left padding in generate
    examples = [Example(i, p, [tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"], {})
                for i, p in enumerate(prompts)]
    return tok, model, examples


def _fresh_logprobs(model, rows, temperature):
    """log softmax(z / T)[token] of every completion token, by one forward without a KV cache."""
    res = run_model(model, {"y": rows}, ["y"], {"y": ["logprobs"]}, 0, "cpu", frozen=True,
                    temperatures={"y": temperature})
    return res[("logprobs", "y")], res[("mask", "y")]


def _recorded(rows):
    width = max(len(c) for c in rows.completion_ids)
    out = torch.zeros(len(rows), width)
    for i, lp in enumerate(rows.sampler_logprobs):
        assert len(lp) == len(rows.completion_ids[i])
        out[i, :len(lp)] = torch.tensor(lp)
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_are_the_sampled_distribution(temperature):
    tok, model, examples = _setup()
    torch.manual_seed(0)
    rows = sample(model, tok, examples, Rollout("y", "policy", {"n": 2, "temperature": temperature}), "cpu",
                  {"max_tokens": 6}, keep_logprobs=True)
    want, mask = _fresh_logprobs(model, rows, temperature)
    got = _recorded(rows)
    assert mask.sum() > 6
    torch.testing.assert_close(got[mask], want[mask], rtol=0, atol=2e-5)


def test_sampler_logprobs_after_top_k_1_are_zero():
    """The processed scores of top-k = 1 keep one token: the sampler drew it with probability 1,
    while the model's own (untruncated) log-prob of it is below 0."""
    tok, model, examples = _setup()
    rows = sample(model, tok, examples, Rollout("y", "policy", {"n": 2, "top_k": 1}), "cpu", {"max_tokens": 5},
                  keep_logprobs=True)
    got = _recorded(rows)
    want, mask = _fresh_logprobs(model, rows, 1.0)
    assert torch.equal(got[mask], torch.zeros(int(mask.sum())))
    assert (want[mask] < -1e-3).all()


def test_no_sampler_logprobs_unless_asked():
    tok, model, examples = _setup()
    rows = sample(model, tok, examples, Rollout("y", "policy", {"n": 1}), "cpu", {"max_tokens": 3})
    assert rows.sampler_logprobs is None


def test_the_mixture_records_its_mixed_distribution():
    """coef = 0 samples from the first model alone: its recorded log-probs are that model's at T."""
    tok, model, examples = _setup()
    other = embedded.model(tok, 1).eval()
    torch.manual_seed(0)
    rows = sample(GeometricMixture(model, other, 0.0), tok, examples,
                  Rollout("y", "mix", {"n": 2, "temperature": 0.8}), "cpu", {"max_tokens": 5}, keep_logprobs=True)
    want, mask = _fresh_logprobs(model, rows, 0.8)
    torch.testing.assert_close(_recorded(rows)[mask], want[mask], rtol=0, atol=2e-5)


SPEC = """method sampler_gap extends grpo "GRPO that logs how far old is from the sampler"
experimental
metric sampler_gap = token_mean(abs(logprobs(sampler, y) - logprobs(old, y)))
metric sampler_mean = token_mean(logprobs(sampler, y))
"""


@pytest.mark.integration
@pytest.mark.parametrize("top_k", [0, 1])
def test_the_sampler_leaf_reaches_the_loss(tmp_path, top_k):
    """In training, `logprobs(sampler, y)` is what the rollout drew with: with two passes `old` is
    recorded by a forward right after sampling, so without top-k the two agree to float error on
    every step; with top-k = 1 the sampler's log-probs are 0 and `old`'s are not."""
    import json

    from ptdsl.runtime.loop import train
    spec = tmp_path / "sampler_gap.ptdsl"
    spec.write_text(SPEC)
    train(str(spec), output=str(tmp_path / "out"), steps=2, batch_size=2, max_examples=8, quiet=True,
          params={"num_iterations": 2, "num_generations": 2}, rollout={"top_k": top_k})
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        if top_k == 0:
            assert row["sampler_gap"] < 1e-5 and row["sampler_mean"] < -0.1
        else:
            assert row["sampler_mean"] == 0.0 and row["sampler_gap"] > 0.01
