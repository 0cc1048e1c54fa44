"""The vLLM generator, colocated: a `vllm.LLM` engine in the training process, on its GPU, as TRL
1.16's `vllm_mode="colocate"` runs it (trl/generation/vllm_generation.py).

Three pure parts, tested on CPU without vLLM (tests/runtime/test_generators.py):
- `requests`: each prompt as a TokensPrompt (`{"prompt_token_ids": ids}`) and its SamplingParams
  keywords — one completion per row (n = 1), the row's own `max_tokens`, the stop ids, and
  `logprobs = 0` (the sampled token's log-prob only) when log-probs are wanted;
- `parse`: vLLM's RequestOutput list (vllm/outputs.py: `.outputs[0].token_ids`, and `.logprobs`, one
  {token id: Logprob(logprob, rank, decoded_token)} dict per generated token, vllm/logprobs.py)
  back to Generations, each sampled token's log-prob read from its position's dict;
- `vllm_name`: a policy parameter's name as vLLM's `load_weights` knows it (the checkpoint's name:
  no PEFT, DDP or activation-checkpointing wrappers; LoRA's own tensors skipped, merged first).

The engine is built from the policy's config alone (`load_format="dummy"`) and the policy's weights
are pushed into it at once: the policy in memory (the embedded model, a LoRA run, a resumed run) need
not match any checkpoint on disk. `sync(model)` pushes them again after each optimizer step, as TRL
does, through `llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights`, and
clears the engine's prefix cache (its keys and values came from the old weights). The engine's
log-probs are `processed_logprobs`: after temperature, top-k and top-p, as the hf backend's."""
from __future__ import annotations

import math
import os
import socket
import tempfile
from typing import Iterator, Sequence

from ptdsl.runtime.episode import Generation
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.generators import Sampling, check, cut, limits_of


def requests(prompts: Sequence[Sequence[int]], limits: Sequence[int], sampling: Sampling,
             stops: Sequence[int]) -> tuple[list[dict], list[dict]]:
    """(TokensPrompts, SamplingParams keywords), one each per prompt with a budget > 0."""
    params = dict(n=1, temperature=0.0 if sampling.greedy else sampling.temperature,
                  top_p=1.0 if sampling.greedy else sampling.top_p, top_k=0 if sampling.greedy else sampling.top_k,
                  stop_token_ids=list(stops),
                  ignore_eos=True,  # stop at `stops` only, as the hf backend does (they hold EOS by default)
                  logprobs=0 if sampling.logprobs else None,
                  detokenize=False)  # ids in, ids out: the engine needs no tokenizer
    return ([{"prompt_token_ids": [int(t) for t in p]} for p in prompts],
            [dict(params, max_tokens=int(m)) for m in limits])


def parse(outputs: Sequence, logprobs: bool) -> list[Generation]:
    """Each RequestOutput's one completion: its token ids and, when asked, each one's log-prob."""
    gens = []
    for r, out in enumerate(outputs):
        if len(out.outputs) != 1:
            raise RuntimeError(f"vLLM returned {len(out.outputs)} completions for prompt {r}, not 1")
        comp = out.outputs[0]
        ids = [int(t) for t in comp.token_ids]
        gens.append(Generation(ids, _sampled_logprobs(comp, ids, r) if logprobs else None))
    return gens


def _sampled_logprobs(comp, ids: list[int], r: int) -> list[float]:
    if comp.logprobs is None or len(comp.logprobs) != len(ids):
        got = "none" if comp.logprobs is None else len(comp.logprobs)
        raise RuntimeError(f"vLLM returned {got} log-prob entries for prompt {r}'s {len(ids)} tokens")
    lps = []
    for k, (t, top) in enumerate(zip(ids, comp.logprobs)):
        entry = top.get(t) if top is not None else None
        if entry is None or math.isnan(entry.logprob):
            raise RuntimeError(f"vLLM gave no log-prob for prompt {r}'s sampled token {t} at position {k}")
        lps.append(float(entry.logprob))
    return lps


def vllm_name(name: str, peft_prefix: str | None = None) -> str | None:
    """A parameter's name in the checkpoint vLLM loads, or None for a tensor vLLM does not hold
    (a LoRA matrix, already merged; the original copy of a `modules_to_save` module)."""
    if peft_prefix and peft_prefix in name or "original_module" in name:
        return None
    name = name.removeprefix("module.").removeprefix("base_model.model.")  # DDP; PEFT
    for wrapper in (".base_layer", "_checkpoint_wrapped_module.", "modules_to_save.default."):
        name = name.replace(wrapper, "")
    return name


def named_weights(model) -> Iterator[tuple[str, object]]:
    """The policy's weights under vLLM's names, full tensors, LoRA adapters merged in for the
    duration. Each tensor is the live parameter (no copy): read it before the next one — after
    the last, the adapters are unmerged in place."""
    net = getattr(model, "module", model)  # DDP
    peft = net if hasattr(net, "merge_adapter") else None  # a LoRA policy: a PeftModel
    if peft is not None:
        peft.merge_adapter()
    try:
        for name, p in net.named_parameters():
            target = vllm_name(name, getattr(peft, "prefix", None) if peft is not None else None)
            if target is not None:
                yield target, (p.full_tensor() if hasattr(p, "full_tensor") else p).detach()  # FSDP2: gathered
    finally:
        if peft is not None:
            peft.unmerge_adapter()


class VLLMGenerator:
    """A colocated vLLM engine generating for the policy (see the module docstring). `engine`
    options go to `vllm.LLM` (gpu_memory_utilization 0.3 by default: the policy trains beside it)."""

    def __init__(self, model, tokenizer, device, *, gpu_memory_utilization: float = 0.3,
                 max_model_len: int | None = None, seed: int = 0, **engine):
        check("vllm", device)
        from vllm import LLM, SamplingParams
        self._params, self.tokenizer, self.version = SamplingParams, tokenizer, 0
        self._dir = tempfile.TemporaryDirectory(prefix="ptdsl-vllm-")
        net = getattr(model, "module", model)
        base = net.get_base_model() if hasattr(net, "get_base_model") else net
        base.config.save_pretrained(self._dir.name)
        _distributed_env()
        # The engine in this process (vLLM's default is a child process): weights are pushed into its model
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        dtype = str(next(base.parameters()).dtype).removeprefix("torch.")
        self.llm = LLM(model=self._dir.name, load_format="dummy", skip_tokenizer_init=True, dtype=dtype,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed,
                       distributed_executor_backend="external_launcher", logprobs_mode="processed_logprobs",
                       max_num_batched_tokens=4096, **engine)
        self._load = _weight_loader(self.llm)
        self._push(model)

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int] | int,
                 sampling: Sampling = Sampling()) -> list[Generation]:
        limits = limits_of(max_new_tokens, len(prompts))
        stops = sampling.stop_ids or (self.tokenizer.eos_token_id,)
        out = [Generation([], [] if sampling.logprobs else None) for _ in prompts]
        live = [i for i, m in enumerate(limits) if m > 0]  # vLLM refuses max_tokens = 0
        if not live:
            return out
        inputs, kws = requests([prompts[i] for i in live], [limits[i] for i in live], sampling, stops)
        results = self.llm.generate(inputs, sampling_params=[self._params(**kw) for kw in kws], use_tqdm=False)
        for i, g in zip(live, parse(results, sampling.logprobs)):
            out[i] = cut(g.ids, g.logprobs, limits[i], set(stops))
        return out

    def sync(self, model) -> int:
        self._push(model)
        self.version += 1
        return self.version

    def close(self) -> None:
        """Drop the engine and give its GPU memory (weights, KV cache) back to the trainer."""
        import gc

        import torch
        self.llm = self._load = None
        gc.collect()
        torch.cuda.empty_cache()
        self._dir.cleanup()

    def _push(self, model) -> None:
        for name, tensor in named_weights(model):
            self._load([(name, tensor)])  # one at a time: no second full copy of the weights
        self.llm.reset_prefix_cache()


def _weight_loader(llm):
    """The engine model's `load_weights`, on the path TRL 1.16's colocate sync uses; reachable only
    when the engine runs in this process."""
    executor = getattr(llm.llm_engine, "model_executor", None)
    if executor is None:
        raise RuntimeSetupError("`--generator vllm` cannot push the policy's weights: vLLM runs its engine in "
                                "another process (VLLM_ENABLE_V1_MULTIPROCESSING=1)",
                                help="unset VLLM_ENABLE_V1_MULTIPROCESSING or set it to 0: the colocated "
                                     "engine must live in the training process")
    return executor.driver_worker.model_runner.model.load_weights


def _distributed_env() -> None:
    """vLLM's external launcher joins the run's process group from these (set by accelerate or
    torchrun when there is one); a one-process run gets a free local port."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
