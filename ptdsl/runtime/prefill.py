"""Shared-prompt prefill for generation: the n samples of a prompt (and any rows that
repeat a prompt) read one prefill of it, not n.

The sampler's rows are left padded to a common width P (as `generate` pads them). The
distinct prompts' first `upto` columns run once through the model with a KV cache; the
cache is then gathered to one row per sample (`batch_select_indices` with a row →
distinct-prompt index), so the continuations attend to exactly the keys and values an
unshared prefill would have computed for their row. Positions are the attention mask's
running count, as `generate` builds them, so left padding and sliding windows see the
same positions either way.

Sharing applies to the KV caches transformers builds by default (`DynamicCache` of full
or sliding-window attention layers). Other kinds (static or quantized caches, linear
attention or state-space layers, encoder-decoder models) are not gathered here: the
caller samples them unshared, which is correct, only slower."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptGroups:
    """Rows that repeat a prompt: `firsts` are the rows holding each distinct prompt's first
    occurrence, `index[row]` the position in `firsts` of that row's prompt."""
    firsts: list[int]
    index: list[int]

    @property
    def shares(self) -> bool:
        return len(self.firsts) < len(self.index)


def prompt_groups(prompts) -> PromptGroups:
    """Group equal prompts (token lists), in order of first occurrence."""
    seen: dict[tuple, int] = {}
    firsts, index = [], []
    for row, p in enumerate(prompts):
        key = tuple(p)
        if key not in seen:
            seen[key] = len(firsts)
            firsts.append(row)
        index.append(seen[key])
    return PromptGroups(firsts, index)


def positions(att):
    """Each token's position as `generate` derives it: the count of real tokens before it
    (left padding gets 0)."""
    return (att.long().cumsum(-1) - 1).clamp(min=0)


def shareable(model) -> bool:
    """Whether a model's default cache can be shared: a decoder-only model that `generate`
    would give a dynamic cache (no `cache_implementation` asking for a static or quantized one)."""
    lm = model.peft if hasattr(model, "peft") else model   # setup.AdapterDisabled
    config = getattr(lm, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    gen_config = getattr(lm, "generation_config", None)
    return getattr(gen_config, "cache_implementation", None) is None


def gathered_cache(cache, index):
    """The cache with one row per sample (`index[row]` its prompt's row), or None when the
    cache is of a kind this does not gather (see the module docstring)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer
    if type(cache) is not DynamicCache:
        return None
    # A DynamicLayer subclass that adds state (an indexer, a linear layer's conv state) is not
    # plain keys and values: only the two kinds whose whole state is keys/values qualify.
    if any(type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers):
        return None
    cache.batch_select_indices(index)
    return cache


def shared_prefill(forward, cache_of, ids, att, groups: PromptGroups, upto: int):
    """Prefill the distinct prompts' first `upto` columns once and gather the result to every
    row: (cache [rows], last-position logits [rows, V]), or None when the model's cache kind
    cannot be gathered (then the caller prefills every row itself).

    `forward(**kwargs)` calls the model; `cache_of(output)` finds its KV cache."""
    firsts = torch.tensor(groups.firsts, device=ids.device)
    index = torch.tensor(groups.index, device=ids.device)
    ids_u, att_u = ids[firsts, :upto], att[firsts, :upto]
    # logits_to_keep = 1: only the last position's logits are read, not [prompts, upto, V]
    out = forward(input_ids=ids_u, attention_mask=att_u, position_ids=positions(att_u), use_cache=True,
                  logits_to_keep=1)
    cache = gathered_cache(cache_of(out), index)
    if cache is None:
        return None
    return cache, out.logits[:, -1].index_select(0, index)
