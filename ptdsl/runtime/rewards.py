"""Reward sources: the verifier registry, `--reward-fn module:function`, reward
models, and weighted sums of them.

A verifier has TRL's reward-function signature: `fn(prompts, completions,
**columns) -> list[float]`, where `columns` are the dataset's other columns for
the same rows (e.g. `answer`). Spec text only names a verifier; the Python that
runs is registered by the user (`ptdsl.rewards.register`) or named explicitly on
the command line — never found by guessing. Each --reward-fn must bind a verifier
the spec uses, once; each verifier the loss needs must be bound.

A verifier may return None (or NaN) for a completion it cannot score. As in TRL
(whose weighted sum over reward functions is a nansum), that term then adds
nothing to the completion's reward — a completion no source scores gets 0. Such
values are counted per verifier: the first one is reported when it happens, the
totals at the end of the run. An infinite score is an error.

Each source's scores are also kept until the training loop drains them into the step's
metrics as `rewards/NAME/mean` (TRL's name: NAME is the verifier, or the last part of a
reward model's path), so the terms of a weighted reward can be watched one by one.

This module does not import torch: `ptdsl check` reads the registry's names.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable

from ptdsl.diagnostics import Diagnostic, Label, did_you_mean
from ptdsl.runtime import calculator, embedded
from ptdsl.runtime import reward_fns as user_fns
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.syntax import ast

Verifier = Callable[..., list]
_REGISTRY: dict[str, Verifier] = {}
# the embedded default's verifiers (bound only when it runs): its arithmetic task's, and the tool task's
BUILTIN = {"accuracy": embedded.accuracy, "digits": embedded.digits, "final_answer": calculator.answer_reward}


def register(name: str):
    """Decorator: `@ptdsl.rewards.register("accuracy")` binds a verifier name."""
    def bind(fn: Verifier) -> Verifier:
        _REGISTRY[name] = fn
        return fn
    return bind


def known_names() -> list[str]:
    """Verifier names something answers to without --reward-fn: built-in and registered."""
    return sorted(set(BUILTIN) | set(_REGISTRY))


def verifier_uses(definition) -> list[tuple[str, object]]:
    """(name, span of the `verifier("name")` call) for every verifier a method's rewards use."""
    out = []

    def walk(e):
        if isinstance(e, ast.Call):
            if e.func == "verifier" and len(e.args) == 1 and isinstance(e.args[0], ast.String):
                out.append((e.args[0].value, e.span))
            for a in e.args:
                walk(a)
        elif isinstance(e, ast.Binary):
            walk(e.left)
            walk(e.right)
        elif isinstance(e, ast.Unary):
            walk(e.operand)
    for decl in definition.rewards.values():
        walk(decl.expr)
    return out


def unknown_verifiers(definition) -> list[Diagnostic]:
    """W0201 for each verifier name no built-in or registered verifier has (a typo, or one
    the user will bind with --reward-fn: only `train` can tell, so `check` warns)."""
    known = known_names()
    out = []
    for name, span in verifier_uses(definition):
        if name in known:
            continue
        bind = f"`ptdsl train` needs `--reward-fn {name}=module:function` (or ptdsl.rewards.register)"
        hint = did_you_mean(name, known)
        out.append(Diagnostic("warning", "W0201", f"no built-in or registered verifier is named `{name}`",
                              (Label(span, "unknown verifier"),), help=f"{hint} Else {bind}" if hint else bind))
    return out


def as_trl_passes(prompts: list[str], completions: list[str], chats: list | None,
                  completion_chats: list | None = None) -> tuple[list, list]:
    """Prompts and completions as TRL's GRPOTrainer gives them to reward functions: for a
    conversational row the prompt's messages and `[{"role": "assistant", "content": text}]`
    (an episode's: its messages after the prompt, `completion_chats`)."""
    if chats is None:
        return prompts, completions
    if completion_chats is None:
        completion_chats = [None] * len(completions)
    return ([p if m is None else m for p, m in zip(prompts, chats)],
            [cm if cm is not None else c if m is None else [{"role": "assistant", "content": c}]
             for c, m, cm in zip(completions, chats, completion_chats)])


class RewardSources:
    """Resolves each reward of a plan to callables and evaluates weighted sums.

    `uses` ((name, span) from verifier_uses) locates verifiers in the spec for messages and
    lets --reward-fn bind verifiers the loss does not read."""

    def __init__(self, plan, reward_fns: list[str] = (), embedded_default: bool = False, device="cpu",
                 uses=(), log=print):
        self.plan, self.device, self.log = plan, device, log
        needed = sorted({t.name for terms in plan.rewards.values() for t in terms if t.kind == "verifier"})
        self.where, self.labels = {}, {}  # verifier → first span in the spec; → how messages name it
        for name, span in uses:
            self.where.setdefault(name, span)
        self.verifiers = self._bind(list(reward_fns), needed, sorted(set(needed) | set(self.where)),
                                    embedded_default)
        # the dataset columns the bound verifiers read: every row must have them
        self.columns = tuple(sorted({c for n in needed for c in user_fns.columns_read(self.verifiers[n])}))
        self.unscored: Counter = Counter()
        self.scored: dict[str, list[float]] = {}  # metric name → scores since the last drain_means()
        self.models = {t.name: None for terms in plan.rewards.values() for t in terms if t.kind == "reward_model"}

    def _bind(self, refs, needed, names, embedded_default) -> dict[str, Verifier]:
        listed = f"its verifiers: {', '.join(f'`{n}`' for n in names)}" if names else "it uses no verifier"
        bound, origin = {}, {}
        for ref in refs:
            name, fn, target = user_fns.load(ref)
            if name is None:  # unnamed: binds to the only verifier, or by the function's own name
                name = needed[0] if len(needed) == 1 else fn.__name__
            if name not in names:
                raise RuntimeSetupError(f"--reward-fn {ref}: the method has no verifier `{name}` ({listed})",
                                        help=did_you_mean(name, names) or "bind by name: --reward-fn NAME=module:fn")
            if name in bound:
                raise RuntimeSetupError(f"--reward-fn binds verifier `{name}` twice: `{origin[name]}` and `{ref}`",
                                        help=f"give one --reward-fn per verifier ({listed})")
            bound[name], origin[name] = fn, ref
            self.labels[name] = f"verifier `{name}` ({target})"
        for name in needed:
            if name not in bound:
                bound[name] = self._registered(name, embedded_default)
                self.labels[name] = f"verifier `{name}` ({bound[name].__module__}.{bound[name].__qualname__})"
        for name, fn in bound.items():
            user_fns.check(fn, self.labels[name])
        return bound

    def _registered(self, name: str, embedded_default: bool) -> Verifier:
        if name in _REGISTRY:
            return _REGISTRY[name]
        if embedded_default and name in BUILTIN:
            return BUILTIN[name]
        at = f" at {self.where[name]}" if name in self.where else ""
        hint = did_you_mean(name, known_names())
        raise RuntimeSetupError(
            f"the method needs verifier `{name}`{at}, and no --reward-fn binds it and none is registered",
            help=(f"{hint} " if hint else "") + f"pass `--reward-fn {name}=module:function`, or register one "
                 f"from Python with `@ptdsl.rewards.register(\"{name}\")`")

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

    def _score_with_model(self, path, prompts, completions, chats=None):
        """Text rows: prompt + completion. Conversational rows, as TRL scores them: the prompt's
        messages and the answer rendered by the reward model's own chat template, tokenised
        without adding special tokens (the template wrote them)."""
        import torch
        tok, model = self._reward_model(path)
        chats = chats or [None] * len(prompts)
        ids = [tok(p + c, truncation=True)["input_ids"] if m is None else
               tok(self._rendered(path, tok, m, c), add_special_tokens=False, truncation=True)["input_ids"]
               for p, c, m in zip(prompts, completions, chats)]
        enc = tok.pad({"input_ids": ids}, padding_side="right", return_tensors="pt").to(self.device)  # as TRL
        with torch.inference_mode():
            return model(**enc).logits[:, 0].float().tolist()

    @staticmethod
    def _rendered(path: str, tok, messages: list, completion: str) -> str:
        if getattr(tok, "chat_template", None) is None:
            raise RuntimeSetupError(f"reward model `{path}`: its tokenizer has no chat template to render the "
                                    "conversational rows with", help="give the reward model a tokenizer with a "
                                    "chat template (TRL renders conversations with it too), or use text data")
        return tok.apply_chat_template(messages + [{"role": "assistant", "content": completion}], tokenize=False)

    def evaluate(self, name: str, prompts: list[str], completions: list[str], columns: dict,
                 chats: list | None = None, rows: list[str] | None = None, completion_chats: list | None = None,
                 env_rewards: list | None = None) -> list[float]:
        """The weighted sum of a reward's sources for each completion (unscored terms skipped).
        `chats`: each completion's prompt messages where its row is conversational (else None);
        verifiers then get messages, as TRL passes them. `rows` names the rows, for errors.
        Episodes: `completion_chats` (each one's messages after the prompt) and `env_rewards`
        (each one's environment reward, None where it gave none)."""
        total = [0.0] * len(completions)
        for term in self.plan.rewards[name]:
            if term.kind == "verifier":
                p, c = as_trl_passes(prompts, completions, chats, completion_chats)
                values = user_fns.call(self.verifiers[term.name], self.labels[term.name], p, c, columns, rows)
            elif term.kind == "environment":  # the compiler checked the set is an episode of this environment
                values = list(env_rewards)
            else:
                values = self._score_with_model(term.name, prompts, completions, chats)
            missing = [i for i, v in enumerate(values) if v is None or math.isnan(v)]
            if missing:
                self._unscored(term, name, len(missing), len(values))
            self._keep(term, values)
            total = [t if v is None or math.isnan(v) else t + term.weight * v for t, v in zip(total, values)]
        return total

    def _keep(self, term, values: list) -> None:
        label = term.name if term.kind in ("verifier", "environment") else term.name.rstrip("/").rsplit("/", 1)[-1]
        kept = self.scored.setdefault(f"rewards/{label}/mean", [])
        kept.extend(float(v) for v in values if v is not None and not math.isnan(v))

    def drain_means(self) -> dict[str, float]:
        """Each source's mean score over the completions scored since the last call (a source
        that scored none is left out, as TRL's nanmean would give NaN), and forget them."""
        means = {k: sum(v) / len(v) for k, v in self.scored.items() if v}
        self.scored = {}
        return means

    def _unscored(self, term, reward: str, k: int, n: int) -> None:
        if not self.unscored[term.name]:
            self.log(f"warning: {term.kind} `{term.name}` gave no score (None or NaN) for {k} of {n} completions; "
                     f"it adds nothing to their reward `{reward}` (TRL's convention); later ones are counted "
                     f"and reported at the end")
        self.unscored[term.name] += k

    def report(self) -> None:
        for name, k in sorted(self.unscored.items()):
            self.log(f"{name}: no score (None or NaN) for {k} completion{'s' if k != 1 else ''} in this run")

