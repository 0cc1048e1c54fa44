"""Model queries: one batched forward per model per step over every set the plan
asks it about, producing the leaf tensors of the compiled loss.

Per-token log-probs are gathered at completion positions only and without
materialising a full fp32 log-softmax over the vocabulary: `TokenLogprobs`
projects tiles of hidden states × vocabulary slices through the LM head, keeps
only each row's log-sum-exp and target logit, and recomputes each tile's softmax
in backward (the memory of one tile, not of [tokens × vocab]). Frozen models run under
`torch.inference_mode`.
"""
from __future__ import annotations

from functools import partial

import torch

from ptdsl.runtime import sharding
from ptdsl.runtime.batch import layout
from ptdsl.runtime.prefix import plan_sharing, shareable, shared_forward

# Elements of one [rows × vocabulary slice] logits tile, and of its [vocabulary slice ×
# hidden] LM-head gradient, alive at once (4 MiB in fp32). The tile's size then does not grow
# with the vocabulary, the batch or the model, it fits a typical L3 cache (the tile's
# elementwise passes stay there) and it stays below glibc's largest mmap threshold (32 MiB),
# above which every tile would be a fresh mmap, page-faulted and zero-filled again (PERF.md,
# "allocator trap"). Time is the four LM-head matmuls whatever the tile (forward, the
# backward recomputation, the two gradients); memory is a few tiles.
TILE_ELEMENTS = 1 << 20
ROW_BLOCK = 4096     # rows per block: the LM head is streamed once per block


def _tiles(rows: int, vocab: int, hidden: int = 0):
    """(row slice, vocabulary slices) blocks covering [rows × vocab] in tiles of ≤ TILE_ELEMENTS,
    whose LM-head gradient slices [vocabulary slice × hidden] are no larger either."""
    for r0 in range(0, rows, ROW_BLOCK):
        r1 = min(rows, r0 + ROW_BLOCK)
        width = max(128, TILE_ELEMENTS // max(r1 - r0, hidden, 1))
        yield slice(r0, r1), [slice(v0, min(vocab, v0 + width)) for v0 in range(0, vocab, width)]


class TokenLogprobs(torch.autograd.Function):
    """log softmax(h Wᵀ + b)[target] / temperature, without a [rows × vocab] tensor.

    Tiles of rows × vocabulary slices: forward keeps a running (online) log-sum-exp per row
    and the target's logit; backward recomputes each tile's softmax from the saved
    log-sum-exp and adds each tile's LM-head gradient into `W.grad` itself where that is
    safe (`_grad_sink`), so no temporary is larger than a tile: a returned [vocab × hidden]
    gradient would be a second copy of the head, alive while autograd adds it to `W.grad`
    (and one more per set when several sets share the head in one backward). Backward runs
    under the autocast state of forward (autograd runs backward outside autocast), so the
    LM-head matmuls of a bf16-autocast step stay in bf16 as in any autocast module."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, temperature):
        acc = _acc(h)
        lse = torch.empty(h.shape[0], dtype=acc, device=h.device)
        target_logit = torch.empty(h.shape[0], dtype=acc, device=h.device)
        for rows, vslices in _tiles(h.shape[0], weight.shape[0], weight.shape[1]):
            hb, tb = h[rows], targets[rows]
            m = torch.full((hb.shape[0],), float("-inf"), dtype=acc, device=h.device)
            s = torch.zeros(hb.shape[0], dtype=acc, device=h.device)
            tl = torch.zeros(hb.shape[0], dtype=acc, device=h.device)
            for vs in vslices:
                z = _logits(hb, weight[vs], None if bias is None else bias[vs], temperature)
                inside = (tb >= vs.start) & (tb < vs.stop)
                picked = z.gather(1, (tb - vs.start).clamp(0, z.shape[1] - 1)[:, None])[:, 0]
                tl = torch.where(inside, picked, tl)
                m_new = torch.maximum(m, z.amax(1))
                s = s * torch.exp(m - m_new) + z.sub_(m_new[:, None]).exp_().sum(1)
                m = m_new
            lse[rows] = m + torch.log(s)
            target_logit[rows] = tl
        ctx.save_for_backward(h, weight, bias, targets, lse)
        ctx.temperature = temperature
        ctx.device_type = h.device.type
        ctx.autocast = torch.is_autocast_enabled(h.device.type)
        ctx.autocast_dtype = torch.get_autocast_dtype(h.device.type)
        return target_logit - lse

    @staticmethod
    def backward(ctx, grad):
        h, weight, bias, targets, lse = ctx.saved_tensors
        acc = _acc(h)
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        blocks = list(_tiles(h.shape[0], weight.shape[0], weight.shape[1]))
        sink = _grad_sink(weight, acc, len(blocks)) if want_w else None
        gh = torch.empty_like(h) if want_h else None
        gw = sink.buffer if sink is not None else torch.empty_like(weight, dtype=acc) if want_w else None
        gb = torch.empty(weight.shape[0], dtype=acc, device=h.device) if want_b else None
        with torch.autocast(ctx.device_type, dtype=ctx.autocast_dtype, enabled=ctx.autocast):
            for k, (rows, vslices) in enumerate(blocks):
                add_w = k > 0 or (sink is not None and sink.add)  # else the first block writes
                # d (grad · lp) / dz = scale × (softmax − onehot); the per-row scale is applied to the
                # [rows × hidden] operands, not to every [rows × vocab] tile
                hb, tb, scale = h[rows], targets[rows], -grad[rows, None].to(acc) / ctx.temperature
                hs = hb.to(acc) * scale if want_w else None
                ghb = torch.zeros(hb.shape, dtype=acc, device=h.device) if want_h else None
                for vs in vslices:
                    ws = weight[vs]
                    d = _softmax_minus_onehot(hb, ws, None if bias is None else bias[vs], tb, vs, lse[rows],
                                              ctx.temperature)
                    if want_h:
                        ghb += d.to(weight.dtype) @ ws
                    if want_w:
                        _put(gw[vs], d.T @ hs, add_w)
                    if want_b:
                        _put(gb[vs], (d * scale).sum(0), k > 0)
                if want_h:
                    gh[rows] = ghb.mul_(scale)
        gw = _zero_once(weight) if sink is not None else gw.to(weight.dtype) if gw is not None else None
        return gh, gw, gb.to(bias.dtype) if gb is not None else None, None, None


def _softmax_minus_onehot(hb, ws, bs, tb, vs, lse, temperature):
    """softmax(z) − onehot(target) on one tile, from the saved log-sum-exp."""
    p = _logits(hb, ws, bs, temperature).sub_(lse[:, None]).exp_()
    hit = ((tb >= vs.start) & (tb < vs.stop)).nonzero()[:, 0]
    p[hit, tb[hit] - vs.start] -= 1
    return p


def _put(dst, part, add: bool):
    part = part.to(dst.dtype)  # round once, as autograd's `grad += part` does
    if add:
        dst += part
    else:
        dst.copy_(part)


class _Sink:
    """Where backward accumulates the LM head's gradient: `W.grad` itself (`add`: it already
    held a gradient, else the first block writes into a fresh one)."""

    def __init__(self, weight):
        self.add = weight.grad is not None
        if not self.add:
            weight.grad = torch.empty_like(weight)
        self.buffer = weight.grad


def _grad_sink(weight, acc, n_blocks):
    """A `_Sink` when the head's gradient can go straight into `W.grad` with the result autograd
    would store, else None (then backward returns the gradient as usual).

    Autograd only ever adds a leaf's gradients into `.grad`, so adding them there tile by
    tile ends the same unless: backward builds a graph (create_graph), the weight is not a
    plain leaf (a view, a tensor subclass such as a sharded parameter), a hook on it would
    see the gradient, `.grad` is not a plain dense tensor, or the sum would round in a
    narrower dtype than backward accumulates in (bf16 weights over several row blocks)."""
    if torch.is_grad_enabled() or not weight.is_leaf or type(weight) not in (torch.Tensor, torch.nn.Parameter):
        return None
    if weight._backward_hooks or (weight.dtype != acc and n_blocks > 1):
        return None
    g = weight.grad
    if g is not None and (type(g) is not torch.Tensor or g.layout != torch.strided or g.shape != weight.shape):
        return None
    return _Sink(weight)


def _zero_once(weight):
    """What backward returns for W once `W.grad` holds the gradient: None when nothing observes
    W's accumulator; else a zero from the first call of this backward pass, so that autograd
    still runs the accumulator (its post-accumulate hooks, DDP's gradient sync), and None from
    the others (autograd would add several broadcast zeros into a head-sized tensor)."""
    if not _accumulator_observed(weight):
        return None  # nothing to run: no pass over a head-sized gradient at all
    task = torch._C._current_graph_task_id()
    if getattr(weight, "_ptdsl_zero_task", None) == task:
        return None
    weight._ptdsl_zero_task = task
    return torch.zeros((), dtype=weight.dtype, device=weight.device).expand(weight.shape)


def _accumulator_observed(weight) -> bool:
    """Whether anything hooks W's gradient accumulator: a post-accumulate hook, or DDP / ZeRO
    (which hook every parameter's accumulator, only ever with torch.distributed initialised)."""
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    return dist or bool(getattr(weight, "_post_accumulate_grad_hooks", None))


def _acc(h):
    """Log-probs accumulate in at least float32 (bf16 logits lose the small differences)."""
    return torch.promote_types(h.dtype, torch.float32)


def _logits(h, weight, bias, temperature):
    z = (h @ weight.T.to(h.dtype)).to(_acc(h))
    if bias is not None:
        z = z + bias.to(z.dtype)
    return z if temperature == 1.0 else z / temperature


def decoder(model):
    """The transformer body of a causal LM or sequence classifier (hidden states out)."""
    if hasattr(model, "get_base_model"):  # PEFT: adapters are injected into the base model's layers
        model = model.get_base_model()
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    return base if base is not None else model.get_decoder()


class Trunk(torch.nn.Module):
    """The trainable model as one module whose forward returns hidden states, or what
    `heads(h, lm)` makes of them.

    Distributed wrappers sync or shard only what runs inside their forward: DDP syncs
    the gradients of what ran through it, FSDP2 gathers a module's sharded weights only
    for its forward and backward. So the LM head (applied in tiles, `TokenLogprobs`) and
    a classifier's score head are applied by `heads` INSIDE this forward, to the weights
    the wrapper has gathered, never to `head.weight` from outside. With `share` (a
    prefix.Sharing) rows with one prompt encode it once; that is still one call of this
    module, as DDP needs (one forward per backward)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, position_ids, share=None, heads=None):
        if share is not None:
            h = shared_forward(decoder(self.lm), input_ids, attention_mask, position_ids, share)
        else:
            out = decoder(self.lm)(input_ids=input_ids, attention_mask=attention_mask,
                                    position_ids=position_ids, use_cache=False)
            h = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return h if heads is None else heads(h, self.lm)


def hf_model(model):
    """The Hugging Face model inside a (possibly wrapped) trunk."""
    model = getattr(model, "module", model)
    if hasattr(model, "peft"):  # setup.AdapterDisabled
        model = model.peft
    model = model.lm if isinstance(model, Trunk) else model
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hidden_states(model, lay, share=None, heads=None):
    """[R, P + C, H] for a layout's rows (`share`: a prefix.Sharing, or None for the plain forward),
    or `heads(h, lm)` computed inside the model's forward (Trunk)."""
    args = (lay.input_ids, lay.attention_mask, lay.position_ids, share, heads)
    if hasattr(model, "peft"):  # the base of a LoRA policy: its adapters off
        with model.peft.disable_adapter():
            return Trunk(model.peft)(*args)
    inner = getattr(model, "module", model)
    if isinstance(inner, Trunk):
        return model(*args)
    return Trunk(model)(*args)


def _grad_mode(model, frozen: bool):
    """Frozen forwards run under inference_mode, except on a sharded model (FSDP2), whose
    all-gathered weights would become inference tensors that training later writes into."""
    if not frozen:
        return torch.enable_grad()
    return torch.no_grad() if sharding.units(model) else torch.inference_mode()


def sharing_for(model, lay, enabled: bool = True):
    """The prefix.Sharing a forward of `model` over `lay` uses: None when turned off, when the
    model's cache cannot be continued, when too few prompt tokens are saved (prefix.pays), when
    the model checkpoints its layers in this forward (transformers then drops the prompt pass's
    cache: the completions would not see their prompt), or when the model is sharded (FSDP2):
    the shared forward calls each layer twice, and whether sharing pays is decided per process
    from its own rows, so the processes' all-gathers would no longer pair up."""
    hf = hf_model(model)
    if not enabled or not shareable(hf.config) or _checkpoints(hf) or sharding.units(model):
        return None
    width = lay.input_ids.shape[1] - lay.prompt_len
    return plan_sharing(lay.prompt_groups, lay.prompt_len, width, lay.input_ids.device)


def _checkpoints(hf) -> bool:
    """Whether a forward now would run checkpointed layers (training mode, gradients on)."""
    on = getattr(hf, "is_activation_checkpointing", None)
    on = on if on is not None else getattr(hf, "is_gradient_checkpointing", False)
    return bool(on) and hf.training and torch.is_grad_enabled()


def run_model(model, sets, names, outputs: dict, pad_id, device, frozen: bool, temperatures: dict | None = None,
              value_head=None, prefix_sharing: bool = True):
    """{(output, set): tensor} for one model over the sets `names`.

    `outputs` maps set → the output kinds wanted (logprobs, entropy, logits, values, score,
    token_score: the classifier head of a sequence classifier applied at every token);
    `temperatures` maps a set to the temperature its logits are divided by (default 1);
    `prefix_sharing`: rows with one prompt may encode it once (`sharing_for`)."""
    temperatures = temperatures or {}
    lay = layout(sets, names, pad_id, device)
    with _grad_mode(model, frozen):
        heads = partial(_heads, lay=lay, names=names, outputs=outputs, temperatures=temperatures)
        result = hidden_states(model, lay, sharing_for(model, lay, prefix_sharing), heads)
        for s in names:  # a value head is a module of its own (prepared apart): applied to the returned rows
            if "values" in outputs[s]:
                result[("values", s)] = value_head(result.pop(("hidden", s))).squeeze(-1).float()
        result.update({("mask", s): lay.completion_mask[s] for s in names})
    return result


def _heads(h, lm, lay, names, outputs: dict, temperatures: dict) -> dict:
    """Every output but a value head's, from hidden states `h` (run inside the trunk's forward,
    with its weights as the distributed wrapper gathered them); ("hidden", set) holds the rows a
    value head reads."""
    model = hf_model(lm)
    result = {}
    for s in names:
        first, n, width = lay.spans[s]
        rows = slice(first, first + n)
        # the hidden state at column P-1+t predicts completion token t
        hs = h[rows, lay.prompt_len - 1: lay.prompt_len - 1 + width]
        targets = lay.input_ids[rows, lay.prompt_len: lay.prompt_len + width]
        mask = lay.completion_mask[s]
        for kind in outputs[s]:
            if kind == "token_score":  # a token classifier reads the hidden state at the token itself
                at = h[rows, lay.prompt_len: lay.prompt_len + width]
                result[(kind, s)] = model.score(at).squeeze(-1).float()
            elif kind == "values":
                result[("hidden", s)] = hs
            else:
                result[(kind, s)] = _output(kind, model, hs, targets, mask, temperatures.get(s, 1.0),
                                            h[rows], lay.attention_mask[rows])
    return result


def run_critic(critic, sets, names, pad_id, device, frozen: bool) -> dict:
    """{("values", set): [rows, width]} from a separate critic (runtime/critic.py): its value at
    the state before each completion token, the position a value head reads on the policy."""
    lay = layout(sets, names, pad_id, device)
    with _grad_mode(critic, frozen):
        values = critic(lay.input_ids, lay.attention_mask, lay.position_ids)
        out = {}
        for s in names:
            first, n, width = lay.spans[s]
            out[("values", s)] = values[first:first + n, lay.prompt_len - 1: lay.prompt_len - 1 + width]
    return out


def _output(kind, model, hs, targets, mask, temperature, h_rows, att_rows):
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
    if kind == "score":  # a sequence classifier's score at each row's last real token
        last = att_rows.shape[1] - 1 - att_rows.flip(-1).argmax(-1)
        pooled = h_rows[torch.arange(h_rows.shape[0]), last]
        return model.score(pooled).squeeze(-1).float()
    raise ValueError(f"unknown output kind {kind}")
