"""A spec's loss inside TRL 1.16's trainers, for a TRL user trying a method in an existing script.

    from ptdsl.integrations.trl import DPOTrainer      # instead of trl's
    trainer = DPOTrainer(model, args=DPOConfig(...), train_dataset=ds, processing_class=tok,
                         method="methods/my_dpo.ptdsl", params={"beta": 0.2})

`DPOTrainer` and `GRPOTrainer` subclass TRL's and keep its data processing, generation, reward
functions, reference model and logging; only the loss is the compiled method's, on leaf inputs
built from TRL's batch and forward passes. TRL's loss options (loss_type, its beta, epsilon, …)
do not act: the spec and its `params` are the loss. The method's metrics are logged under
`<method>/<metric>` beside TRL's own.

GRPO: TRL keeps only advantages in its batch, but a spec computes its own advantages from the
reward leaf; the bridge keeps the raw per-completion rewards of TRL's reward step (the weighted
sum over reward functions, `reward_weights`) and feeds those. Group statistics need whole groups
in each micro-batch, so the bridge shuffles TRL's generation batch by groups instead of by rows,
and asks that `per_device_train_batch_size` be a multiple of `num_generations`.

A spec whose leaves the trainer cannot supply (a value head, a teacher, another data source, a
reference TRL does not run) is a `BridgeError` at construction naming each leaf.
"""
from __future__ import annotations

import torch
import trl

if not trl.__version__.startswith("1.16."):   # the bridge overrides trainer internals of TRL 1.16
    raise ImportError(f"ptdsl.integrations.trl needs trl 1.16 (found {trl.__version__}): pip install 'ptdsl[trl]'")

from accelerate.utils import is_peft_model
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.grpo_trainer import split_pixel_values_by_grid, split_tensor_dict, unsplit_pixel_values_by_grid
from trl.trainer.utils import use_adapter

from ptdsl.api import CompiledMethod
from ptdsl.api import compile as compile_spec
from ptdsl.integrations.leaves import BridgeError, Supply, pack, require_supplied, role_kind, take

__all__ = ["DPOTrainer", "GRPOTrainer", "BridgeError"]

REWARDS = "ptdsl_rewards"   # the raw per-completion rewards the bridge adds to TRL's GRPO batch
_DPO_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
_GRPO_MODEL_EXTRAS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                      "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def compile_method(method, params: dict | None):
    """A CompiledMethod as is, or a Method, library name or path compiled with `params`."""
    if isinstance(method, CompiledMethod):
        if params:
            raise BridgeError("`params` given with an already compiled method",
                              help="pass the method's name or path with params, or compile it with them")
        return method
    return compile_spec(method, **(params or {}))


def _log_metrics(trainer, mode: str, metrics: dict) -> None:
    """The method's metrics into TRL's metric store (averaged over processes, then over the
    logging window by TRL's `log`)."""
    for name, value in metrics.items():
        value = value.detach().float().reshape(1)
        trainer._metrics[mode][f"{trainer.compiled_method.name}/{name}"].append(
            trainer.accelerator.gather_for_metrics(value).mean().item())


def _log_aux(trainer, mode: str, aux_loss) -> None:
    trainer._metrics[mode]["aux_loss"].append(trainer.accelerator.gather_for_metrics(aux_loss.detach()).mean().item())


def _fill(compiled, token_set: str, per_token: dict, entropy, mask, extra: dict) -> dict:
    """The leaf tensors of one token set: `per_token` maps role kinds to [rows, tokens]
    log-probs aligned with `mask`; `extra` gives the per-row leaves (rewards) by name."""
    leaves = {}
    for leaf in (i for i in compiled.inputs if i.set == token_set):
        if leaf.kind == "mask":
            leaves[leaf.name] = mask
        elif leaf.kind == "logprobs":
            leaves[leaf.name] = per_token[role_kind(compiled, leaf.model)]
        elif leaf.kind == "entropy":
            leaves[leaf.name] = entropy
        else:
            leaves[leaf.name] = extra[leaf.name]
    return leaves


# --- DPO-style: TRL's preference batch, [chosen rows; rejected rows] ------------------------------


class DPOTrainer(trl.DPOTrainer):
    """TRL's DPOTrainer whose loss is a compiled pairwise method (`method`, `params`); the spec
    reads the token sets `chosen` and `rejected` of TRL's preference rows."""

    def __init__(self, *args, method, params: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled_method = compile_method(method, params)
        precomputed = "DPOConfig(precompute_ref_log_probs=True) keeps only summed reference log-probs; " \
                      "the spec reads them per token: set it to False"
        require_supplied(self.compiled_method, Supply(
            "TRL's DPOTrainer", frozenset({"chosen", "rejected"}),
            {"policy": None, "frozen_copy": precomputed if self.precompute_ref_logps else None},
            frozenset({"logprobs", "entropy", "mask"})))
        self._needs_reference = any(role_kind(self.compiled_method, i.model) == "frozen_copy"
                                    for i in self.compiled_method.inputs)

    def _reference_logps(self, model_kwargs: dict, labels):
        """Per-token log-probs of the reference, as TRL's `_compute_loss` runs it (a separate
        model, or the PEFT model with its adapter off)."""
        model_kwargs = {k: v for k, v in model_kwargs.items() if k != "output_router_logits"}
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if is_peft_model(self.model) and self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    return self.model(**model_kwargs, labels=labels, fused_lm_head=True).log_probs
            return self.ref_model(**model_kwargs, labels=labels, fused_lm_head=True).log_probs

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        model_kwargs = {k: v for k, v in inputs.items() if k not in _DPO_NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:   # MoE: the router's load-balancing loss, as TRL adds it
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        width = completion_mask.size(1) - 1   # column t scores token t + 1; PEFT prompt tokens come first
        per_token = {"policy": outputs.log_probs[:, -width:]}
        if self._needs_reference:
            per_token["frozen_copy"] = self._reference_logps(model_kwargs, labels)[:, -width:]
        leaves = self._pair_leaves(per_token, outputs.entropy[:, -width:], completion_mask[:, 1:])
        loss, metrics = self.compiled_method.loss(leaves)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            _log_aux(self, mode, outputs.aux_loss)
        self._log_batch(mode, inputs, metrics)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)   # TRL's way: the fused head builds no logits
        return (loss, outputs) if return_outputs else loss

    def _pair_leaves(self, per_token: dict, entropy, mask) -> dict:
        """The leaves of both sets: TRL's rows are [chosen; rejected], each set packed so its
        completion starts at column 0."""
        leaves = {}
        for half, name in enumerate(("chosen", "rejected")):
            rows = slice(half * (mask.size(0) // 2), (half + 1) * (mask.size(0) // 2))
            index, packed = pack(mask[rows])
            tokens = {k: take(v[rows], index) for k, v in per_token.items()}
            leaves.update(_fill(self.compiled_method, name, tokens, take(entropy[rows], index), packed, {}))
        return leaves

    def _log_batch(self, mode: str, inputs: dict, metrics: dict) -> None:
        if mode == "train":  # TRL's token count, which its `num_tokens` reports
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        _log_metrics(self, mode, metrics)


# --- GRPO-style: TRL's generation batch, groups of num_generations completions ---------------------


class GRPOTrainer(trl.GRPOTrainer):
    """TRL's GRPOTrainer whose loss is a compiled online method (`method`, `params`) with one
    rollout set; its reward leaf gets TRL's raw rewards, its `old` TRL's old log-probs."""

    def __init__(self, *args, method, params: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled_method = compile_method(method, params)
        self._rollout = self._check_spec()

    def _check_spec(self) -> str:
        c, where = self.compiled_method, "TRL's GRPOTrainer"
        rollouts = sorted(n for n, s in c.graph.graph["sets"].items() if s.source == "rollout")
        if len(rollouts) != 1:
            raise BridgeError(f"method `{c.name}` has {len(rollouts)} rollout sets "
                              f"({', '.join(rollouts) or 'none'}); {where} samples exactly one",
                              help="use a method with one `rollout` (e.g. grpo) or `ptdsl train`")
        y = rollouts[0]
        no_reference = f"GRPOConfig(beta={self.beta}) runs no reference model: set beta > 0"
        require_supplied(c, Supply(where, frozenset({y}),
                                   {"policy": None, "old": None, "frozen_copy": None if self.beta else no_reference},
                                   frozenset({"logprobs", "entropy", "mask", "reward"})))
        rewards = sorted({i.name for i in c.inputs if i.kind == "reward"})
        if len(rewards) > 1:
            raise BridgeError(f"method `{c.name}` reads {len(rewards)} rewards ({', '.join(rewards)}); "
                              f"{where} gives one per completion (the weighted sum of its reward functions)")
        self._check_rollout(y)
        self._check_groups(y)
        return y

    def _check_rollout(self, y: str) -> None:
        """TRL samples from the policy and scores at its `temperature`; the spec's rollout must
        mean the same (ptdsl scores a rollout at its sampling or `score_temperature`)."""
        c, rollout = self.compiled_method, self.compiled_method.graph.graph["rollouts"][y]
        if role_kind(c, rollout.model) != "policy":
            raise BridgeError(f"method `{c.name}` samples `{y}` from `{rollout.model}`; TRL's GRPOTrainer "
                              "samples from the policy", help="train this method with `ptdsl train`")
        scored = float(rollout.options.get("score_temperature", rollout.options.get("temperature", 1.0)))
        if abs(scored - self.temperature) > 1e-9:
            raise BridgeError(f"method `{c.name}` scores `{y}` at temperature {scored:g}, but TRL's log-probs are "
                              f"at GRPOConfig(temperature={self.temperature:g})",
                              help="give the method's rollout TRL's temperature, e.g. "
                                   f"params={{'temperature': {self.temperature:g}}}")

    def _check_groups(self, y: str) -> None:
        n, g = self.compiled_method.group_size(y), self.num_generations
        if n is not None and n != g:
            raise BridgeError(f"method `{self.compiled_method.name}` groups `{y}` in n = {n} completions per "
                              f"prompt, but GRPOConfig(num_generations={g})",
                              help=f"compile the method with its rollout's n = {g}, "
                                   f"e.g. params={{'num_generations': {g}}}")
        if n is not None and self.args.per_device_train_batch_size % n:
            raise BridgeError(f"per_device_train_batch_size = {self.args.per_device_train_batch_size} is not a "
                              f"multiple of num_generations = {n}: the spec's group statistics need whole "
                              "groups in each micro-batch")

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        per_func = self._rewards_per_func   # every process's rows, as TRL normalises them
        unscorable = torch.isnan(per_func).all(dim=1).nonzero().flatten().tolist()
        if unscorable:
            more = len(unscorable) - 10
            rows = ", ".join(map(str, unscorable[:10])) + (f" and {more} more" if more > 0 else "")
            raise BridgeError(f"{len(unscorable)} completion(s) of the generation batch have no reward (rows {rows}, "
                              "counted from 0): every reward function returned None, and the spec's reward leaf "
                              "needs a number",
                              help="make a reward function score every completion")
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        rows = out["completion_ids"].size(0)
        out[REWARDS] = rewards[self.accelerator.process_index * rows:(self.accelerator.process_index + 1) * rows]
        return out

    def _prepare_inputs(self, generation_batch):
        """TRL 1.16's `_prepare_inputs`, shuffling whole groups instead of rows."""
        if not self.model.training:
            return self._generate_and_score_completions(generation_batch)
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            batch = _shuffle_groups(split_pixel_values_by_grid(batch), self.num_generations)
            batches = split_tensor_dict(batch, self.args.steps_per_generation)
            self._buffered_inputs = [unsplit_pixel_values_by_grid(b) for b in batches]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        wants_entropy = any(i.kind == "entropy" for i in self.compiled_method.inputs)
        logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=wants_entropy,
            compute_aux_loss=self.aux_loss_enabled, **{k: inputs.get(k) for k in _GRPO_MODEL_EXTRAS})
        old = inputs.get("old_per_token_logps")   # absent when on-policy: TRL's old is the policy, detached
        per_token = {"policy": logps, "old": logps.detach() if old is None else old,
                     "frozen_copy": inputs.get("ref_per_token_logps")}
        rewards = {i.name: inputs[REWARDS] for i in self.compiled_method.inputs if i.kind == "reward"}
        leaves = _fill(self.compiled_method, self._rollout, per_token, entropies, mask.bool(), rewards)
        loss, metrics = self.compiled_method.loss(leaves)
        if self.aux_loss_enabled:   # MoE: the router's load-balancing loss, as TRL adds it
            loss = loss + self.router_aux_loss_coef * aux_loss
            _log_aux(self, mode, aux_loss)
        _log_metrics(self, mode, metrics)
        # TRL scales its policy loss for gradient accumulation itself (the Trainer's scaling is off)
        return loss / self.current_gradient_accumulation_steps if mode == "train" else loss


def _shuffle_groups(batch: dict, group: int) -> dict:
    """TRL's `shuffle_sequence_dict` over groups of `group` consecutive rows (one prompt's
    completions, as TRL's RepeatSampler lays them out), keeping each group's rows together."""
    rows = len(next(v for v in batch.values() if v is not None and not (torch.is_tensor(v) and v.ndim == 0)))
    order = (torch.randperm(rows // group).unsqueeze(1) * group + torch.arange(group)).flatten()

    def permute(v):
        if v is None or (torch.is_tensor(v) and v.ndim == 0):
            return v
        return v[order] if torch.is_tensor(v) else [v[i] for i in order]
    return {k: permute(v) for k, v in batch.items()}
