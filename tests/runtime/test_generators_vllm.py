"""The vLLM generator (ptdsl/runtime/generators_vllm.py).

On CPU, without vLLM: OUR request building, output parsing and weight push, against vLLM's
documented shapes. The stand-ins below copy the fields of vLLM's own classes — RequestOutput and
CompletionOutput in vllm/outputs.py, Logprob in vllm/logprobs.py (vllm-project/vllm, read at commit
003d3ee2): `outputs[0].token_ids`, `outputs[0].logprobs` = one {token id: Logprob(logprob, rank,
decoded_token)} dict per generated token, holding the sampled token (and with `logprobs = k` the
top k). They test our code against that shape, not vLLM. The weight push is checked against the
path TRL 1.16's colocate mode uses (trl/generation/vllm_generation.py: `sync_weights`) with a
recording engine, and the names against a real PEFT model's.

`test_real_vllm_engine` runs vLLM itself; it is skipped unless CUDA and vllm are present."""
from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch

from ptdsl.runtime import embedded
from ptdsl.runtime.episode import Generation
from ptdsl.runtime.generators import Sampling
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.generators_vllm import (VLLMGenerator, _weight_loader, named_weights, parse, requests,
                                           vllm_name)


@dataclass
class Logprob:  # vllm/logprobs.py
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm/outputs.py
    index: int
    text: str
    token_ids: list
    cumulative_logprob: float | None
    logprobs: list | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:  # vllm/outputs.py (the fields we read)
    request_id: str
    prompt: str | None
    prompt_token_ids: list
    prompt_logprobs: list | None
    outputs: list
    finished: bool = True


def completion(ids, lps=None, extra=None):
    """A CompletionOutput; `extra` adds a better-ranked other token at each position (logprobs = 1)."""
    entries = None if lps is None else [
        {**({extra: Logprob(-0.01, 1)} if extra and extra != t else {}), t: Logprob(lp, 2 if extra else 1)}
        for t, lp in zip(ids, lps)]
    return CompletionOutput(0, "", list(ids), None, entries, "stop")


def test_requests_one_completion_per_row_with_its_budget():
    prompts, params = requests([[1, 5, 6], [1, 7]], [4, 9], Sampling(0.7, 0.9, 5, logprobs=True), (2, 11))
    assert prompts == [{"prompt_token_ids": [1, 5, 6]}, {"prompt_token_ids": [1, 7]}]
    common = dict(n=1, temperature=0.7, top_p=0.9, top_k=5, stop_token_ids=[2, 11], ignore_eos=True, logprobs=0,
                  detokenize=False)
    assert params == [dict(common, max_tokens=4), dict(common, max_tokens=9)]
    _, (greedy,) = requests([[1]], [3], Sampling(temperature=0.5, top_k=4, greedy=True), (2,))
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"], greedy["logprobs"]) == (0.0, 1.0, 0, None)


def test_parse_reads_the_sampled_tokens_logprob_by_id():
    outs = [RequestOutput("0", None, [1, 5], None, [completion([7, 8, 2], [-0.5, -1.25, -0.1], extra=9)]),
            RequestOutput("1", None, [1], None, [completion([3], [-2.0])])]
    assert parse(outs, True) == [Generation([7, 8, 2], [-0.5, -1.25, -0.1]), Generation([3], [-2.0])]
    assert parse(outs, False) == [Generation([7, 8, 2], None), Generation([3], None)]


@pytest.mark.parametrize("bad, words", [
    (completion([7, 8], None), "returned none log-prob entries for prompt 0's 2 tokens"),
    (completion([7, 8], [-1.0]), "returned 1 log-prob entries for prompt 0's 2 tokens"),
    (CompletionOutput(0, "", [7], None, [{9: Logprob(-1.0)}]), "no log-prob for prompt 0's sampled token 7 at "
                                                                "position 0"),
    (CompletionOutput(0, "", [7], None, [{7: Logprob(float("nan"))}]), "no log-prob for prompt 0's sampled token 7"),
])
def test_parse_refuses_output_without_the_sampled_logprob(bad, words):
    with pytest.raises(RuntimeError, match=words.replace("(", r"\(")):
        parse([RequestOutput("0", None, [1], None, [bad])], True)


def test_vllm_names_are_the_checkpoints_for_a_lora_policy():
    """A PEFT policy's weights reach vLLM under the base model's names, with the adapters merged
    (the merged model's weights), and the adapters are unmerged afterwards."""
    peft = pytest.importorskip("peft")
    tok = embedded.tokenizer()
    base = embedded.model(tok, 0)
    names = [n for n, _ in base.named_parameters()]
    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy = peft.get_peft_model(base, lora)
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        before = policy(ids).logits
    merged = dict(copy.deepcopy(policy).merge_and_unload().named_parameters())
    pushed = {n: t.clone() for n, t in named_weights(policy)}  # read while merged, as load_weights does
    assert sorted(pushed) == sorted(names)
    for n in names:
        torch.testing.assert_close(pushed[n], merged[n])
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"],
                           base.get_submodule("model.layers.0.self_attn.q_proj").base_layer.weight)
    assert not base.get_submodule("model.layers.0.self_attn.q_proj").merged  # unmerged again (W + BA − BA:
    with torch.no_grad():                                                       # equal to rounding, as in TRL)
        torch.testing.assert_close(policy(ids).logits, before, rtol=0, atol=1e-6)
    assert vllm_name("module._checkpoint_wrapped_module.model.norm.weight") == "model.norm.weight"
    assert vllm_name("base_model.model.lm_head.original_module.weight") is None


class Engine:
    """A stand-in `vllm.LLM`: records the pushed weights (on the path TRL's colocate sync uses),
    prefix-cache resets and requests, and answers each request from a script."""

    def __init__(self, script):
        self.script, self.pushed, self.resets, self.calls = script, [], 0, []
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self.pushed.extend))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(model_runner=runner)))

    def reset_prefix_cache(self):
        self.resets += 1

    def generate(self, prompts, sampling_params, use_tqdm):
        self.calls.append((prompts, sampling_params))
        return [RequestOutput(str(i), None, p["prompt_token_ids"], None, [self.script(p["prompt_token_ids"])])
                for i, p in enumerate(prompts)]


def standin(engine, model, tok):
    """A VLLMGenerator on the stand-in engine (vLLM itself is not importable here)."""
    gen = VLLMGenerator.__new__(VLLMGenerator)
    gen.llm, gen._params, gen.tokenizer, gen.version = engine, dict, tok, 0
    gen._dir, gen._load = SimpleNamespace(cleanup=lambda: None), _weight_loader(engine)
    gen._push(model)
    return gen


def test_sync_pushes_the_new_weights_and_counts_versions():
    tok = embedded.tokenizer()
    model = embedded.model(tok, 0)
    engine = Engine(None)
    gen = standin(engine, model, tok)
    assert [n for n, _ in engine.pushed] == [n for n, _ in model.named_parameters()] and engine.resets == 1
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.tensor([[1, 5, 6]]), labels=torch.tensor([[1, 5, 6]])).loss.backward()
    opt.step()
    engine.pushed.clear()
    assert gen.version == 0 and gen.sync(model) == 1 and gen.version == 1 and engine.resets == 2
    for (name, sent), (_, now) in zip(engine.pushed, model.named_parameters()):
        assert torch.equal(sent, now.detach()), name  # the stepped weights, not a stale copy


def test_generate_builds_requests_and_cuts_the_answers():
    """Budgets of 0 send nothing; each row ends at its first stop; log-probs follow the tokens."""
    tok = embedded.tokenizer()
    eos = tok.eos_token_id
    answers = {2: completion([4, eos, 0, 0], [-0.1, -0.2, -0.3, -0.4]), 1: completion([5, 6, 7], [-0.1, -0.2, -0.3])}
    engine = Engine(lambda p: answers[len(p)])
    gen = standin(engine, embedded.model(tok, 0), tok)
    out = gen.generate([[1, 9], [1, 9, 9], [1]], [4, 0, 3], Sampling(logprobs=True))
    assert out == [Generation([4, eos], [-0.1, -0.2]), Generation([], []), Generation([5, 6, 7], [-0.1, -0.2, -0.3])]
    (prompts, params), = engine.calls
    assert prompts == [{"prompt_token_ids": [1, 9]}, {"prompt_token_ids": [1]}]
    assert [p["max_tokens"] for p in params] == [4, 3] and params[0]["stop_token_ids"] == [eos]
    assert gen.generate([[1]], 0) == [Generation([], None)] and len(engine.calls) == 1


def test_an_engine_in_another_process_is_a_setup_error():
    """vLLM's multiprocess engine has no `model_executor` here (vllm/v1/engine/llm_engine.py sets it
    only in-process): no weights could be pushed, so the generator refuses to start."""
    with pytest.raises(RuntimeSetupError, match=r"vLLM runs its engine in another process"):
        _weight_loader(SimpleNamespace(llm_engine=SimpleNamespace()))


CUDA_AND_VLLM = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(not CUDA_AND_VLLM, reason="needs CUDA and vllm (`pip install 'ptdsl[vllm]'`)")
def test_real_vllm_engine():
    """vLLM itself on the embedded model: its log-probs are the model's (tempered), budgets and
    stops hold, and after sync they are the new weights' (another seed's model, loaded in place)."""
    from ptdsl.runtime.generators import make_generator
    tok = embedded.tokenizer()
    model = embedded.model(tok, 0).cuda().eval()
    gen = make_generator("vllm", model, tok, "cuda", gpu_memory_utilization=0.2, max_model_len=128)
    prompts = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] for t in ("1+2=", "7+8=", "3*3=?")]
    check_logprobs(gen, model, prompts)
    model.load_state_dict(embedded.model(tok, 7).state_dict())  # as an optimizer step would, in place
    assert gen.sync(model) == 1
    check_logprobs(gen, model, prompts)
    gen.close()


def check_logprobs(gen, model, prompts):
    """vLLM's samples have the tempered log-probs of `model`'s forward; budgets and stops hold."""
    out = gen.generate(prompts, [5, 8, 3], Sampling(temperature=0.7, logprobs=True))
    for p, g, m in zip(prompts, out, [5, 8, 3]):
        assert 0 < len(g.ids) <= m and (g.ids[-1] == gen.tokenizer.eos_token_id or len(g.ids) == m)
        with torch.no_grad():
            z = model(torch.tensor([p + g.ids], device="cuda")).logits[0, len(p) - 1:-1].float()
        want = (z / 0.7).log_softmax(-1).gather(-1, torch.tensor(g.ids, device="cuda")[:, None])[:, 0].cpu()
        torch.testing.assert_close(torch.tensor(g.logprobs), want, rtol=0, atol=2e-3)
