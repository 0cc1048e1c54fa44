"""What a data kind's rows must hold: the columns of each of its formats and the type
of each column, as checkers. validate.py applies them to every row.

A kind's own format is derived from the data kind table (ir/datakinds.py): `prompt`,
then one column per sequence set (text or a conversation; a list of them for a list
row space; a list of step texts for a set that carries per-token fields), then the
kind's remaining columns, which hold its fields in order (`bool` a label, `real` a
number; one per list element or per step where the kind has lists or steps). TRL's
other formats for some kinds (language-modelling text and `messages` for SFT, paired
preference data for unpaired methods) are listed in OTHER_FORMATS.

Types, decided here once:
- text is a string; a conversation is a non-empty list of messages, each an object
  with `role` in system/user/assistant/tool (TRL's roles and what chat templates
  render) and string `content`. A prompt conversation ends with a user or tool turn
  (TRL adds the generation prompt after those; a final assistant turn would be
  continued, which ptdsl does not do), a completion holds only assistant turns (its
  text is what the model learns to say), and SFT `messages` end with an assistant turn.
- a label is a boolean or the number 0 or 1 (CSV: true/false/1/0 in any case); a
  string such as "false" or "no" is an error, not a truthy value.
- a number is an int or float, not a boolean, and finite: NaN or infinity would only
  surface later as a non-finite loss, far from the row that caused it.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from ptdsl.ir.datakinds import DataKind

ROLES = ("system", "user", "assistant", "tool")
PROMPT_ENDS = ("user", "tool")


class Invalid(Exception):
    """A value that does not fit its column; the message says what was expected."""


Check = Callable[[object, bool], object]  # (value, textual) → the value as the runtime uses it


@dataclass(frozen=True)
class Column:
    name: str
    check: Check
    optional: bool = False          # may be missing or null (then normalise supplies a default)
    length_of: str | None = None    # a list with one element per element of that column


@dataclass(frozen=True)
class Format:
    name: str
    columns: tuple[Column, ...]
    implicit_prompt: tuple[str, ...] = ()  # no `prompt` column: the common start of these is the prompt

    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def show(value, limit: int = 60) -> str:
    """A value as the file spells it (JSON), shortened, with its JSON type."""
    import json
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    kind = {str: "a string", bool: "a boolean", list: "a list", dict: "an object"}.get(type(value), "a number")
    return f"{text} ({kind})" if isinstance(value, (str, bool, int, float, list, dict)) else text


# ---- value checkers -----------------------------------------------------------------

def text(value, textual: bool) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be text (a string), got {show(value)}")
    return value


def _conversation(value, ends: tuple[str, ...] | None = None, only: tuple[str, ...] = ROLES) -> list:
    """A non-empty list of messages with valid roles and string content."""
    if not value:
        raise Invalid("is an empty list of messages")
    for i, m in enumerate(value, 1):
        if not isinstance(m, dict):
            raise Invalid(f"message {i} must be an object with `role` and `content`, got {show(m)}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise Invalid(f"message {i} has role {show(role)}; a role is one of {', '.join(ROLES)}")
        if role not in only:
            raise Invalid(f"message {i} is {_turn(role)}; a completion holds only assistant turns "
                          "(earlier turns belong in the prompt)")
        if not isinstance(content, str):
            raise Invalid(f"message {i} has no text `content`" + (f", got {show(content)}" if content is not None
                                                                  else ""))
    if ends is not None and value[-1]["role"] not in ends:
        raise Invalid(f"ends with {_turn(value[-1]['role'])}; it must end with {_turn(*ends)}")
    return value


def _turn(*roles: str) -> str:
    """`a user or tool turn`, `an assistant turn`."""
    return ("an " if roles[0] == "assistant" else "a ") + " or ".join(roles) + " turn"


def _text_or(kind: str, conversation: Callable[[list], list]) -> Check:
    def check(value, textual: bool):
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return conversation(value)
        raise Invalid(f"must be text or a list of messages ({kind}), got {show(value)}")
    return check


prompt = _text_or("a prompt", lambda v: _conversation(v, ends=PROMPT_ENDS))
completion = _text_or("a completion", lambda v: _conversation(v, only=("assistant",)))
dialogue = _text_or("a conversation", lambda v: _conversation(v, ends=("assistant",)))


def messages(value, textual: bool) -> list:
    """SFT `messages`: the last turn (an assistant's) is the completion, the rest the prompt."""
    if not isinstance(value, list):
        raise Invalid(f"must be a list of messages, got {show(value)}")
    _conversation(value, ends=("assistant",))
    if len(value) > 1 and value[-2]["role"] not in PROMPT_ENDS:
        raise Invalid(f"has {_turn(value[-2]['role'])} before its last assistant turn; the turns before "
                      f"the completion are its prompt, which must end with {_turn(*PROMPT_ENDS)}")
    return value


def label(value, textual: bool) -> bool:
    if textual and isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "1.0", "0.0"):
        return value.strip().lower() in ("true", "1", "1.0")
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return bool(value)
    raise Invalid(f"must be true/false or 1/0, got {show(value)}")


def real(value, textual: bool) -> float:
    if textual and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise Invalid(f"must be a number, got {show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"must be a number, got {show(value)}")
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise Invalid(f"must be a finite number, got {show(value)}")
    return out


def present(value, textual: bool):
    return value


def list_of(item: Check, what: str) -> Check:
    def check(value, textual: bool) -> list:
        if not isinstance(value, list):
            hint = " (a CSV cell holds text, not a list: give this dataset as JSON Lines or Parquet)" \
                if textual else ""
            raise Invalid(f"must be a list of {what}, got {show(value)}{hint}")
        out = []
        for i, v in enumerate(value, 1):
            if v is None:
                raise Invalid(f"element {i} is null; it must be {what[:-1]}")
            try:
                out.append(item(v, textual))
            except Invalid as exc:
                raise Invalid(f"element {i} {exc}") from None
        return out
    return check


# ---- formats ------------------------------------------------------------------------

VALUE_CHECKS = {"bool": (label, "labels"), "real": (real, "numbers")}


def kind_format(kind: DataKind) -> Format:
    """The kind's own format (TRL's column names), derived from the data kind table."""
    set_columns = {kind.column(s): s for s in kind.sets}
    step_sets = {s for _, s, _ in kind.token_fields}
    cols = [Column("prompt", prompt)]
    for col, s in set_columns.items():
        if s in step_sets:
            cols.append(Column(col, list_of(text, "step texts")))
        elif s == kind.list_rows:
            cols.append(Column(col, list_of(completion, "completions")))
        else:
            cols.append(Column(col, completion))
    cols += _value_columns(kind, set_columns)
    return Format(kind.name, tuple(cols))


def _value_columns(kind: DataKind, set_columns: dict) -> list[Column]:
    """The kind's columns after prompt and sets hold its fields, then its per-token fields, in order.
    A list kind's field has one value per list element and may be left out (normalise fills in the
    ranks); a per-token field has one value per step."""
    rest = [c for c in kind.columns if c != "prompt" and c not in set_columns]
    values = [(d, None) for _, d in kind.fields] + [(d, s) for _, s, d in kind.token_fields]
    if len(rest) != len(values):
        raise ValueError(f"data kind `{kind.name}`: columns {rest} do not match its fields {values}")
    out = []
    for col, (dtype, step_set) in zip(rest, values):
        check, plural = VALUE_CHECKS[dtype]
        if step_set is not None:
            out.append(Column(col, list_of(check, plural), length_of=kind.column(step_set)))
        elif kind.list_rows:
            out.append(Column(col, list_of(check, plural), optional=True, length_of=kind.column(kind.list_rows)))
        else:
            out.append(Column(col, check))
    return out


def shared_start(values: list) -> int:
    """How much the values share at their start: characters of texts, messages of conversations
    (a conversation keeps at least its last message). The implicit prompt is that start."""
    if all(isinstance(v, str) for v in values):
        return len(os.path.commonprefix(values))
    k, n = 0, min(len(v) for v in values) - 1
    while k < n and all(v[k] == values[0][k] for v in values[1:]):
        k += 1
    return k


# TRL's other formats, by data kind: (the column that selects it, a column that rules it out, the format)
OTHER_FORMATS: dict[str, list[tuple[str, str | None, Format]]] = {
    "sft": [("messages", None, Format("conversational language modelling", (Column("messages", messages),))),
            ("text", "completion", Format("language modelling", (Column("text", text),
                                                                  Column("prompt", prompt, optional=True))))],
    "unpaired": [("chosen", "completion",
                  Format("preference (each pair gives a desirable and an undesirable row)",
                         (Column("prompt", prompt), Column("chosen", completion), Column("rejected", completion))))],
}


def choose_format(kind: DataKind, present_columns: set[str]) -> Format:
    """The format of a whole dataset, from the columns its rows fill (as TRL decides per dataset)."""
    fmt = kind_format(kind)
    for selects, unless, other in OTHER_FORMATS.get(kind.name, ()):
        if selects in present_columns and unless not in present_columns:
            fmt = other
            break
    sets = [c.name for c in fmt.columns if c.check is completion]
    if "prompt" not in present_columns and len(sets) >= 2:  # implicit prompt: TRL's preference format
        # each set holds a whole conversation; their common start becomes the prompt (normalise)
        fmt = Format(fmt.name + ", implicit prompt",
                     tuple(replace(c, check=dialogue) if c.name in sets else c
                           for c in fmt.columns if c.name != "prompt"), tuple(sets))
    return fmt
