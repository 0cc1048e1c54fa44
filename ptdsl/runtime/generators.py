"""Generators: how completions are produced, a backend chosen at train time (`--generator hf|vllm`).

A generator turns token ids into token ids: `generate(prompts, max_new_tokens, sampling)` takes
each prompt's ids, a token budget per prompt (or one for all) and the sampling options, and returns
one `episode.Generation` per prompt — the new ids only (no prompt, no padding), cut at the first
stop token (kept) or at the budget, and, when `sampling.logprobs`, each token's log-prob under the
distribution the sampler drew it from (after temperature, top-k and top-p: what
`logprobs(sampler, y)` reads). Nothing of transformers or vLLM crosses the interface, so that a
generator can later run in another process or host (docs/scaling.md).

Weights: the trainer calls `sync(model)` after each optimizer step; it brings the generator to the
policy's new weights and returns the new `version` (0 before the first sync). `version` is what a
batch records as the policy that sampled it (asynchronous generation, issue 11 item 6).

Backends: `hf` (this module) samples with the policy's own `model.generate`, exactly as
runtime/rollout.py does — same tokens for the same seed; `vllm` (runtime/generators_vllm.py) runs
a vLLM engine in the same process (TRL's colocate mode) and pushes the weights to it on `sync`.
`check(kind, device)` refuses a backend this machine cannot run before step 1."""
from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from ptdsl.runtime import rollout
from ptdsl.runtime.batch import SetRows
from ptdsl.runtime.episode import Generation
from ptdsl.runtime.errors import RuntimeSetupError

GENERATORS = ("hf", "vllm")
VLLM_VERSIONS = ("0.22", "0.32")  # [low, high): the range TRL 1.16 supports, whose weight-sync path we use


@dataclass(frozen=True)
class Sampling:
    """How to draw each token. `top_k = 0` and `top_p = 1` keep the full distribution; `greedy`
    takes the most probable token (temperature, top-k and top-p then do not apply). `stop_ids`
    end a completion (empty: the tokenizer's EOS, filled in by the generator); `logprobs` asks
    for each drawn token's log-prob."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False
    stop_ids: tuple[int, ...] = ()
    logprobs: bool = False

    def __post_init__(self):
        bad = [f"temperature = {self.temperature} (must be > 0)"] if self.temperature <= 0 and not self.greedy else []
        bad += [f"top_p = {self.top_p} (must be in (0, 1])"] if not 0 < self.top_p <= 1 else []
        bad += [f"top_k = {self.top_k} (must be ≥ 0; 0: no top-k)"] if self.top_k < 0 else []
        if bad:
            raise RuntimeSetupError("bad sampling options: " + "; ".join(bad))

    @classmethod
    def from_options(cls, opts: dict, stop_ids: Sequence[int] = (), logprobs: bool = False) -> "Sampling":
        """From a rollout's options (`temperature`, `top_p`, `top_k`, `greedy`), as rollout.sample reads them."""
        return cls(float(opts.get("temperature", 1.0)), float(opts.get("top_p", 1.0)), int(opts.get("top_k", 0)),
                   bool(opts.get("greedy", False)), tuple(stop_ids), logprobs)

    def options(self, max_tokens: int) -> dict:
        """The same options in rollout's spelling (its `_generation_options` reads them)."""
        return dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, greedy=self.greedy,
                    max_tokens=max_tokens)


class Generator(Protocol):
    """The interface every backend implements (see the module docstring)."""
    version: int

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int] | int,
                 sampling: Sampling = Sampling()) -> list[Generation]: ...

    def sync(self, model) -> int: ...

    def close(self) -> None: ...


def check(kind: str, device) -> None:
    """Refuse, before step 1, a generator that is unknown or that this machine cannot run."""
    if kind not in GENERATORS:
        from ptdsl.diagnostics import did_you_mean
        raise RuntimeSetupError(f"unknown generator `{kind}`; the generators are {', '.join(GENERATORS)}",
                                help=did_you_mean(kind, GENERATORS) or "`--generator hf` (default) or `vllm`")
    if kind == "vllm":
        missing = []
        if torch.device(device).type != "cuda" or not torch.cuda.is_available():
            missing.append(f"CUDA (this run's device is {torch.device(device).type}"
                           + ("" if torch.cuda.is_available() else ", and torch sees no CUDA GPU") + ")")
        missing += _vllm_package_problem()
        if missing:
            raise RuntimeSetupError("`--generator vllm` needs " + " and ".join(missing),
                                    help="install it with `pip install 'ptdsl[vllm]'` on a machine with CUDA, "
                                         "or leave out --generator: `hf` (transformers' generate) runs anywhere")


def _vllm_package_problem() -> list[str]:
    """[] when a vllm in the supported range is installed, else what is wrong, in words."""
    if importlib.util.find_spec("vllm") is None:
        return ["the vllm package (not installed)"]
    from packaging.version import Version
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:  # a `vllm` folder on the path, not the package
        return ["the vllm package (a `vllm` module is importable, but no vllm distribution is installed)"]
    low, high = VLLM_VERSIONS
    if not Version(low) <= Version(Version(version).base_version) < Version(high):
        return [f"vllm ≥ {low}, < {high} (installed: {version})"]
    return []


def make_generator(kind: str, model, tokenizer, device, *, prefix_sharing: bool = True, seed: int = 0,
                   **engine) -> Generator:
    """The `kind` backend for `model` (the policy, already on `device`). `seed` seeds the vLLM
    engine's sampler (the hf backend draws from torch's generator, which the run seeds);
    `prefix_sharing` is the hf backend's; `engine` goes to the vLLM backend
    (gpu_memory_utilization, max_model_len, …; see VLLMGenerator)."""
    check(kind, device)
    if kind == "vllm":
        from ptdsl.runtime.generators_vllm import VLLMGenerator
        return VLLMGenerator(model, tokenizer, device, seed=seed, **engine)
    if engine:
        raise RuntimeSetupError(f"the hf generator takes no engine options, got {', '.join(sorted(engine))}")
    return HFGenerator(model, tokenizer, device, prefix_sharing=prefix_sharing)


def limits_of(max_new_tokens: list[int] | int, n: int) -> list[int]:
    """One token budget per prompt, from a list or one number for all."""
    limits = [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
    if len(limits) != n:
        raise ValueError(f"{len(limits)} max_new_tokens for {n} prompts")
    if any(m < 0 for m in limits):
        raise ValueError(f"max_new_tokens must be ≥ 0, got {min(limits)}")
    return limits


def cut(ids: Sequence[int], logprobs: Sequence[float] | None, limit: int, stops) -> Generation:
    """A row as the interface returns it: at most `limit` tokens, ending at the first stop token
    (kept); what a batched engine left after it (padding) is dropped."""
    ids = list(ids[:limit])
    end = next((k for k, t in enumerate(ids) if t in stops), None)
    ids = ids if end is None else ids[:end + 1]
    return Generation(ids, None if logprobs is None else [float(x) for x in logprobs[:len(ids)]])


def sample_rows(generator: Generator, tok, examples, spec, overrides: dict | None = None,
                keep_logprobs: bool = False) -> SetRows:
    """rollout.sample on a generator: the rollout's `n` samples per prompt in contiguous groups,
    each ending at its first EOS, truncated when it has none within `max_tokens`; with
    `keep_logprobs`, the sampler's log-probs. (A spec's `prefix_sharing` is the hf backend's own
    setting here, given to make_generator.)"""
    opts = {**spec.options, **(overrides or {})}
    n, eos = int(opts.get("n", 1)), tok.eos_token_id
    prompts = [e.prompt_ids for e in examples for _ in range(n)]
    gens = generator.generate(prompts, int(opts.get("max_tokens", rollout.DEFAULT_MAX_TOKENS)),
                              Sampling.from_options(opts, (eos,), keep_logprobs))
    return rollout.rollout_rows(prompts, [g.ids for g in gens], tok,
                                [g.logprobs for g in gens] if keep_logprobs else None)


class HFGenerator:
    """transformers' `model.generate` on the policy itself, through runtime/rollout.py's batching
    (left padding, each distinct prompt prefilled once when `prefix_sharing`): for the same seed
    and options it draws the tokens rollout.sample draws. The batch runs to the largest budget;
    each row is then cut at its own. `sync` only counts versions: the model is the policy."""

    def __init__(self, model, tokenizer, device, prefix_sharing: bool = True):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.prefix_sharing, self.version = prefix_sharing, 0

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int] | int,
                 sampling: Sampling = Sampling()) -> list[Generation]:
        limits = limits_of(max_new_tokens, len(prompts))
        stops = sampling.stop_ids or (self.tokenizer.eos_token_id,)
        out = [Generation([], [] if sampling.logprobs else None) for _ in prompts]
        live = [i for i, m in enumerate(limits) if m > 0]  # generate cannot make 0 tokens
        if not live:
            return out
        rows, lp_rows = rollout.generate_ids(self.model, self.tokenizer, [list(prompts[i]) for i in live], self.device,
                                             sampling.options(max(limits[i] for i in live)), sampling.logprobs,
                                             self.prefix_sharing, stop_ids=stops)
        for k, i in enumerate(live):
            out[i] = cut(rows[k], lp_rows[k] if lp_rows is not None else None, limits[i], set(stops))
        return out

    def sync(self, model) -> int:
        self.model = model  # the same object after an optimizer step; a new one (reloaded) is taken as is
        self.version += 1
        return self.version

    def close(self) -> None:
        self.model = None
