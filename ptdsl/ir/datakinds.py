"""Data kinds: which sequence sets and per-example fields each kind of dataset
provides. Methods name a kind with `data KIND`; the runtime reads the same table
to know which dataset columns a method needs (TRL's dataset formats)."""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.syntax.features import STABLE_01, Feature


@dataclass(frozen=True)
class DataKind:
    name: str
    sets: tuple[str, ...]            # sequence sets, all on the `examples` row space
    fields: tuple[tuple[str, str], ...]  # per-example fields: (name, dtype)
    columns: tuple[str, ...]         # dataset columns (TRL format)
    doc: str
    set_columns: tuple[tuple[str, str], ...] = ()  # set → column, where they differ
    list_rows: str | None = None     # a row space of lists: each example has 2 to `size` rows of it (ragged)
    options: tuple[tuple[str, int], ...] = ()       # options and their defaults, e.g. size = 4
    token_fields: tuple[tuple[str, str, str], ...] = ()  # per-token fields: (name, set, dtype)
    feature: Feature | None = None   # level and version (syntax/features.py); every kind states one

    def column(self, set_name: str) -> str:
        return dict(self.set_columns).get(set_name, set_name)


DATA_KINDS: dict[str, DataKind] = {k.name: k for k in [
    DataKind("sft", ("completion",), (), ("prompt", "completion"),
             "prompt-completion (or language-modelling text) pairs", feature=STABLE_01),
    DataKind("preference", ("chosen", "rejected"), (), ("prompt", "chosen", "rejected"),
             "a prompt with a preferred and a dispreferred completion", feature=STABLE_01),
    DataKind("unpaired", ("completion",), (("label", "bool"),), ("prompt", "completion", "label"),
             "a prompt and one completion labelled desirable (true) or undesirable (false)", feature=STABLE_01),
    DataKind("prompts", (), (), ("prompt",), "prompts only; completions come from rollouts", feature=STABLE_01),
    DataKind("ranked", ("responses",), (("rating", "real"),), ("prompt", "responses", "ratings"),
             "a prompt with a ranked list of responses, best first, and optional ratings (listwise "
             "methods); each list holds 2 to K responses, K = `data ranked(size = K)`", list_rows="responses",
             options=(("size", 4),), feature=STABLE_01),
    DataKind("triple", ("chosen", "rejected", "gold"), (), ("prompt", "chosen", "rejected", "reference"),
             "preference plus a gold response (TPO); the column `reference` is the set `gold`",
             (("gold", "reference"),), feature=STABLE_01),
    DataKind("stepwise", ("steps",), (), ("prompt", "completions", "labels"),
             "a prompt and a solution as a list of steps, each labelled correct or not (process "
             "reward models); the steps are joined, each followed by the step separator, and "
             "`mask(steps)` marks the last token of each step, where its label `step_label` sits",
             (("steps", "completions"),), token_fields=(("step_label", "steps", "bool"),), feature=STABLE_01),
]}

EXAMPLES = "examples"  # the row space of every dataset set
