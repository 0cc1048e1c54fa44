"""The generator interface (ptdsl/runtime/generators.py) and its transformers backend.

References: rollout.sample (the sampler the hf backend must reproduce token for token at the same
seed); a fresh forward pass of the model over prompt + completion, without padding or KV cache
(log-softmax of the logits / T at each drawn token: the sampler's log-probs when top-k and top-p
are off; its argmax: the greedy token); and the exact words of the setup errors."""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util

import pytest
import torch

from ptdsl import environments
from ptdsl.cli.train_flags import add_to
from ptdsl.ir.declare import Rollout
from ptdsl.runtime import embedded, generators
from ptdsl.runtime.data import Example
from ptdsl.runtime.episode import run_episodes
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.generators import HFGenerator, Sampling, check, make_generator
from ptdsl.runtime.rollout import sample
from tests.tool_tokenizers import tiny_llama, tool_tokenizer

TEXTS = ["1+2=", "7+8=", "3*3=?"]  # ragged: left padding


@pytest.fixture(scope="module")
def setup():
    tok = embedded.tokenizer()
    model = embedded.model(tok, 0).eval()
    examples = [Example(i, p, [tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"], {})
                for i, p in enumerate(TEXTS)]
    return tok, model, examples


def forward_logprobs(model, prompt, completion, temperature=1.0):
    """log softmax(z / T)[token] at each completion token, and the argmax there, by one forward."""
    with torch.no_grad():
        z = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1].float()
    lp = (z / temperature).log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
    return lp, z.argmax(-1)


@pytest.mark.parametrize("opts", [{"temperature": 0.7}, {"temperature": 1.3, "top_k": 5, "top_p": 0.9}])
def test_hf_draws_what_rollout_sample_draws(setup, opts):
    tok, model, examples = setup
    torch.manual_seed(3)
    rows = sample(model, tok, examples, Rollout("y", "policy", {"n": 2, **opts}), "cpu", {"max_tokens": 7},
                  keep_logprobs=True)
    gen = HFGenerator(model, tok, "cpu")
    torch.manual_seed(3)
    out = gen.generate([e.prompt_ids for e in examples for _ in range(2)], 7,
                       Sampling.from_options(opts, logprobs=True))
    assert [g.ids for g in out] == rows.completion_ids
    assert [g.logprobs for g in out] == rows.sampler_logprobs
    assert sum(map(len, rows.completion_ids)) > 12  # real completions, not empty rows


@pytest.mark.parametrize("keep", [True, False])
def test_sample_rows_on_hf_is_rollout_sample(setup, keep):
    """The rows the experience builder gets: every field as rollout.sample's, truncation included."""
    tok, model, examples = setup
    spec = Rollout("y", "policy", {"n": 3, "temperature": 0.9})
    torch.manual_seed(4)
    want = sample(model, tok, examples, spec, "cpu", {"max_tokens": 5}, keep_logprobs=keep)
    torch.manual_seed(4)
    got = generators.sample_rows(HFGenerator(model, tok, "cpu"), tok, examples, spec, {"max_tokens": 5}, keep)
    assert got == want
    assert any(want.truncated) and not all(want.truncated)


def test_logprobs_are_the_tempered_distribution(setup):
    tok, model, examples = setup
    torch.manual_seed(0)
    prompts = [e.prompt_ids for e in examples]
    out = HFGenerator(model, tok, "cpu").generate(prompts, 8, Sampling(temperature=0.7, logprobs=True))
    for p, g in zip(prompts, out):
        want, _ = forward_logprobs(model, p, g.ids, 0.7)
        torch.testing.assert_close(torch.tensor(g.logprobs), want, rtol=0, atol=1e-5)


def test_per_row_budgets_cut_the_same_draws(setup):
    """A row's budget cuts it; the batch is drawn as with one budget for all."""
    tok, model, examples = setup
    prompts = [e.prompt_ids for e in examples]
    gen = HFGenerator(model, tok, "cpu")
    torch.manual_seed(1)
    full = gen.generate(prompts, 6, Sampling(logprobs=True))
    torch.manual_seed(1)
    cut = gen.generate(prompts, [2, 6, 4], Sampling(logprobs=True))
    for f, c, m in zip(full, cut, [2, 6, 4]):
        assert c.ids == f.ids[:m] and c.logprobs == f.logprobs[:m]
    assert len(cut[0].ids) == 2 and cut[0].ids[-1] != tok.eos_token_id  # the budget, not a stop, ended it
    none = gen.generate(prompts, [0, 3, 0], Sampling(logprobs=True))
    assert none[0] == none[2] == ([], []) and 0 < len(none[1].ids) <= 3


def test_stop_ids_end_a_row_at_the_first(setup):
    tok, model, examples = setup
    prompts = [e.prompt_ids for e in examples]
    gen = HFGenerator(model, tok, "cpu")
    torch.manual_seed(2)
    free = gen.generate(prompts, 10, Sampling())
    stop = next(t for t in free[0].ids[1:] if t != tok.eos_token_id)
    torch.manual_seed(2)
    stopped = gen.generate(prompts, 10, Sampling(stop_ids=(tok.eos_token_id, stop)))
    assert stopped[0].ids == free[0].ids[:free[0].ids.index(stop) + 1]
    for f, s in zip(free, stopped):
        shared = min(len(f.ids) - (f.ids[-1:] == [tok.eos_token_id]), len(s.ids))
        assert s.ids[:shared] == f.ids[:shared]   # the same draws until a row stops
        ends = [k for k, t in enumerate(s.ids) if t in (stop, tok.eos_token_id)]
        assert ends in ([], [len(s.ids) - 1])    # a stop token only at the end
        assert ends or len(s.ids) == 10


def test_greedy_is_the_argmax_whatever_the_seed(setup):
    tok, model, examples = setup
    prompts = [e.prompt_ids for e in examples]
    gen = HFGenerator(model, tok, "cpu")
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        runs.append(gen.generate(prompts, 6, Sampling(greedy=True, temperature=0.5, logprobs=True)))
    assert runs[0] == runs[1]
    for p, g in zip(prompts, runs[0]):
        lp, best = forward_logprobs(model, p, g.ids)  # greedy: the raw distribution, T not applied
        assert g.ids == best.tolist()
        torch.testing.assert_close(torch.tensor(g.logprobs), lp, rtol=0, atol=1e-5)


def test_sync_counts_versions_and_takes_a_new_model(setup):
    tok, model, examples = setup
    gen = HFGenerator(model, tok, "cpu")
    prompts = [e.prompt_ids for e in examples]
    before = gen.generate(prompts, 6, Sampling(greedy=True))
    assert gen.version == 0 and gen.sync(model) == 1 and gen.sync(model) == 2 and gen.version == 2
    other = embedded.model(tok, 5).eval()
    assert gen.sync(other) == 3
    after = gen.generate(prompts, 6, Sampling(greedy=True))
    assert after != before
    assert [g.ids for g in after] == [forward_logprobs(other, p, g.ids)[1].tolist() for p, g in zip(prompts, after)]


def test_bad_sampling_options_are_named():
    with pytest.raises(RuntimeSetupError, match=r"temperature = 0 \(must be > 0\); top_p = 1.5"):
        Sampling(temperature=0, top_p=1.5)
    Sampling(temperature=0, greedy=True)  # greedy reads no temperature


def test_unknown_generator_gets_did_you_mean():
    with pytest.raises(RuntimeSetupError) as e:
        check("vlm", "cpu")
    assert str(e.value) == "unknown generator `vlm`; the generators are hf, vllm"
    assert e.value.help == "did you mean `vllm`?"


@pytest.fixture
def no_cuda_no_vllm(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))


def test_vllm_without_cuda_or_package_is_a_setup_error(no_cuda_no_vllm, setup):
    tok, model, _ = setup
    with pytest.raises(RuntimeSetupError) as e:
        make_generator("vllm", model, tok, "cpu")  # no ImportError: vllm is never imported
    assert str(e.value) == ("`--generator vllm` needs CUDA (this run's device is cpu, and torch sees no CUDA GPU) "
                            "and the vllm package (not installed)")
    assert "pip install 'ptdsl[vllm]'" in e.value.help


def test_vllm_outside_the_supported_versions_is_named(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.10.1")
    assert generators._vllm_package_problem() == ["vllm ≥ 0.22, < 0.32 (installed: 0.10.1)"]
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.31.0rc1")
    assert generators._vllm_package_problem() == []

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", absent)
    assert "no vllm distribution is installed" in generators._vllm_package_problem()[0]


def test_make_generator_hf_and_the_flag(setup):
    tok, model, _ = setup
    assert isinstance(make_generator("hf", model, tok, "cpu", seed=3), HFGenerator)
    with pytest.raises(RuntimeSetupError, match="takes no engine options, got gpu_memory_utilization"):
        make_generator("hf", model, tok, "cpu", gpu_memory_utilization=0.5)
    parser = argparse.ArgumentParser()
    add_to(parser)
    assert parser.parse_args(["--generator", "vllm"]).generator == "vllm"
    assert parser.parse_args([]).generator is None  # the default lives in TrainOptions


def test_hf_generator_plays_episodes():
    """The episode loop on the hf backend: every policy token's recorded log-prob is the model's
    at that place in the one sequence the episode returns, and each turn's budget is honoured."""
    tok = tool_tokenizer()
    model = tiny_llama(tok)
    gen = HFGenerator(model, tok, "cpu")
    seen = []

    def generate(prompts, limits):
        seen.append(list(limits))
        return gen.generate(prompts, limits, Sampling(stop_ids=(tok.eos_token_id,), logprobs=True))

    rows = [{"prompt": [{"role": "user", "content": q}]} for q in ("What is 12 * 34?", "Add 2 and 2.")] * 2
    torch.manual_seed(0)
    eps = run_episodes(generate, tok, environments.resolve("calculator"), rows, max_turns=2, max_tokens=24)
    assert seen and seen[0] == [24] * 4
    for ep in eps:
        assert 0 < len(ep.completion_ids) <= 24 and len(ep.logprobs) == len(ep.completion_ids)
        assert ep.truncated in (None, "budget", "max_turns")
        lp, _ = forward_logprobs(model, ep.prompt_ids, ep.completion_ids)
        policy = torch.tensor(ep.token_mask, dtype=torch.bool)
        torch.testing.assert_close(torch.tensor(ep.logprobs)[policy], lp[policy], rtol=0, atol=1e-4)


def test_train_refuses_the_vllm_generator_here_before_anything_loads(tmp_path):
    """No CUDA on this machine: `ptdsl.train(..., generator="vllm")` stops at once, naming what is missing."""
    import ptdsl
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    with pytest.raises(RuntimeSetupError, match=r"`--generator vllm` needs CUDA"):
        ptdsl.train("grpo", output=str(tmp_path), steps=1, generator="vllm", quiet=True)
    assert not (tmp_path / "run.json").exists() and not (tmp_path / "metrics.jsonl").exists()
