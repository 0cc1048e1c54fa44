"""Shared-prompt forward: rows of a layout with the same prompt encode it once.

A DPO row's chosen and rejected completions, a GRPO group's n samples and a ranked
list's K responses all continue one prompt; the plain forward encodes that prompt
once per row. Here the U distinct prompts run first, [U, P], filling a key/value
cache (with grad enabled the cached keys and values carry gradient); each layer's
cache is then gathered to the R rows (`index_select`: its backward sums the rows'
gradients into their prompt) and the completions run, [R, C], attending to it with
the layout's own attention mask over [P + C] and position ids continuing each row's
prompt. The result is the [R, P + C] hidden states of the plain forward (the prompt
columns gathered from the prompt pass), so every output downstream is unchanged.

Rows are grouped by their prompt's token ids, whatever sets they belong to: the
compiler knows nothing of chosen or groups, the data does; when it pays is the rule of
ptdsl/sharing.py. The cache holds every layer's full keys (plain `DynamicLayer`s, no
sliding-window trimming): the model's mask then applies any sliding window on absolute
columns exactly as in the plain forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ptdsl.sharing import pays

# Attention layer types whose cache is a plain key/value store the completion pass can
# continue (recurrent or KV-sharing layers keep other state: those models never share).
_SHAREABLE_LAYERS = {"full_attention", "sliding_attention"}


@dataclass(frozen=True)
class Sharing:
    """Which rows share a prompt: `unique[u]` is the first row of prompt u, `expand[r]` the prompt
    of row r; `prompt_len` is the layout's prompt block (P columns)."""

    unique: torch.Tensor    # [U] long
    expand: torch.Tensor    # [R] long
    prompt_len: int


def prompt_groups(prompts: list[list[int]]) -> list[int]:
    """Each row's prompt index: rows with identical prompt token ids get the same index, in order
    of first appearance."""
    seen: dict[tuple, int] = {}
    return [seen.setdefault(tuple(p), len(seen)) for p in prompts]


def shareable(config) -> bool:
    """Whether a model's attention cache can be continued by the completion pass."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if getattr(text, "kv_sharing_modes", None) is not None:
        return False
    types = getattr(text, "layer_types", None)
    return types is None or set(types) <= _SHAREABLE_LAYERS


def plan_sharing(groups: list[int], prompt_len: int, completion_len: int, device) -> Sharing | None:
    """A `Sharing` for these rows when it pays, else None (the plain forward)."""
    if not pays(groups, prompt_len, completion_len):
        return None
    first: dict[int, int] = {}
    for row, g in enumerate(groups):
        first.setdefault(g, row)
    unique = torch.tensor([first[g] for g in range(len(first))], dtype=torch.long, device=device)
    expand = torch.tensor(groups, dtype=torch.long, device=device)
    return Sharing(unique, expand, prompt_len)


def shared_forward(body, input_ids, attention_mask, position_ids, share: Sharing):
    """The decoder's [R, P + C, H] hidden states, each distinct prompt encoded once."""
    from transformers import DynamicCache
    P = share.prompt_len
    cache = DynamicCache()  # no config: full `DynamicLayer`s, nothing trimmed to a sliding window
    u = share.unique
    key = _cache_kwarg(body)
    prompt = _last_hidden(body(input_ids=input_ids[u, :P], attention_mask=attention_mask[u, :P],
                               position_ids=position_ids[u, :P], use_cache=True, **{key: cache}))
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys.index_select(0, share.expand)
            layer.values = layer.values.index_select(0, share.expand)
    completion = _last_hidden(body(input_ids=input_ids[:, P:], attention_mask=attention_mask,
                                   position_ids=position_ids[:, P:], use_cache=True, **{key: cache}))
    return torch.cat([prompt.index_select(0, share.expand), completion], dim=1)


def _cache_kwarg(body) -> str:
    """The name the decoder takes its cache by: `cache` (transformers ≥ 5.2x), else the older
    `past_key_values` (still accepted, with a deprecation warning, where `cache` exists)."""
    import inspect
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _last_hidden(out):
    return out[0] if isinstance(out, tuple) else out.last_hidden_state
