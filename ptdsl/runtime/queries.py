"""Model queries: one batched forward per model per step over every set the plan
asks it about, producing the leaf tensors of the compiled loss.

Per-token log-probs are gathered at completion positions only and without
materialising a full fp32 log-softmax over the vocabulary: `TokenLogprobs`
projects chunks of hidden states through the LM head, keeps only each row's
log-sum-exp and target logit, and recomputes the chunk's softmax in backward
(the memory of one chunk, not of [tokens × vocab]). Frozen models run under
`torch.inference_mode`.
"""
from __future__ import annotations

import torch

from ptdsl.runtime.batch import layout

CHUNK = 1024  # rows of [chunk × vocab] logits alive at once


class TokenLogprobs(torch.autograd.Function):
    """log softmax(h Wᵀ + b)[target] / temperature, chunked over rows, recomputed in backward."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, temperature):
        out = torch.empty(h.shape[0], dtype=_acc(h), device=h.device)
        for i in range(0, h.shape[0], CHUNK):
            z = _logits(h[i:i + CHUNK], weight, bias, temperature)
            out[i:i + CHUNK] = z.gather(1, targets[i:i + CHUNK, None])[:, 0] - torch.logsumexp(z, -1)
        ctx.save_for_backward(h, weight, bias, targets)
        ctx.temperature = temperature
        return out

    @staticmethod
    def backward(ctx, grad):
        h, weight, bias, targets = ctx.saved_tensors
        t = ctx.temperature
        gh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        gw = torch.zeros_like(weight, dtype=_acc(h)) if ctx.needs_input_grad[1] else None
        gb = torch.zeros(weight.shape[0], dtype=_acc(h), device=h.device) \
            if bias is not None and ctx.needs_input_grad[2] else None
        for i in range(0, h.shape[0], CHUNK):
            hc = h[i:i + CHUNK]
            p = torch.softmax(_logits(hc, weight, bias, t), -1)
            p.scatter_add_(1, targets[i:i + CHUNK, None], -torch.ones_like(p[:, :1]))
            gz = p.mul_(-grad[i:i + CHUNK, None] / t)          # d lp / d z = onehot − softmax
            if gh is not None:
                gh[i:i + CHUNK] = (gz.to(weight.dtype) @ weight).to(h.dtype)
            if gw is not None:
                gw += gz.T @ hc.to(gz.dtype)
            if gb is not None:
                gb += gz.sum(0)
        return (gh, gw.to(weight.dtype) if gw is not None else None,
                gb.to(bias.dtype) if gb is not None else None, None, None)


def _acc(h):
    """Log-probs accumulate in at least float32 (bf16 logits lose the small differences)."""
    return torch.promote_types(h.dtype, torch.float32)


def _logits(h, weight, bias, temperature):
    z = (h @ weight.T.to(h.dtype)).to(_acc(h))
    if bias is not None:
        z = z + bias.to(z.dtype)
    return z / temperature


def _decoder(model):
    """The transformer body of a causal LM or sequence classifier (hidden states out)."""
    if hasattr(model, "get_base_model"):  # PEFT: adapters are injected into the base model's layers
        model = model.get_base_model()
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    return base if base is not None else model.get_decoder()


class Trunk(torch.nn.Module):
    """The trainable model as one module whose forward returns hidden states.

    Distributed wrappers (DDP) sync gradients of what runs through their forward;
    the LM head is applied outside it (chunked, `TokenLogprobs`) but its weight is
    a parameter of this module, so its gradient is synchronised too."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, position_ids):
        out = _decoder(self.lm)(input_ids=input_ids, attention_mask=attention_mask,
                                position_ids=position_ids, use_cache=False)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state


def hf_model(model):
    """The Hugging Face model inside a (possibly wrapped) trunk."""
    model = getattr(model, "module", model)
    if hasattr(model, "peft"):  # setup.AdapterDisabled
        model = model.peft
    model = model.lm if isinstance(model, Trunk) else model
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hidden_states(model, lay):
    if hasattr(model, "peft"):  # the base of a LoRA policy: its adapters off
        with model.peft.disable_adapter():
            return Trunk(model.peft)(lay.input_ids, lay.attention_mask, lay.position_ids)
    inner = getattr(model, "module", model)
    if isinstance(inner, Trunk):
        return model(lay.input_ids, lay.attention_mask, lay.position_ids)
    return Trunk(model)(lay.input_ids, lay.attention_mask, lay.position_ids)


def run_model(model, sets, names, outputs: dict, pad_id, device, frozen: bool, temperature: float = 1.0,
              value_head=None):
    """{(output, set): tensor} for one model over the sets `names`.

    `outputs` maps set → the output kinds wanted (logprobs, entropy, logits, values, score)."""
    lay = layout(sets, names, pad_id, device)
    ctx = torch.inference_mode() if frozen else torch.enable_grad()
    with ctx:
        h = hidden_states(model, lay)
        model = hf_model(model)
        result = {}
        for s in names:
            first, n, width = lay.spans[s]
            rows = slice(first, first + n)
            # the hidden state at column P-1+t predicts completion token t
            hs = h[rows, lay.prompt_len - 1: lay.prompt_len - 1 + width]
            targets = lay.input_ids[rows, lay.prompt_len: lay.prompt_len + width]
            mask = lay.completion_mask[s]
            for kind in outputs[s]:
                result[(kind, s)] = _output(kind, model, hs, targets, mask, temperature, value_head,
                                            h[rows], lay.attention_mask[rows])
        result.update({("mask", s): lay.completion_mask[s] for s in names})
    return result


def _output(kind, model, hs, targets, mask, temperature, value_head, h_rows, att_rows):
    if kind == "logprobs":
        head = model.get_output_embeddings()
        flat = hs[mask]
        lp = TokenLogprobs.apply(flat, head.weight, getattr(head, "bias", None), targets[mask], temperature)
        out = torch.zeros(mask.shape, dtype=lp.dtype, device=lp.device)
        return out.masked_scatter(mask, lp)
    if kind in ("logits", "entropy"):
        z = model.get_output_embeddings()(hs).float() / temperature
        if kind == "logits":
            return z
        logp = torch.log_softmax(z, -1)
        return -(logp.exp() * logp).sum(-1)
    if kind == "values":
        return value_head(hs).squeeze(-1).float()
    if kind == "score":  # a sequence classifier's score at each row's last real token
        last = att_rows.shape[1] - 1 - att_rows.flip(-1).argmax(-1)
        pooled = h_rows[torch.arange(h_rows.shape[0]), last]
        return model.score(pooled).squeeze(-1).float()
    raise ValueError(f"unknown output kind {kind}")
