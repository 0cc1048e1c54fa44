"""Rollouts: `sample(M, n = …)` through `model.generate` (KV cache), n samples per
prompt in contiguous groups, each cut after its first EOS. Each distinct prompt is
prefilled once and its KV cache gathered to its samples (runtime/prefill.py). A completion with no
EOS within `max_tokens` is marked truncated (masked out when the rollout says
`mask_truncated = true`, as DAPO's overlong filtering). A `geometric_mixture` role
samples token by token from softmax((1 − μ)·z_A + μ·z_B), both models with their own
KV cache, the sampling options applied to the mixed logits (Nash-MD). A rollout with
`on_policy = λ` samples in a micro-batch with probability λ and otherwise holds the
dataset's completions (GKD's on-policy mixing). A rollout with `once = true` (a frozen
model's) is sampled once per prompt, from a generator seeded by the run's seed, the
rollout and the example, and reused (A*-PO's offline stage).

When the spec reads `logprobs(sampler, y)`, the rollout also returns each sampled
token's log-prob under the distribution it was drawn from (after temperature, top-k
and top-p: `generate`'s processed scores, or the mixture's own), in its SetRows: a
generator of another kind (vLLM) fills the same field."""
from __future__ import annotations

import functools
import random
import zlib

import torch

from ptdsl.ir.datakinds import DATA_KINDS
from ptdsl.runtime import prefill
from ptdsl.runtime.batch import SetRows

DEFAULT_MAX_TOKENS = 64


def samples_now(rollout, seed: int, step: int, micro: int) -> bool:
    """Whether a rollout with `on_policy = λ` samples in this micro-batch: with probability λ,
    drawn as TRL's GKD draws it (`random() <= λ`) but from a generator keyed by (seed, step,
    micro-batch), so a resumed run and every process make the same choices."""
    rate = rollout.options.get("on_policy")
    if rate is None:
        return True
    return random.Random(f"{seed}:{step}:{micro}").random() <= rate


def sample_once(cache: dict, model, tok, examples, rollout, device, overrides, seed: int,
                keep_logprobs: bool = False, prefix_sharing: bool = True) -> SetRows:
    """A frozen model's samples for these prompts, each prompt's drawn on first sight and kept
    in `cache`. The draw is seeded per (seed, rollout, example), so a resumed run or another
    process draws the same samples without the cache."""
    for e in examples:
        key = (rollout.name, e.index)
        if key not in cache:
            devices = [device] if torch.device(device).type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(zlib.crc32(f"{seed}:{rollout.name}:{e.index}".encode()))
                cache[key] = sample(model, tok, [e], rollout, device, overrides, keep_logprobs, prefix_sharing)
    parts = [cache[(rollout.name, e.index)] for e in examples]
    kept = [lp for part in parts for lp in part.sampler_logprobs] if keep_logprobs else None
    return SetRows([p for part in parts for p in part.prompt_ids], [c for part in parts for c in part.completion_ids],
                   [t for part in parts for t in part.truncated], [t for part in parts for t in part.texts],
                   sampler_logprobs=kept)


def from_dataset(examples, data_kind: str, tok) -> SetRows:
    """A one-sample rollout's rows when it does not sample: the dataset's own completions."""
    (s,) = DATA_KINDS[data_kind].sets
    comps = [e.completions[s] for e in examples]
    texts = [tok.decode([t for t in c if t != tok.eos_token_id], skip_special_tokens=True) for c in comps]
    return SetRows([e.prompt_ids for e in examples], comps, [False] * len(comps), texts)


def sample(model, tok, examples, rollout, device, overrides: dict | None = None,
           keep_logprobs: bool = False, prefix_sharing: bool = True) -> SetRows:
    """n samples per prompt; with `keep_logprobs`, also each token's log-prob under the
    distribution it was drawn from. With `prefix_sharing` (and unless the overrides say
    `prefix_sharing = false`), each distinct prompt is prefilled once for all its samples
    (runtime/prefill.py); the samples are drawn from the same distributions either way."""
    opts = {**rollout.options, **(overrides or {})}
    n = int(opts.get("n", 1))
    prompts = [e.prompt_ids for e in examples for _ in range(n)]
    share = prefix_sharing and bool(opts.get("prefix_sharing", True))
    completions, kept = generate_ids(model, tok, prompts, device, opts, keep_logprobs, share)
    return rollout_rows(prompts, completions, tok, kept)


def rollout_rows(prompts, completions, tok, logprobs=None) -> SetRows:
    """A rollout set's rows from its completions (each ending at its first EOS, or truncated
    without one), with their texts and, where kept, the sampler's log-probs."""
    eos = tok.eos_token_id
    texts = [tok.decode([t for t in c if t != eos], skip_special_tokens=True) for c in completions]
    return SetRows(prompts, completions, [eos not in c for c in completions], texts, sampler_logprobs=logprobs)


def generate_ids(model, tok, prompts: list[list[int]], device, opts: dict, keep_logprobs: bool = False,
                 share: bool = True, stop_ids=None) -> tuple[list[list[int]], list[list[float]] | None]:
    """Each prompt's new token ids (each cut after its first stop token: `stop_ids`, default the
    tokenizer's EOS) and, with `keep_logprobs`, their sampler log-probs: the transformers
    generator `sample` and episodes (runtime/episode_rollout.py) share."""
    ids, att = _left_padded(prompts, tok.pad_token_id)
    gen = _generation_options(opts, tok)
    stops = list(stop_ids) if stop_ids is not None else [tok.eos_token_id]
    gen["eos_token_id"] = stops[0] if len(stops) == 1 else stops  # generate ends a row at any of them
    with torch.inference_mode():
        new, logprobs = _generate(model, ids.to(device), att.to(device), gen, keep_logprobs, share)
    rows = []
    for row in new.tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        rows.append(row[:cut])
    kept = [lp[:len(r)] for lp, r in zip(logprobs.tolist(), rows)] if keep_logprobs else None
    return rows, kept


def _left_padded(prompts, pad: int):
    """Token ids [rows, P] and attention mask, prompts right-aligned (as `generate` expects)."""
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        att[i, P - len(p):] = 1
    return ids, att


def _generation_options(opts: dict, tok) -> dict:
    greedy = bool(opts.get("greedy", False))  # e.g. ReMax's baseline: the greedy answer
    gen = dict(do_sample=not greedy, temperature=float(opts.get("temperature", 1.0)),
               top_p=float(opts.get("top_p", 1.0)), max_new_tokens=int(opts.get("max_tokens", DEFAULT_MAX_TOKENS)),
               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    gen["top_k"] = int(opts.get("top_k", 0))  # the full distribution unless the spec says otherwise
    if greedy:
        gen.update(temperature=None, top_p=None, top_k=None)
    return gen


def _generate(model, ids, att, gen: dict, keep_logprobs: bool, share: bool):
    """(new tokens [rows, ≤ max_new_tokens], their sampler log-probs or None)."""
    if isinstance(model, GeometricMixture):
        return model.generate_with_logprobs(ids, att, gen, share)
    P = ids.shape[1]
    if keep_logprobs:
        gen = dict(gen, output_scores=True, return_dict_in_generate=True)
    # The last prompt column is left to `generate`: it computes the first new token's logits.
    cache = _shared_cache(model, ids, att, P - 1) if share else None
    kw = {_cache_name(model): cache} if cache is not None else {}
    out = model.generate(input_ids=ids, attention_mask=att, **kw, **gen)
    if not keep_logprobs:
        return out[:, P:], None
    new = out.sequences[:, P:]
    logprobs = torch.stack([drawn_logprobs(z, new[:, t]) for t, z in enumerate(out.scores)], 1) \
        if out.scores else new.new_zeros(new.shape, dtype=torch.float32)
    return new, logprobs


def _shared_cache(model, ids, att, upto: int):
    """The KV cache of every row's first `upto` prompt columns, each distinct prompt prefilled
    once; None where there is nothing to share (every prompt distinct, or no column to
    prefill) or the model's cache kind is not shared (prefill.shareable, gathered_cache)."""
    groups = _prompt_groups(ids, att)
    if not groups.shares or upto < 1 or not prefill.shareable(model):
        return None
    done = prefill.shared_prefill(functools.partial(_forward, model), _cache_of, ids, att, groups, upto)
    return done[0] if done is not None else None


def drawn_logprobs(scores, tokens):
    """log softmax(scores)[token] per row: the probability the sampler drew each token with
    (scores are the processed logits the token was drawn from)."""
    return torch.log_softmax(scores.float(), -1).gather(-1, tokens[:, None])[:, 0]


class GeometricMixture:
    """Sampling from π_mix ∝ exp((1 − coef)·z_a + coef·z_b), z the logits of two causal LMs."""

    def __init__(self, a, b, coef: float):
        self.a, self.b, self.coef = a, b, float(coef)
        self.cache_names = [_cache_name(m) for m in (a, b)]

    def mixed_logits(self, last):
        za, zb = (z.float() for z in last)
        return (1 - self.coef) * za + self.coef * zb

    def generate(self, ids, att, gen: dict):
        """New tokens [rows, ≤ max_new_tokens]; rows that ended hold `pad_token_id` after EOS."""
        return self.generate_with_logprobs(ids, att, gen)[0]

    def generate_with_logprobs(self, ids, att, gen: dict, share: bool = True):
        """(new tokens, each one's log-prob under the processed mixed distribution it was drawn from)."""
        pos = prefill.positions(att)
        caches, last = zip(*self._prompt_states(ids, att, share))
        eos, pad = gen["eos_token_id"], gen["pad_token_id"]
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        new, logprobs = [], []
        for _ in range(gen["max_new_tokens"]):
            z = processed(self.mixed_logits(last), gen)
            tok = draw(z, gen)
            logprobs.append(drawn_logprobs(z, tok))
            tok = torch.where(done, torch.full_like(tok, pad), tok)
            new.append(tok)
            done |= tok == eos
            if bool(done.all()):
                break
            att = torch.cat([att, torch.ones_like(att[:, :1])], 1)
            pos = pos[:, -1:] + 1
            outs = [_forward(m, input_ids=tok[:, None], attention_mask=att, position_ids=pos, use_cache=True,
                             **{name: c}) for m, c, name in zip((self.a, self.b), caches, self.cache_names)]
            caches, last = [_cache_of(o) for o in outs], [o.logits[:, -1] for o in outs]
        if not new:
            return ids[:, :0], torch.zeros(ids.shape[0], 0)
        return torch.stack(new, 1), torch.stack(logprobs, 1)

    def _prompt_states(self, ids, att, share: bool):
        """Each model's (KV cache, last-position logits) after the prompts: every distinct
        prompt prefilled once when sharing applies (runtime/prefill.py), else every row."""
        groups = _prompt_groups(ids, att) if share else None
        states = []
        for m in (self.a, self.b):
            forward = functools.partial(_forward, m)
            state = None
            if groups is not None and groups.shares and prefill.shareable(m):
                state = prefill.shared_prefill(forward, _cache_of, ids, att, groups, ids.shape[1])
            if state is None:
                out = forward(input_ids=ids, attention_mask=att, position_ids=prefill.positions(att), use_cache=True)
                state = (_cache_of(out), out.logits[:, -1])
            states.append(state)
        return states


def _prompt_groups(ids, att) -> prefill.PromptGroups:
    """Rows with equal padded prompts (ids and mask: a pad id can also be a real token)."""
    return prefill.prompt_groups(i + a for i, a in zip(ids.tolist(), att.tolist()))


def _cache_name(model) -> str:
    """The keyword a causal LM takes its KV cache back under (`cache` in transformers 5.x,
    `past_key_values` before)."""
    import inspect
    lm = model.peft if hasattr(model, "peft") else model
    lm = lm.get_base_model() if hasattr(lm, "get_base_model") else lm   # a PeftModel's forward takes **kwargs
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


def _cache_of(out):
    return out.get("cache") if out.get("cache") is not None else out.get("past_key_values")


def _forward(model, **kw):
    if hasattr(model, "peft"):  # setup.AdapterDisabled: the LoRA policy's base
        with model.peft.disable_adapter():
            return model.peft(**kw)
    return model(**kw)


def processed(z, gen: dict):
    """Logits z as the sampler draws from them: after temperature, top-k and top-p (the
    smallest set of tokens whose probability reaches top_p), as generate's warpers do;
    unchanged for greedy decoding."""
    if not gen.get("do_sample", True):
        return z
    z = z / gen.get("temperature", 1.0)
    k = gen.get("top_k") or 0
    if 0 < k < z.shape[-1]:
        kth = z.topk(k, -1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    top_p = gen.get("top_p", 1.0)
    if top_p < 1.0:
        zs, order = z.sort(-1, descending=True)
        before = zs.softmax(-1).cumsum(-1) - zs.softmax(-1)   # probability of the better tokens
        drop = (before >= top_p).scatter(-1, order, before >= top_p)
        z = z.masked_fill(drop, float("-inf"))
    return z


def pick_tokens(z, gen: dict):
    """One token per row from logits z: greedy, or sampled after temperature, top-k and top-p."""
    return draw(processed(z, gen), gen)


def draw(z, gen: dict):
    """One token per row from processed logits z (see `processed`): greedy, or sampled."""
    if not gen.get("do_sample", True):
        return z.argmax(-1)
    return torch.multinomial(z.softmax(-1), 1)[:, 0]
