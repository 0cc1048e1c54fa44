"""What a host trainer can supply to a compiled loss, checked before training starts, and the
tensor layout ptdsl's leaves want (completion tokens from column 0, a mask beside them).

A bridge describes its trainer as a `Supply`: the row sets it holds, the models it runs (by
the role kinds of the spec: `policy`, `frozen_copy`, `old`) and the leaf kinds it can fill.
`unsupplied` names every leaf the trainer cannot fill, with the reason, so a spec that reads a
value head, a teacher or a second data source fails at construction, not in the first step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ptdsl.runtime.errors import RuntimeSetupError


class BridgeError(RuntimeSetupError):
    """A spec (or a trainer option) the bridge cannot run in the host trainer. Raised inside a
    user's own script, where no CLI renders it, so its text carries the help line too."""

    def __str__(self) -> str:
        message = super().__str__()
        return message + (f"\n  = help: {self.help}" if self.help else "")

    def render(self) -> str:
        return f"error: {self}"


@dataclass(frozen=True)
class Supply:
    trainer: str                      # the host trainer's name, for messages
    sets: frozenset                   # token sets the trainer's batch holds
    models: dict                      # role kind → why not (None: supplied), e.g. {"policy": None}
    kinds: frozenset                  # leaf kinds it fills: logprobs, entropy, mask, reward
    entropy_models: frozenset = field(default_factory=lambda: frozenset({"policy"}))


def role_kind(compiled, model: str | None) -> str | None:
    """The role kind of a model name in the spec (`policy`, `frozen_copy`, `old`, `value`, …);
    a frozen copy of anything but the policy counts as its own kind (a teacher)."""
    if model is None:
        return None
    role = compiled.graph.graph["roles"].get(model)
    if role is None:
        return model
    if role.kind in ("frozen_copy", "old") and role.of != "policy":
        return f"{role.kind} of {role.of}"
    return role.kind


def _why_not(compiled, leaf, supply: Supply) -> str | None:
    if leaf.kind not in supply.kinds:
        return f"{supply.trainer} has no {leaf.kind} input"
    if leaf.set is not None and leaf.set not in supply.sets:
        return (f"{supply.trainer}'s batch holds the sets {', '.join(sorted(supply.sets))}, "
                f"not `{leaf.set}`")
    if leaf.kind in ("logprobs", "entropy"):
        kind = role_kind(compiled, leaf.model)
        if kind not in supply.models:
            return f"{supply.trainer} runs no model like `{leaf.model}` ({kind})"
        if supply.models[kind] is not None:
            return supply.models[kind]
        if leaf.kind == "entropy" and kind not in supply.entropy_models:
            return f"{supply.trainer} computes entropies of the policy only"
    return None


def unsupplied(compiled, supply: Supply) -> list[str]:
    """`name`: why, for every input of `compiled` that `supply` cannot fill."""
    return [f"`{leaf.name}` ({leaf.level}): {why}" for leaf in compiled.inputs
            if (why := _why_not(compiled, leaf, supply)) is not None]


def require_supplied(compiled, supply: Supply) -> None:
    missing = unsupplied(compiled, supply)
    if missing:
        raise BridgeError(
            f"method `{compiled.name}` cannot run in {supply.trainer}: it reads "
            + "; ".join(missing),
            help=f"{supply.trainer} supplies {', '.join(sorted(supply.kinds))} inputs of the sets "
                 f"{', '.join(sorted(supply.sets))}; train this method with `ptdsl train` instead")


def pack(mask):
    """Where each row's masked positions go when moved to the front, in order: (index
    [rows, width], packed mask), width the longest row's count; `take(values, index)` moves a
    tensor the same way. TRL scores whole sequences (prompt, completion, padding); packed, the
    leaves have the completion's width and ptdsl's runtime layout (the loss counts positions
    within the mask, so this is layout, not meaning)."""
    import torch
    mask = mask.bool()
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    width = max(int(mask.sum(dim=1).max()), 1) if mask.numel() else 1
    index = order[:, :width]
    return index, mask.gather(1, index)


def take(values, index):
    return values.gather(1, index)
