"""What a training graph is: how a compiled method's experience is made and used, as data
shared by the text, DOT and Mermaid views (inspect/training_render.py), as GraphView is
for the loss graph. inspect/training_build.py reads it off the plan.

It is a pipeline of stages in the order the trainer runs them, each in one phase:

    setup       once, before training        precompute
    experience  as each experience is made   sources · sample · score · pick · record
    step        every optimizer step         reuse · forward · time · draws · state · optimize · sync

with the models that run in each stage (`Run`: which network, on which sets, with or
without gradient), and the models themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

PHASES = {"setup": "once, before training", "experience": "as each experience is made",
          "step": "every optimizer step"}


@dataclass(frozen=True)
class Line:
    text: str
    when: str = ""       # e.g. "per experience", "per micro-batch, with gradient"


@dataclass(frozen=True)
class Run:
    """A network's forward in a stage: `model` on `sets`, giving `outputs`."""
    model: str           # the network: value heads and `old` run on their model's body
    sets: tuple[str, ...]
    outputs: tuple[str, ...]
    grad: bool           # the loss's gradient flows back through it


@dataclass(frozen=True)
class Stage:
    name: str            # sources | precompute | sample | score | pick | record | reuse | forward | …
    phase: str           # a key of PHASES
    lines: tuple[Line, ...]
    runs: tuple[Run, ...] = ()


@dataclass(frozen=True)
class Model:
    name: str
    source: str          # as the spec declares it: "policy", "frozen(policy)", "model(\"gpt2\")"
    trained: bool
    heads: tuple[str, ...] = ()  # value heads on this network, as declared: "value = value_head(policy)"


@dataclass(frozen=True)
class TrainingGraph:
    method: str
    models: tuple[Model, ...]
    stages: tuple[Stage, ...]
    steps_per_experience: str   # the reuse loop's count: "4", "2 × micro_batches ÷ --grad-accum"

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)
