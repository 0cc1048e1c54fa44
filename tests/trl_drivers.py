"""TRL 1.16 trainers' loss code on a test's leaves, through the stand-ins of trl_harness.py.

One function per trainer entry point that more than one test module drives. Each takes the
spec's leaf dict (canonical names, e.g. ``logprobs(policy, chosen)``) and returns TRL's loss,
differentiable w.r.t. the policy leaves, so a test compares it with the spec and the
plain-torch reference in value and gradient.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from types import SimpleNamespace

import torch

from tests.trl_harness import TRL_VERSION, Accelerator, FusedLM, LogitsLM, layout, metrics, pad_tokens, stub, zero_outside

if TRL_VERSION is not None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.orpo import ORPOTrainer
        from trl.trainer.dpo_trainer import DPOTrainer
        from trl.trainer.grpo_trainer import GRPOTrainer
        from trl.trainer.kto_trainer import KTOTrainer
        from trl.trainer.sft_trainer import SFTTrainer

F64 = torch.float64


# --- DPOTrainer._compute_loss -------------------------------------------------------------


def _log_sum_sq(x, s):
    """log Σ_v π_θ(v)² per token, from the logits leaf (what TRL's fused head computes for WPO)."""
    z = torch.where(x[f"mask({s})"].unsqueeze(-1), x[f"logits(policy, {s})"], torch.zeros((), dtype=F64))
    return (torch.logsumexp(2 * z, -1) - 2 * torch.logsumexp(z, -1)).detach()


def dpo_loss(x, *, loss_type="sigmoid", loss_weights=None, beta=0.1, label_smoothing=0.0, ld_alpha=None,
             use_weighting=False, discopop_tau=0.05, f_divergence_type="reverse_kl", f_alpha_divergence_coef=0.5):
    """DPOTrainer._compute_loss on a preference batch; ``loss_type`` may be a list (combined with
    ``loss_weights``, as RPO and MPO are configured in TRL)."""
    width = max(x["mask(chosen)"].shape[1], x["mask(rejected)"].shape[1])
    (ids_c, att_c, comp_c), (ids_r, att_r, comp_r) = (layout(x[f"mask({s})"], k + 1, width)
                                                      for k, s in enumerate(("chosen", "rejected")))
    batch = {"input_ids": torch.cat([ids_c, ids_r]), "attention_mask": torch.cat([att_c, att_r]),
             "completion_mask": torch.cat([comp_c, comp_r])}

    def both(fn):
        return torch.cat([pad_tokens(fn(s), width) for s in ("chosen", "rejected")])

    # TRL 1.16's α-divergence clamps exp's argument per dtype and has no float64 entry (a
    # KeyError): it meets float32 log-probs, as in training; gradients flow back through the cast
    dtype = torch.float32 if f_divergence_type == "alpha_divergence" else None
    sq = both(lambda s: _log_sum_sq(x, s)) if use_weighting else None
    policy = FusedLM([(batch["input_ids"], both(lambda s: x[f"logprobs(policy, {s})"]).to(dtype), sq)])
    reference = FusedLM([(batch["input_ids"], both(lambda s: x[f"logprobs(reference, {s})"]).to(dtype))])
    loss_types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    this = stub(model=policy, ref_model=reference,
                args=SimpleNamespace(gradient_checkpointing_kwargs=None, discopop_tau=discopop_tau),
                precompute_ref_logps=False, ld_alpha=ld_alpha, f_divergence_type=f_divergence_type,
                f_alpha_divergence_coef=f_alpha_divergence_coef, loss_types=loss_types,
                loss_weights=loss_weights or [1.0] * len(loss_types), beta=beta, label_smoothing=label_smoothing,
                use_weighting=use_weighting)
    return DPOTrainer._compute_loss(this, policy, batch, return_outputs=False).to(F64)


# --- KTOTrainer._compute_loss -------------------------------------------------------------


def kto_loss(x, *, loss_type="kto", beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
    """KTOTrainer._compute_loss on an unpaired batch (``kto`` reads the mismatched set for its
    reference point; ``apo_zero_unpaired`` does not)."""
    calculate_kl = loss_type == "kto"
    ids, attention, completion = layout(x["mask(completion)"], 1)
    batch = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion, "label": x["label"]}
    table = {m: [(ids, x[f"logprobs({m}, completion)"])] for m in ("policy", "reference")}
    if calculate_kl:
        kl_ids, kl_attention, kl_completion = layout(x["mask(mismatched(completion))"], 2)
        batch.update(KL_input_ids=kl_ids, KL_attention_mask=kl_attention, KL_completion_mask=kl_completion)
        for m in table:
            table[m].append((kl_ids, x[f"logprobs({m}, mismatched(completion))"]))
    policy = FusedLM(table["policy"])
    this = stub(KTOTrainer, methods=("_compute_kl_logps",), model=policy, ref_model=FusedLM(table["reference"]),
                args=SimpleNamespace(gradient_checkpointing_kwargs=None), calculate_KL=calculate_kl,
                precompute_ref_logps=False, loss_type=loss_type, beta=beta, desirable_weight=desirable_weight,
                undesirable_weight=undesirable_weight)
    return KTOTrainer._compute_loss(this, policy, batch, return_outputs=False)


# --- SFTTrainer.compute_loss --------------------------------------------------------------


def sft_loss(log_probs: torch.Tensor, mask: torch.Tensor, loss_type="nll"):
    """SFTTrainer.compute_loss (``nll`` or ``dft``) on one prompt token followed by a completion
    with the given per-token log-probs."""
    ids, attention, completion = layout(mask, 1)
    batch = {"input_ids": ids, "attention_mask": attention, "labels": ids.masked_fill(completion == 0, -100)}
    model = FusedLM([(ids, log_probs)])
    this = stub(model=model, compute_loss_func=None, label_smoother=None,
                args=SimpleNamespace(loss_type=loss_type, average_tokens_across_devices=True, max_length=None))
    return SFTTrainer.compute_loss(this, model, batch, num_items_in_batch=None)


# --- CPOTrainer and ORPOTrainer, from logits ------------------------------------------------


def paired_from_logits(cls, attrs: dict, batch: dict, logits: torch.Tensor):
    """``cls.get_batch_loss_metrics`` (CPO or ORPO) on a tokenised preference batch
    (``chosen_input_ids``, ``…_attention_mask``, ``…_labels``, same for rejected), the model
    returning ``logits`` for the concatenated [chosen; rejected] rows."""
    ids = cls.concatenated_inputs(batch, padding_value=0)["concatenated_input_ids"]
    orpo = cls is ORPOTrainer
    this = stub(cls, methods=("concatenated_forward", "odds_ratio_loss" if orpo else "cpo_loss"),
                is_encoder_decoder=False, concatenated_inputs=cls.concatenated_inputs,
                get_batch_logps=cls.get_batch_logps, **{"padding_value" if orpo else "pad_token_id": 0}, **attrs)
    loss, _ = cls.get_batch_loss_metrics(this, LogitsLM(logits, ids), batch)
    return loss


# --- GRPOTrainer: advantages and loss ------------------------------------------------------


def grpo_advantages(rewards_per_func: torch.Tensor, n: int, *, scale_rewards="group",
                    aggregation="sum_then_normalize", weights=None) -> torch.Tensor:
    """TRL's advantages for ``rewards_per_func`` [rows, K]: ``_generate_and_score_completions``
    on a stand-in whose generation is fixed and whose reward functions return the columns."""
    rows, k = rewards_per_func.shape
    weights = torch.ones(k, dtype=F64) if weights is None else torch.tensor(weights, dtype=F64)

    def generate(prompts):  # prompt ids, completion ids, tool mask, texts, sampling logps, extras, images, tool images
        return [[1]] * len(prompts), [[2, 3]] * len(prompts), None, ["c"] * len(prompts), None, {}, None, \
            [[]] * len(prompts)

    this = SimpleNamespace(
        accelerator=Accelerator(), model=SimpleNamespace(training=True, is_gradient_checkpointing=False),
        environment_factories=None, tools=None, environments=None, _generate=generate,
        _tokenizer=SimpleNamespace(pad_token_id=0), pad_to_multiple_of=None, mask_truncated_completions=False,
        eos_token_ids=[3], num_iterations=1, use_vllm=False, vllm_importance_sampling_correction=False, beta=0.0,
        args=SimpleNamespace(steps_per_generation=1, gradient_accumulation_steps=1, per_device_train_batch_size=rows,
                             gradient_checkpointing_kwargs=None),
        _calculate_rewards=lambda inputs, prompts, completions, ids: rewards_per_func.clone(),
        num_generations=n, multi_objective_aggregation=aggregation, reward_weights=weights, scale_rewards=scale_rewards,
        reward_funcs=[None] * k, reward_func_names=[f"reward_{i}" for i in range(k)], _metrics=metrics(),
        _pending_extra_logs={}, _pending_metrics={}, log_multimodal=False,
        _logs={"prompt": [], "completion": [], "rewards": defaultdict(list), "advantages": [],
               "extra": defaultdict(list), "images": []},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = GRPOTrainer._generate_and_score_completions(this, [{"prompt": "p"}] * rows)
    return out["advantages"]


def grpo_loss(x: dict, advantages: torch.Tensor, *, loss_type: str, trainer=None, beta=0.0, epsilon=0.2,
              epsilon_high=0.2, delta=None, top_entropy_quantile=1.0, vespo=(2.0, 3.0, 3.0, 2.0),
              importance_sampling_level="token", max_completion_length=None, sapo=(1.0, 1.05),
              use_bias_correction_kl=True, tool_mask=None) -> torch.Tensor:
    """``trainer._compute_loss`` (GRPOTrainer, or a subclass such as GMPOTrainer) on the test's
    log-probs (and entropies), with TRL's own entropy mask and VESPO gamma weights bound to the
    stand-in. ``max_completion_length`` (dr_grpo's divisor) defaults to the batch's width.
    ``tool_mask`` (episodes: 0 on tool and template tokens) goes in the batch as TRL's rollout puts
    it there, and ``mask(y)`` is then the completion mask TRL multiplies it with."""
    trainer = trainer or GRPOTrainer
    mask = x["mask(y)"]
    policy = zero_outside(mask, x["logprobs(policy, y)"])
    entropies = zero_outside(mask, x["entropy(policy, y)"]) if "entropy(policy, y)" in x else torch.zeros_like(policy)
    rows, width = mask.shape
    batch = {
        "prompt_ids": torch.ones(rows, 1, dtype=torch.long), "prompt_mask": torch.ones(rows, 1, dtype=torch.long),
        "completion_ids": torch.ones(rows, width, dtype=torch.long), "completion_mask": mask.long(),
        "advantages": advantages, "old_per_token_logps": zero_outside(mask, x["logprobs(old, y)"]),
        "ref_per_token_logps": zero_outside(mask, x["logprobs(reference, y)"]), "num_items_in_batch": mask.sum(),
        **({"tool_mask": tool_mask.long()} if tool_mask is not None else {}),
    }
    k_pos, lambda_pos, k_neg, lambda_neg = vespo
    this = stub(
        model=SimpleNamespace(training=True), _get_per_token_logps_and_entropies=lambda *a, **k: (policy, entropies, None),
        get_gamma_weights=GRPOTrainer.get_gamma_weights,
        args=SimpleNamespace(use_bias_correction_kl=use_bias_correction_kl, delta=delta, steps_per_generation=1,
                             vespo_k_pos=k_pos, vespo_lambda_pos=lambda_pos, vespo_k_neg=k_neg,
                             vespo_lambda_neg=lambda_neg, sapo_temperature_pos=sapo[0], sapo_temperature_neg=sapo[1]),
        top_entropy_quantile=top_entropy_quantile, off_policy_mask_threshold=None,
        importance_sampling_level=importance_sampling_level, beta=beta, loss_type=loss_type, epsilon_low=epsilon,
        epsilon_high=epsilon_high, use_vllm=False, vllm_importance_sampling_correction=False,
        current_gradient_accumulation_steps=1, max_completion_length=max_completion_length or width,
        _entropy_bonus_enabled=False)
    this.get_high_entropy_mask = lambda *a: GRPOTrainer.get_high_entropy_mask(this, *a)
    return trainer._compute_loss(this, None, batch)
