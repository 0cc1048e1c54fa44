"""How the trainable models are spread over processes: one process, DDP (accelerate's
wrapper), or FSDP2 (each model's weights, gradients and optimizer state sharded with
torch's `fully_shard`).

FSDP2 is asked for as accelerate asks for it (`accelerate launch --use_fsdp
--fsdp_version 2`, or an accelerate config file: the ACCELERATE_USE_FSDP / FSDP_*
variables). ptdsl applies `fully_shard` itself, the same on CPU (a gloo group) and GPU,
because accelerate only routes FSDP on accelerators: on a CPU it would run plain DDP
without a word. So the request is read here and hidden from accelerate while the
Accelerator is built (`hidden_from_accelerate`); accelerate still supplies the process
group, devices, autocast and the checkpoint of the schedule and random states.

Under FSDP2:
- each decoder layer (the model's `_no_split_modules` classes, or FSDP_TRANSFORMER_CLS_TO_WRAP)
  is a unit, the trunk (embeddings, final norm, LM head) the root; value heads and critics
  are sharded as roots of their own. Their weights are gathered only inside their forward
  and backward, which is why the LM head is applied inside the trunk's forward (queries.py).
- frozen models (references, named models) are replicated on every process, as under DDP:
  their forwards then need no collective, and a process may sample or precompute more rows
  than another.
- generation runs on the gathered policy (`gathered`): the whole policy is all-gathered
  once per batch of experience, as TRL gathers ZeRO-3 weights for generation, so processes
  whose samples stop at different lengths do not wait on each other's all-gathers.

A request that cannot be honoured is an error before step 1, never a silent fallback."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from ptdsl.runtime.errors import RuntimeSetupError

_FSDP_VARS = ("ACCELERATE_USE_FSDP",)
_TRUE = ("1", "true", "yes")
# FSDP1 names of the sharding strategies FSDP2 expresses by reshard_after_forward
_RESHARD = {"true": True, "false": False, "full_shard": True, "1": True, "shard_grad_op": False, "2": False}


@dataclass(frozen=True)
class Mode:
    kind: str                          # single | ddp | fsdp2
    processes: int = 1
    reshard_after_forward: bool = True
    layer_classes: tuple[str, ...] = ()  # FSDP_TRANSFORMER_CLS_TO_WRAP (default: the model's own)

    @property
    def fsdp(self) -> bool:
        return self.kind == "fsdp2"

    def describe(self, device: str) -> str:
        """For the start-up line and run.json, e.g. `FSDP2 (fully_shard, full shard), 2 processes`."""
        if self.processes == 1:
            return f"one process ({device})"
        if self.fsdp:
            how = "full shard" if self.reshard_after_forward else "shard grad/optimizer (SHARD_GRAD_OP)"
            return f"FSDP2 (fully_shard, {how}), {self.processes} processes"
        return f"DDP, {self.processes} processes"


def requested(env=None) -> dict:
    """The sharding an accelerate launch or config asks for: {} or {fsdp: version, …}, {deepspeed: True}."""
    env = os.environ if env is None else env
    asked = {}
    if env.get("ACCELERATE_USE_FSDP", "false").lower() in _TRUE:
        asked = {"fsdp": env.get("FSDP_VERSION", "1"),
                 "reshard": env.get("FSDP_RESHARD_AFTER_FORWARD", env.get("FSDP_SHARDING_STRATEGY", "true")),
                 "offload": env.get("FSDP_OFFLOAD_PARAMS", "false").lower() in _TRUE,
                 "layers": env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", ""),
                 "wrap": env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")}
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in _TRUE:
        asked["deepspeed"] = True
    return asked


@contextlib.contextmanager
def hidden_from_accelerate(asked: dict):
    """Build the Accelerator without the FSDP request (ptdsl shards itself; accelerate would
    shard a second time on a GPU, or ignore it on a CPU); the environment is restored after."""
    saved = {k: os.environ.pop(k) for k in _FSDP_VARS if "fsdp" in asked and k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def resolve(asked: dict, processes: int, mixed_precision: str, lora: bool) -> Mode:
    """The mode this run uses, or an error naming what cannot be honoured and what would be."""
    if asked.get("deepspeed"):
        raise RuntimeSetupError(
            "DeepSpeed is asked for (ACCELERATE_USE_DEEPSPEED), but ptdsl does not run under DeepSpeed: its "
            "engine would wrap the step in ways no test here checks",
            help="shard with FSDP2 instead (`accelerate launch --use_fsdp --fsdp_version 2 …`): FSDP2's full shard "
                 "is ZeRO-3, its SHARD_GRAD_OP ZeRO-2 (docs/scaling.md)")
    if "fsdp" not in asked:
        return Mode("ddp" if processes > 1 else "single", processes)
    version, reshard = str(asked["fsdp"]), str(asked["reshard"]).lower()
    problems = []
    if version != "2":
        problems.append(f"FSDP version {version} (only FSDP2 is supported: --fsdp_version 2)")
    if processes < 2:
        problems.append("one process (FSDP shards over several: --num_processes 2 or more)")
    if asked["offload"]:
        problems.append("parameter offload (FSDP_OFFLOAD_PARAMS)")
    if reshard not in _RESHARD:
        problems.append(f"the sharding strategy `{reshard}` (full_shard/true or shard_grad_op/false)")
    if asked.get("wrap", "TRANSFORMER_BASED_WRAP").upper() != "TRANSFORMER_BASED_WRAP":
        problems.append(f"the wrap policy {asked['wrap']} (units are decoder layers: TRANSFORMER_BASED_WRAP)")
    if lora:
        problems.append("LoRA adapters (--lora-r / --lora-path)")
    if mixed_precision == "fp16":
        problems.append("--mixed-precision fp16 (its loss scaler is not shard-aware here; use bf16)")
    if problems:
        raise RuntimeSetupError("FSDP is asked for, but this run cannot be sharded as asked: " + "; ".join(problems),
                                help="change the accelerate config or flags named, or launch without --use_fsdp "
                                     "for DDP")
    layers = tuple(c.strip() for c in asked["layers"].split(",") if c.strip())
    return Mode("fsdp2", processes, _RESHARD[reshard], layers)


def shard(module, lm, mode: Mode):
    """`fully_shard` `module` (a trunk, head or critic) in place: each decoder layer of `lm` (the
    Hugging Face model inside it, or None) a unit, `module` the root."""
    from torch.distributed.fsdp import fully_shard
    if lm is not None:
        names = set(mode.layer_classes or getattr(lm, "_no_split_modules", None) or ())
        layers = [m for m in lm.modules() if type(m).__name__ in names]
        if mode.layer_classes and not layers:
            raise RuntimeSetupError(f"FSDP_TRANSFORMER_CLS_TO_WRAP names {', '.join(sorted(names))}, but "
                                    f"{type(lm).__name__} has no such layer",
                                    help="name the model's decoder layer class, e.g. LlamaDecoderLayer")
        for layer in layers:
            fully_shard(layer, reshard_after_forward=mode.reshard_after_forward)
            layer._ptdsl_reshard = mode.reshard_after_forward  # what `gathered` restores
    fully_shard(module, reshard_after_forward=mode.reshard_after_forward)
    module._ptdsl_reshard = False  # FSDP2 keeps a root's weights after its forward (backward needs them next)
    # FSDP2 picks its root at the first forward; generation calls the layers without the trunk's
    # forward (and before any), which would make each layer a root of its own: fix the root now
    # (torch has no public call for this; its own first forward runs the same initialisation)
    module._get_fsdp_state()._lazy_init()
    return module


def units(module) -> list:
    """The FSDP-managed modules inside `module` (none when it is not sharded)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return []
    return [m for m in module.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(modules):
    """Every sharded module of `modules` holds its full weights inside the block, and forwards do
    not reshard them: generation's many small forwards run without collectives. Every process
    must enter it together (the all-gather is one collective); a no-op without FSDP."""
    found = [u for m in modules if m is not None for u in units(m)]
    if not found:
        yield
        return
    for u in found:
        u.set_reshard_after_forward(False, recurse=False)
        u.unshard()
    try:
        yield
    finally:
        for u in found:
            u.reshard()
            u.set_reshard_after_forward(getattr(u, "_ptdsl_reshard", True), recurse=False)


def full(t):
    """The whole tensor of a sharded parameter or a reduced norm (a collective: every process
    calls it), the tensor itself otherwise."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def shard_models(models, trunk, mode: Mode, device) -> None:
    """Shard the trainable models of a run in place: the trunk (the policy's layers and root),
    each value head and each critic; frozen models stay whole (replicated)."""
    for module in (trunk, *models.heads.values(), *models.critics.values()):
        module.to(device)
    shard(trunk, models.policy, mode)
    for head in models.heads.values():
        shard(head, None, mode)
    for critic in models.critics.values():
        shard(critic, critic.body, mode)
