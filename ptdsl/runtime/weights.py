"""The trainable models' weights in and out of a folder, in Hugging Face's layout.

The policy is written as `save_pretrained` writes it (config.json and model.safetensors;
a LoRA policy's adapter_config.json and adapter_model.safetensors), each value head as
NAME_head.safetensors, each critic as a NAME/ folder (critic.py): a checkpoint folder
and final/ alike, so `from_pretrained("OUTPUT/checkpoint-N")` loads step N's policy, as
it loads a TRL checkpoint. Under FSDP2 (sharding.py) every process takes part in
gathering the full weights (a collective) and the main process writes them; reading
back, every process reads the files and keeps its own shard.

The optimizer of an FSDP2 run is written here too (its state is sharded as the weights
are: accelerate would save the main process's shard only); other runs' optimizer is
accelerate's `optimizer.bin`."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from ptdsl.runtime.errors import RuntimeSetupError

OPTIMIZER = "optimizer.pt"  # an FSDP2 run's full optimizer state (keys are parameter names)


def head_file(name: str) -> str:
    return f"{name}_head.safetensors"


def policy_marker(lora: bool) -> str:
    """The file that says a folder holds a policy in Hugging Face's layout."""
    return "adapter_config.json" if lora else "config.json"


# ---- writing ----------------------------------------------------------------------------

def write(folder: Path, models, acc, fsdp: bool, tokenizer: bool = True) -> None:
    """The policy (and its tokenizer), value heads and critics into `folder`; every process calls it."""
    from ptdsl.runtime import critic as C
    policy = _full(models.trunk, fsdp, prefix="lm.") if fsdp else None
    heads = {n: _full(h, fsdp) for n, h in models.heads.items()}
    critics = {n: _full(c, fsdp) for n, c in models.critics.items()}
    if not acc.is_main_process:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with _no_progress_bar():
        models.policy.save_pretrained(folder, **({"state_dict": policy} if fsdp else {}))
        if tokenizer:
            models.tokenizer.save_pretrained(folder)
        for name, state in heads.items():
            _save_file(state, folder / head_file(name))
        for name, state in critics.items():
            critic = acc.unwrap_model(models.critics[name])
            body = {k[len("body."):]: v for k, v in state.items() if k.startswith("body.")}
            critic.body.save_pretrained(folder / name, state_dict=body)
            _save_file({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")},
                       folder / name / C.HEAD_FILE)


@contextlib.contextmanager
def _no_progress_bar():
    """transformers draws a "Writing model shards" bar for every save_pretrained (one per
    checkpoint here, even for one shard): off while ptdsl saves, restored after."""
    from transformers.utils import logging
    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def _full(module, fsdp: bool, prefix: str = "") -> dict:
    """`module`'s whole state dict on the main process (a collective under FSDP2: the other
    processes get {}), with `prefix` taken off the names."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = {k: v.detach() for k, v in _unwrapped(module).state_dict().items()}
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _unwrapped(module):
    return getattr(module, "module", module)


def _save_file(state: dict, path: Path) -> None:
    from safetensors.torch import save_file
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


def write_optimizer(folder: Path, modules, optim, acc) -> None:
    """An FSDP2 run's optimizer state, gathered whole (a collective), keyed by parameter name."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    state = get_optimizer_state_dict(_container(modules), optim,
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if acc.is_main_process:
        torch.save(state, folder / OPTIMIZER)


def _container(modules):
    """One module over every trainable model, so optimizer state is keyed by names in it."""
    return torch.nn.ModuleList(modules)


# ---- reading ----------------------------------------------------------------------------

def read(folder: Path, models, fsdp: bool) -> None:
    """Load what `write` wrote into the run's models (every process reads the files)."""
    from safetensors.torch import load_file
    from ptdsl.runtime import critic as C
    if (folder / policy_marker(True)).is_file():
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(models.policy, load_file(str(folder / "adapter_model.safetensors")))
    else:
        state = _read_pretrained(folder)
        _load(models.trunk if fsdp else models.policy, {("lm." if fsdp else "") + k: v for k, v in state.items()},
              fsdp, folder, tied=_tied(models.policy, "lm." if fsdp else ""))
    for name, head in models.heads.items():
        _load(head, load_file(str(folder / head_file(name))), fsdp, folder)
    for name, critic in models.critics.items():
        state = {"body." + k: v for k, v in _read_pretrained(folder / name).items()}
        state.update({"head." + k: v for k, v in load_file(str(folder / name / C.HEAD_FILE)).items()})
        _load(critic, state, fsdp, folder / name, tied=_tied(_unwrapped(critic).body, "body."))


def _read_pretrained(folder: Path) -> dict:
    """A save_pretrained folder's weights: model.safetensors, or the shards its index names."""
    from safetensors.torch import load_file
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for f in files for k, v in load_file(str(folder / f)).items()}
    return load_file(str(folder / "model.safetensors"))


def _tied(model, prefix: str) -> set[str]:
    """Names of weights that share a tensor with an earlier one (tied embeddings): save_pretrained
    writes each shared tensor once, and loading the first restores the others."""
    seen, tied = set(), set()
    for name, p in _unwrapped(model).named_parameters(remove_duplicate=False):
        (tied.add(prefix + name) if id(p) in seen else seen.add(id(p)))
    return tied


def _load(module, state: dict, fsdp: bool, folder: Path, tied: set[str] = frozenset()) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        result = set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        result = _unwrapped(module).load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise RuntimeSetupError(f"the weights in `{folder}` do not fit this run's model: "
                                f"{len(missing)} missing (e.g. {missing[:2]}), "
                                f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]})",
                                help="resume with the model and method the run was started with")


def read_optimizer(folder: Path, modules, optim) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    state = torch.load(folder / OPTIMIZER, weights_only=True)
    set_optimizer_state_dict(_container(modules), optim, state, options=StateDictOptions(full_state_dict=True))
