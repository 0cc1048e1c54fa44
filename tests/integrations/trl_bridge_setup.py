"""What the TRL bridge tests share: TRL trainers (the bridge's or TRL's own) on a tiny random
Llama (or Mixtral), DPO on four preference rows, GRPO with fixed completions and rewards (TRL's
`_generate` replaced, as tests/methods/test_experience_reuse.py does), and the independent
reference: each row run alone through Hugging Face's forward."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ptdsl.runtime import embedded

ATOL = 1e-5
DPO_ROWS = [("1+2=", "3", "45"), ("7*3=", "21", "2"), ("9-4=", "5", "13"), ("8+8=", "16", "0")]


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def common_args(tmp_path) -> dict:
    return dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, seed=0, logging_steps=1,
                save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, learning_rate=1e-2)


def models(tok, moe: bool = False):
    """Policy and reference with different weights, so β·log(π/π_ref) is not 0; dropout is 0.
    `moe`: a tiny Mixtral, whose router adds TRL's load-balancing loss."""
    if not moe:
        return embedded.model(tok, 0), embedded.model(tok, 1)
    from transformers import MixtralConfig, MixtralForCausalLM
    cfg = MixtralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=4, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=64, pad_token_id=tok.pad_token_id, router_aux_loss_coef=0.5)
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(MixtralForCausalLM(cfg))
    return tuple(out)


def dpo_trainer(tmp_path, cls, tok, moe=False, **config):
    from datasets import Dataset
    from trl import DPOConfig
    method = {k: config.pop(k) for k in ("method", "params") if k in config}
    cfg = DPOConfig(**common_args(tmp_path), per_device_train_batch_size=len(DPO_ROWS), max_steps=2, **config)
    policy, reference = models(tok, moe)
    data = Dataset.from_dict({k: [r[i] for r in DPO_ROWS] for i, k in enumerate(("prompt", "chosen", "rejected"))})
    return quiet(cls, policy, ref_model=reference, args=cfg, train_dataset=data, processing_class=tok, **method)


def first_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def row_logps(model, ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Log-probs of the `scored` tokens of one unpadded row, from the model's logits."""
    with torch.no_grad():
        logits = model(input_ids=ids.unsqueeze(0)).logits[0, :-1]
    logps = F.log_softmax(logits.float(), dim=-1).gather(1, ids[1:].unsqueeze(1)).squeeze(1)
    return logps[scored[1:].bool()]


def padded(rows: list[torch.Tensor]):
    width = max(len(r) for r in rows)
    values = torch.zeros(len(rows), width)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        values[i, :len(r)], mask[i, :len(r)] = r, True
    return values, mask


PROMPTS, G = ["1+2=", "7*3="], 4
COMPLETIONS = {"1+2=": ["3", "4", "33", "1"], "7*3=": ["21", "2", "12", "9"]}
REWARDS = {("1+2=", "3"): 1.0, ("1+2=", "4"): 0.0, ("1+2=", "33"): 0.5, ("1+2=", "1"): 0.0,
           ("7*3=", "21"): 1.0, ("7*3=", "2"): 0.25, ("7*3=", "12"): 0.0, ("7*3=", "9"): 0.75}


def reward_fn(prompts, completions, **_):
    return [REWARDS[p, c] for p, c in zip(prompts, completions, strict=True)]


def grpo_trainer(tmp_path, cls, tok, rows=len(PROMPTS) * G, moe=False, **config):
    """A GRPOTrainer whose generation returns COMPLETIONS (the j-th sample of a prompt its j-th)."""
    from datasets import Dataset
    from trl import GRPOConfig
    method = {k: config.pop(k) for k in ("method", "params") if k in config}
    cfg = GRPOConfig(**common_args(tmp_path), per_device_train_batch_size=rows, num_generations=G,
                     max_completion_length=4, beta=0.0, max_steps=2, shuffle_dataset=False, **config)
    trainer = quiet(cls, models(tok, moe)[0], reward_funcs=reward_fn, args=cfg,
                     train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}), processing_class=tok, **method)

    def generate(prompts):
        seen: dict = {}
        texts = []
        for p in prompts:
            texts.append(COMPLETIONS[p][seen.get(p, 0) % G])
            seen[p] = seen.get(p, 0) + 1
        ids = [tok.convert_tokens_to_ids(list(t)) + [tok.eos_token_id] for t in texts]
        return [tok(p)["input_ids"] for p in prompts], ids, None, texts, None, {}, None, None
    trainer._generate = generate
    trainer.current_gradient_accumulation_steps = cfg.gradient_accumulation_steps  # as Trainer.train sets it
    return trainer


def generation(trainer):
    return quiet(trainer._generate_and_score_completions, [{"prompt": p} for p in PROMPTS for _ in range(G)])
