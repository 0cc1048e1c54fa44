"""Separate critics: value models trained beside the policy (`value = critic(policy)`,
`value = critic("path")`; plan.Learner).

A critic is a transformer body with a scalar head: `critic(policy)` copies the initial
policy's body (before any LoRA adapters) and adds a fresh head, as verl and OpenRLHF
initialise their critic from the actor's checkpoint; `critic("path")` loads the body with
AutoModel (and the head, when the folder holds the `value_head.safetensors` a finished run saves).
It is fully trained (no LoRA adapters of its own), in its own parameter group with its own
learning rate, its gradient norm clipped on its own (runtime/guard.py), and during its
warm-up the policy's update is skipped, so only the critic learns (verl's critic_warmup).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from ptdsl.runtime import embedded
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.queries import decoder

HEAD_FILE = "value_head.safetensors"
OLD_HEAD_FILE = "value_head.pt"  # what ptdsl 0.2.0 wrote (a pickle): still read


class Critic(torch.nn.Module):
    """Body + scalar head; forward gives one value per position, [rows, columns], float32."""

    def __init__(self, body, seed: int):
        super().__init__()
        self.body = body
        torch.manual_seed(seed)  # the head's initial weights depend on the run's seed only
        self.head = torch.nn.Linear(body.config.hidden_size, 1)

    def forward(self, input_ids, attention_mask, position_ids):
        out = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return self.head(hidden).squeeze(-1).float()


def build(learner, policy, model_id: str | None, tok, seed: int, log=print) -> Critic:
    """The critic a plan.Learner names. `policy` is the loaded policy before LoRA wraps it."""
    path = learner.source[len('critic("'):-2] if learner.source.startswith('critic("') else None
    if path is None:
        return Critic(copy.deepcopy(decoder(policy)), seed + 3)
    if model_id is None:  # the embedded default loads nothing: say what stands in
        log(f"note: `{learner.name} = critic(\"{path}\")` is not loaded with the embedded default: the body of "
            f"another tiny model with random weights (seed {seed + 3}) stands in; give --model to load `{path}`")
        return Critic(decoder(embedded.model(tok, seed + 3)), seed + 3)
    from transformers import AutoModel
    try:
        critic = Critic(AutoModel.from_pretrained(path), seed + 3)
    except OSError as exc:
        raise RuntimeSetupError(f"cannot load the critic `{learner.name}` from `{path}`: {exc}",
                                help="give a local directory or a hub id reachable from this machine") from None
    head = Path(path) / HEAD_FILE
    if head.is_file():  # a critic a previous run trained: its head too
        from safetensors.torch import load_file
        critic.head.load_state_dict(load_file(str(head)))
    elif (Path(path) / OLD_HEAD_FILE).is_file():
        critic.head.load_state_dict(torch.load(Path(path) / OLD_HEAD_FILE, weights_only=True))
    return critic


def learning_rates(learners, lr: float, critic_lr: float | None, method: str) -> list[float]:
    """Each critic's learning rate: --critic-lr when given, else the policy's × its `lr_scale`."""
    if critic_lr is not None and not learners:
        raise RuntimeSetupError(f"--critic-lr {critic_lr:g} is given, but `{method}` has no critic to train with it",
                                help="declare one in the spec (`value = critic(policy)`), or drop --critic-lr")
    if critic_lr is not None and critic_lr <= 0:
        raise RuntimeSetupError(f"--critic-lr must be > 0, got {critic_lr:g}")
    return [critic_lr if critic_lr is not None else lr * learner.lr_scale for learner in learners]


def warmup_steps(learners) -> int:
    """Optimizer steps at the start in which only the critics learn (the longest warm-up)."""
    return max((learner.warmup_steps for learner in learners), default=0)


def hold_policy(params) -> None:
    """Skip the policy's update this step: AdamW leaves a parameter without a gradient untouched
    (no moment update, no weight decay)."""
    for p in params:
        p.grad = None


def save(critics: dict, unwrap, folder: Path) -> None:
    """Each critic as `folder/<name>/`: the body (save_pretrained) and its head (HEAD_FILE), which
    `critic("folder/<name>")` loads back."""
    for name, critic in critics.items():
        critic = unwrap(critic)
        critic.body.save_pretrained(folder / name)
        save_head(critic.head, folder / name / HEAD_FILE)


def save_head(head, path: Path) -> None:
    """A head's weights as safetensors (no pickle: loading it runs no code), contiguous copies."""
    from safetensors.torch import save_file
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, str(path))
