"""DPO step time: ptdsl's compiled step vs a minimal hand-written torch step, side by
side in one process, on the same model and batches (PERF.md's setup: Llama-style
models from a config, 8 pairs of exact-length sequences).

    python benchmarks/dpo_step.py [--size tiny|small] [--steps 20]

Reports milliseconds per optimizer step (median) and the ratio ptdsl / hand-written.
The hand-written step: one concatenated forward for chosen+rejected, the reference
under no_grad, full log-softmax, AdamW, clipping. ptdsl: the same loop body the
trainer runs (runtime/step.py + the compiled loss), reference live (as the
hand-written one) and precomputed (ptdsl's default)."""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import ptdsl
from ptdsl.runtime.step import StepContext, build_batch, loss_inputs

SIZES = {"tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                      vocab_size=1024, length=64),
         "small": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                       vocab_size=8192, length=128)}


def make_model(size: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM
    s = dict(SIZES[size])
    s.pop("length")
    torch.manual_seed(seed)
    cfg = LlamaConfig(**s, num_key_value_heads=s["num_attention_heads"], max_position_embeddings=512,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


class _Ex:
    def __init__(self, i, prompt, chosen, rejected):
        self.index, self.prompt_text, self.prompt_ids = i, "", prompt
        self.completions = {"chosen": chosen, "rejected": rejected}
        self.fields, self.columns = {}, {}


def batches(size: str, n_batches: int, pairs: int = 8):
    g = torch.Generator().manual_seed(0)
    L, V = SIZES[size]["length"], SIZES[size]["vocab_size"]
    out = []
    for b in range(n_batches):
        exs = []
        for i in range(pairs):
            ids = torch.randint(3, V, (3 * L // 2,), generator=g).tolist()
            exs.append(_Ex(b * pairs + i, ids[: L // 2], ids[L // 2: L], ids[L:]))
        out.append(exs)
    return out


def hand_written_step(policy, ref, opt, exs, beta=0.1):
    ids = torch.tensor([e.prompt_ids + e.completions[s] for s in ("chosen", "rejected") for e in exs])
    P = len(exs[0].prompt_ids)

    def seq_logps(model):
        logits = model(ids).logits[:, P - 1:-1].float()
        return torch.log_softmax(logits, -1).gather(-1, ids[:, P:, None])[..., 0].sum(-1)

    pol = seq_logps(policy)
    with torch.no_grad():
        r = seq_logps(ref)
    B = len(exs)
    z = beta * ((pol[:B] - r[:B]) - (pol[B:] - r[B:]))
    loss = -torch.nn.functional.logsigmoid(z).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def ptdsl_step(compiled, ctx, opt, exs):
    batch = build_batch(compiled, exs)
    loss, _ = compiled.loss(loss_inputs(ctx, batch))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(ctx.models.policy.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def timed(fn, data, warmup=3):
    for exs in data[:warmup]:
        fn(exs)
    times = []
    for exs in data[warmup:]:
        t0 = time.perf_counter()
        fn(exs)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=list(SIZES), default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    data = batches(args.size, args.steps + 3)
    compiled = ptdsl.compile("dpo")

    policy = make_model(args.size)
    ref = copy.deepcopy(policy).eval()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    hand = timed(lambda exs: hand_written_step(policy, ref, opt, exs), data)

    from ptdsl.runtime.setup import Models
    results = {}
    for mode in ("live", "precomputed"):
        policy = make_model(args.size)
        ref = copy.deepcopy(policy).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        models = Models(policy, type("Tok", (), {"pad_token_id": 0})(), frozen={"reference": ref})
        cache, positions = {}, {}
        if mode == "precomputed":  # what ptdsl does by default: reference log-probs once, before training
            from ptdsl.runtime.precompute import precompute
            flat = [e for exs in data for e in exs]
            positions = {e.index: i for i, e in enumerate(flat)}
            pre = [q for q in compiled.plan.queries if q.precomputable]
            cache = precompute(pre, {"reference": ref}, flat, compiled.graph.graph["sets"], 0, "cpu", 8, None,
                               {"reference": "bench"}, lambda it, **kw: it)
        ctx = StepContext(compiled, models, "cpu", cache, positions)
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
        results[mode] = timed(lambda exs: ptdsl_step(compiled, ctx, opt, exs), data)
    print(f"DPO step, {args.size} model, 8 pairs × {SIZES[args.size]['length']} tokens, median of {args.steps}:")
    print(f"  hand-written torch (live reference)   {hand:8.1f} ms   1.00")
    for mode, ms in results.items():
        print(f"  ptdsl ({mode} reference){' ' * (15 - len(mode))}{ms:8.1f} ms   {ms / hand:.2f}")


if __name__ == "__main__":
    main()
