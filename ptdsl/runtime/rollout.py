"""Rollouts: `sample(M, n = …)` through `model.generate` (KV cache), n samples per
prompt in contiguous groups, each cut after its first EOS. A completion with no
EOS within `max_tokens` is marked truncated (masked out when the rollout says
`mask_truncated = true`, as DAPO's overlong filtering)."""
from __future__ import annotations

import torch

from ptdsl.runtime.batch import SetRows

DEFAULT_MAX_TOKENS = 64


def sample(model, tok, examples, rollout, device, overrides: dict | None = None) -> SetRows:
    opts = {**rollout.options, **(overrides or {})}
    n = int(opts.get("n", 1))
    prompts = [e.prompt_ids for e in examples for _ in range(n)]
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        att[i, P - len(p):] = 1
    greedy = bool(opts.get("greedy", False))  # e.g. ReMax's baseline: the greedy answer
    gen = dict(do_sample=not greedy, temperature=float(opts.get("temperature", 1.0)),
               top_p=float(opts.get("top_p", 1.0)), max_new_tokens=int(opts.get("max_tokens", DEFAULT_MAX_TOKENS)),
               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    gen["top_k"] = int(opts.get("top_k", 0))  # the full distribution unless the spec says otherwise
    if greedy:
        gen.update(temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), **gen)
    completions, truncated, texts = [], [], []
    for row in out[:, P:].tolist():
        cut = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
        completion = row[:cut]
        completions.append(completion)
        truncated.append(tok.eos_token_id not in completion)
        texts.append(tok.decode([t for t in completion if t != tok.eos_token_id], skip_special_tokens=True))
    return SetRows(prompts, completions, truncated, texts)
