"""Data: bring TRL's formats to one shape and tokenise with prompt/completion masks.
Rows arrive read (datafiles.py) and validated (validate.py): every value has its
column's type, so nothing here turns a null or a list into text.

Accepted (TRL's dataset formats): standard and conversational (`messages` or lists
of `{role, content}` rendered with the tokenizer's chat template), language
modelling `{text}` for SFT, prompt-completion, preference with explicit or
implicit prompt, unpaired preference (and preference data unpaired for unpaired
methods), prompt-only. Rows whose completion is empty or whose prompt leaves no
room within `max_length` are skipped and counted (reported before training).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ptdsl.ir.datakinds import DATA_KINDS
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.schema import shared_start


@dataclass
class Example:
    index: int
    prompt_text: str
    prompt_ids: list[int]
    completions: dict[str, list[int]]            # dataset set → completion ids (with EOS)
    fields: dict[str, float] = field(default_factory=dict)
    columns: dict = field(default_factory=dict)  # other columns, for verifiers
    token_masks: dict[str, list[bool]] = field(default_factory=dict)  # set → which tokens it holds, where
    #                                             not all of the completion (stepwise: the steps' last tokens)


@dataclass
class Skipped:
    empty_completion: int = 0
    prompt_too_long: int = 0
    list_too_short: int = 0    # a ranked list of fewer than 2 responses ranks nothing
    list_too_long: int = 0     # more responses than the method's `size`, K_max
    no_step_within_max_length: int = 0

    def __str__(self) -> str:
        parts = [f"{n} {what}" for what, n in (("with an empty completion", self.empty_completion),
                                                ("whose prompt leaves no room within max_length",
                                                 self.prompt_too_long),
                                                ("whose list has fewer than 2 responses", self.list_too_short),
                                                ("whose list has more responses than the method's `size`",
                                                 self.list_too_long),
                                                ("whose first step does not end within max_length",
                                                 self.no_step_within_max_length)) if n]
        return "skipped rows: " + ", ".join(parts) if parts else ""


# ---- formats → one shape --------------------------------------------------------

def _is_chat(value) -> bool:
    return isinstance(value, list)  # validated rows: a list here is a conversation (schema.py)


def _render(tok, messages, generation_prompt: bool) -> str:
    if getattr(tok, "chat_template", None) is None:
        # no template: a plain transcript, so conversational data still trains
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant: " if generation_prompt else "")
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # noqa: BLE001 - templates reject conversations (e.g. roles that do not alternate)
        raise RuntimeSetupError(f"the tokenizer's chat template cannot render the conversation: "
                                f"{type(exc).__name__}: {exc}") from None


def _content(value) -> str:
    """A completion's text: the assistant turns' content (a completion holds only those)."""
    return "".join(m["content"] for m in value) if _is_chat(value) else value


def normalise(row: dict, kind: str, tok) -> list[dict]:
    """A validated row (validate.py) → rows with `prompt` (text) and the kind's completion texts."""
    row = dict(row)
    if kind == "stepwise":  # steps stay a list: tokenize joins them
        if _is_chat(row.get("prompt")):
            row["prompt"] = _render(tok, row["prompt"], True)
        return [row]
    if DATA_KINDS[kind].list_rows:  # a ranked list, best first; ratings default to the ranks
        if _is_chat(row.get("prompt")):
            row["prompt"] = _render(tok, row["prompt"], True)
        responses = [_content(r) for r in row.get("responses", [])]
        row["responses"] = responses
        row.setdefault("ratings", [float(len(responses) - 1 - i) for i in range(len(responses))])
        return [row]
    if kind == "sft" and "messages" in row:
        msgs = row.pop("messages")
        row["prompt"] = _render(tok, msgs[:-1], True)
        row["completion"] = msgs[-1]["content"]
    elif kind == "sft" and "text" in row and "completion" not in row:
        row = {**row, "prompt": row.get("prompt", ""), "completion": row.pop("text")}
    kind_ = DATA_KINDS[kind]
    paired = kind == "unpaired" and "chosen" in row and "completion" not in row
    sets = ("chosen", "rejected") if paired else tuple(kind_.column(s) for s in kind_.sets)
    if "prompt" not in row and len(sets) >= 2:  # implicit prompt: the sets' shared start
        k = shared_start([row[s] for s in sets])
        row["prompt"] = row[sets[0]][:k]
        row.update({s: row[s][k:] for s in sets})
    if _is_chat(row.get("prompt")):
        row["prompt"] = _render(tok, row["prompt"], True)
    row.update({s: _content(row[s]) for s in sets})
    if paired:  # unpair preference data: the chosen completion desirable, the rejected one not
        base = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
        return [{**base, "completion": row["chosen"], "label": True},
                {**base, "completion": row["rejected"], "label": False}]
    return [row]


# ---- sources ------------------------------------------------------------------------

def only_source(plan):
    """The plan's first data source (ir/sources.Source); a plan made without sources has one,
    `examples`, of its data kind."""
    if plan.sources:
        return plan.sources[0]
    from ptdsl.ir.sources import Source
    return Source("examples", plan.data, ())


def renamed(examples: list[Example], source) -> list[Example]:
    """Examples with the kind's sets and fields under the spec's names (`sft(completion = retained)`)."""
    sets = {k: s for s, k in source.sets if s != k}
    fields = {k: f for f, k in source.fields if f != k}
    if not sets and not fields:
        return examples
    for e in examples:
        e.completions = {sets.get(k, k): v for k, v in e.completions.items()}
        e.token_masks = {sets.get(k, k): v for k, v in e.token_masks.items()}
        e.fields = {fields.get(k, k): v for k, v in e.fields.items()}
    return examples


# ---- tokenisation -----------------------------------------------------------------

def tokenize(rows: list[dict], tok, kind: str, fields: tuple[str, ...], max_length: int,
             max_prompt_length: int | None, list_size: int | None = None,
             step_separator: str = "\n", limit: int | None = None) -> tuple[list[Example], Skipped]:
    """Examples of the rows that fit, in order; with `limit`, the first `limit` of them, and
    the rows after the one that completes them are not tokenised at all (--max-examples on a
    large dataset costs what it keeps)."""
    kind_ = DATA_KINDS[kind]
    sets = kind_.sets
    skipped = Skipped()
    out: list[Example] = []
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    for i, row in enumerate(rows):
        if limit is not None and len(out) >= limit:
            break
        prompt = row.get("prompt", "")
        p_ids = bos + tok(prompt, add_special_tokens=False)["input_ids"]
        if max_prompt_length is not None:
            p_ids = p_ids[-max_prompt_length:]
        if len(p_ids) >= max_length:
            skipped.prompt_too_long += 1
            continue
        room = max_length - len(p_ids)
        if kind_.list_rows:  # 2 to `size` responses (validation matched the ratings to them)
            if len(row["responses"]) < 2:
                skipped.list_too_short += 1
                continue
            if list_size is not None and len(row["responses"]) > list_size:
                skipped.list_too_long += 1
                continue
            texts = row["responses"]
            if not all(t.strip() for t in texts):
                skipped.empty_completion += 1
                continue
            comps = {sets[0]: [_ids(tok, t, room) for t in texts]}
            values = {"rating": [float(v) for v in row["ratings"]]}
            extra = {c: v for c, v in row.items() if c not in ("prompt", "responses", "ratings")}
            out.append(Example(i, prompt, p_ids, comps, values, extra))
            continue
        if kind_.token_fields:
            ex = _stepwise(i, row, prompt, p_ids, room, tok, step_separator, skipped)
            if ex is not None:
                out.append(ex)
            continue
        texts = [row[kind_.column(s)] for s in sets]
        if not all(t.strip() for t in texts):
            skipped.empty_completion += 1
            continue
        comps = {s: _ids(tok, t, room) for s, t in zip(sets, texts)}
        extra = {c: v for c, v in row.items() if c not in ("prompt",) + tuple(kind_.column(s) for s in sets)}
        values = {f: (bool(row[f]) if f == "label" else float(row[f])) for f in fields}
        out.append(Example(i, prompt, p_ids, comps, values, extra))
    return out, skipped


def _stepwise(i, row, prompt, p_ids, room, tok, separator, skipped) -> Example | None:
    """A solution's steps as one completion, as TRL's PRMTrainer lays them out: each step
    tokenised alone with the separator appended, its label on its last token; no EOS.
    Truncation keeps the steps whose last token fits within max_length."""
    if not row["completions"]:  # (an empty step still carries its label, on the separator)
        skipped.empty_completion += 1
        return None
    sep = tok(separator, add_special_tokens=False)["input_ids"]
    ids, ends, labels = [], [], []
    for step, label in zip(row["completions"], row["labels"]):
        ids += tok(step, add_special_tokens=False)["input_ids"] + sep
        ends.append(len(ids) - 1)
        labels.append(bool(label))
    ids = ids[:room]
    kept = [(e, lab) for e, lab in zip(ends, labels) if e < len(ids)]
    if not kept:
        skipped.no_step_within_max_length += 1
        return None
    at = dict(kept)
    mask = [t in at for t in range(len(ids))]
    token_labels = [at.get(t, False) for t in range(len(ids))]
    extra = {c: v for c, v in row.items() if c not in ("prompt", "completions", "labels")}
    return Example(i, prompt, p_ids, {"steps": ids}, {"step_label": token_labels}, extra, {"steps": mask})


def _ids(tok, text, room: int) -> list[int]:
    """Completion ids with EOS, truncated to the room the prompt leaves."""
    return (tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:room]
