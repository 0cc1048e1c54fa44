"""Reward sources: the verifier registry, `--reward-fn module:function`, reward
models, and weighted sums of them.

A verifier has TRL's reward-function signature: `fn(prompts, completions,
**columns) -> list[float]`, where `columns` are the dataset's other columns for
the same rows (e.g. `answer`). Spec text only names a verifier; the Python that
runs is registered by the user (`ptdsl.rewards.register`) or named explicitly on
the command line — never found by guessing.
"""
from __future__ import annotations

import importlib
from typing import Callable

from ptdsl.runtime import embedded
from ptdsl.runtime.errors import RuntimeSetupError

Verifier = Callable[..., list]
_REGISTRY: dict[str, Verifier] = {}
BUILTIN = {"accuracy": embedded.accuracy, "digits": embedded.digits}


def register(name: str):
    """Decorator: `@ptdsl.rewards.register("accuracy")` binds a verifier name."""
    def bind(fn: Verifier) -> Verifier:
        _REGISTRY[name] = fn
        return fn
    return bind


def load_function(ref: str) -> tuple[str | None, Verifier]:
    """`[name=]module:function` → (name or None, the function), imported on request."""
    name, _, target = ref.rpartition("=") if "=" in ref else (None, None, ref)
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise RuntimeSetupError(f"--reward-fn takes `module:function` or `name=module:function`, got `{ref}`")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise RuntimeSetupError(f"cannot load reward function `{target}`: {exc}") from None
    if not callable(fn):
        raise RuntimeSetupError(f"`{target}` is not callable")
    return name, fn


class RewardSources:
    """Resolves each reward of a plan to callables and evaluates weighted sums."""

    def __init__(self, plan, reward_fns: list[str] = (), embedded_default: bool = False, device="cpu"):
        self.plan, self.device = plan, device
        given = [load_function(r) for r in reward_fns]
        verifier_names = sorted({t.name for terms in plan.rewards.values() for t in terms if t.kind == "verifier"})
        self.verifiers: dict[str, Verifier] = {}
        for name, fn in given:
            if name is None:  # unnamed: binds to the only verifier, or by the function's own name
                name = verifier_names[0] if len(verifier_names) == 1 else fn.__name__
            self.verifiers[name] = fn
        for name in verifier_names:
            if name in self.verifiers:
                continue
            if name in _REGISTRY:
                self.verifiers[name] = _REGISTRY[name]
            elif embedded_default and name in BUILTIN:
                self.verifiers[name] = BUILTIN[name]
            else:
                raise RuntimeSetupError(
                    f"the method needs verifier `{name}`, and none is registered",
                    help=f"pass `--reward-fn {name}=module:function`, or register one from Python with "
                         f"`@ptdsl.rewards.register(\"{name}\")`")
        self.models = {t.name: None for terms in plan.rewards.values() for t in terms if t.kind == "reward_model"}

    def _reward_model(self, path: str):
        if self.models.get(path) is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
            try:
                tok = AutoTokenizer.from_pretrained(path)
                model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).to(self.device)
            except OSError as exc:
                raise RuntimeSetupError(f"cannot load reward model `{path}`: {exc}") from None
            model.eval()
            self.models[path] = (tok, model)
        return self.models[path]

    def _score_with_model(self, path, prompts, completions):
        import torch
        tok, model = self._reward_model(path)
        texts = [p + c for p, c in zip(prompts, completions)]
        enc = tok(texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
        with torch.inference_mode():
            return model(**enc).logits[:, 0].float().tolist()

    def evaluate(self, name: str, prompts: list[str], completions: list[str], columns: dict) -> list[float]:
        """The weighted sum of a reward's sources for each completion."""
        total = [0.0] * len(completions)
        for term in self.plan.rewards[name]:
            if term.kind == "verifier":
                values = self.verifiers[term.name](prompts=prompts, completions=completions, **columns)
            else:
                values = self._score_with_model(term.name, prompts, completions)
            values = list(values)
            if len(values) != len(completions):
                raise RuntimeSetupError(f"reward `{term.name}` returned {len(values)} values for "
                                        f"{len(completions)} completions")
            total = [t + term.weight * (float("nan") if v is None else float(v)) for t, v in zip(total, values)]
        return total
