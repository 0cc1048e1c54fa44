"""How models are loaded and trained for memory (issue 12 item 2): the weights' dtype, the
attention implementation, activation (gradient) checkpointing of the policy, and LoRA's
target modules, dropout and a starting adapter.

The same options apply to a model loaded from a path, to the embedded default and to a model
object passed from Python, so a flag never works for one and is silently ignored for another."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ptdsl.runtime.errors import RuntimeSetupError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Loading:
    torch_dtype: str | None = None           # None / "auto": as saved (from_pretrained's default is float32)
    attn_implementation: str | None = None   # eager | sdpa | flash_attention_2 | …: transformers' names
    gradient_checkpointing: bool = False
    lora_dropout: float = 0.0
    lora_target_modules: str | None = None   # comma-separated module names, or all-linear (the default)
    lora_path: str | None = None             # an adapter a previous run saved: trained further


def tag(loading: Loading) -> str:
    """What the options change in a model's outputs, for its id (caches of its outputs are keyed by
    it): empty for the defaults."""
    parts = [f"{k}={v}" for k, v in (("dtype", loading.torch_dtype), ("attn", loading.attn_implementation)) if v]
    return f"[{','.join(parts)}]" if parts else ""


def pretrained_kwargs(loading: Loading) -> dict:
    """from_pretrained's keywords for these options (transformers 5 calls the dtype `dtype`)."""
    kw = {}
    if loading.torch_dtype is not None:
        kw["dtype"] = "auto" if loading.torch_dtype == "auto" else _dtype(loading.torch_dtype)
    if loading.attn_implementation is not None:
        kw["attn_implementation"] = loading.attn_implementation
    return kw


def apply(model, loading: Loading):
    """The options on a model built or passed in (not loaded by from_pretrained): its dtype and
    attention implementation; `auto` leaves the dtype as it is."""
    if loading.torch_dtype not in (None, "auto"):
        model.to(_dtype(loading.torch_dtype))
    if loading.attn_implementation is not None:
        try:
            model.set_attn_implementation(loading.attn_implementation)
        except (ValueError, ImportError) as exc:
            raise RuntimeSetupError(f"--attn-implementation {loading.attn_implementation}: {exc}") from None
    return model


def checkpointing(policy, loading: Loading, log) -> None:
    """Recompute the policy's layer activations in backward instead of keeping them (before LoRA
    wraps it: the layers are the base model's)."""
    if not loading.gradient_checkpointing:
        return
    if not getattr(policy, "supports_gradient_checkpointing", False):
        raise RuntimeSetupError(f"--gradient-checkpointing: {type(policy).__name__} does not support it")
    # non-reentrant: no requires_grad trick on the inputs is needed (LoRA's frozen embeddings)
    enable = getattr(policy, "activation_checkpointing_enable", None)  # transformers 5; older: gradient_…
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    log("gradient checkpointing: the policy's layer activations are recomputed in backward")


def training_mode(policy, loading: Loading) -> None:
    """transformers checkpoints only in training mode, and LoRA's dropout acts only in it: then the
    policy is put in training mode with every other dropout off (p = 0), as TRL's trainers disable
    dropout by default, so the numbers equal a run without these options (a model loaded with
    from_pretrained is otherwise left in eval mode, where no dropout acts)."""
    if not (loading.gradient_checkpointing or loading.lora_dropout > 0):
        return
    policy.train()
    for name, m in policy.named_modules():
        if isinstance(m, torch.nn.Dropout) and "lora_dropout" not in name:
            m.p = 0.0


def lora(policy, r: int, alpha: int, loading: Loading):
    """The policy with LoRA adapters: new ones (rank r) or, with lora_path, a saved adapter trained further."""
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError:
        raise RuntimeSetupError("LoRA needs the `peft` package", help="pip install peft") from None
    if loading.lora_path is not None:
        try:
            return PeftModel.from_pretrained(policy, loading.lora_path, is_trainable=True)
        except (OSError, ValueError) as exc:
            raise RuntimeSetupError(f"--lora-path {loading.lora_path}: cannot load the adapter: {exc}",
                                    help="give the folder a LoRA run saved (OUTPUT/final)") from None
    task = "SEQ_CLS" if hasattr(policy, "score") else "CAUSAL_LM"
    targets = loading.lora_target_modules or "all-linear"
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    try:
        return get_peft_model(policy, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=loading.lora_dropout,
                                                 target_modules=targets, task_type=task))
    except ValueError as exc:  # e.g. a target module the model does not have
        raise RuntimeSetupError(f"--lora-target-modules {loading.lora_target_modules}: {exc}") from None


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise RuntimeSetupError(f"--torch-dtype {name}: not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]
