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
from ptdsl.runtime.chat import Chat, is_chat, render
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
    prompt_messages: list | None = None          # a conversational prompt's messages (reward functions get them)
    where: str = ""                              # its dataset row as messages name it: "row 3 (line 3) of d.jsonl"


@dataclass
class Skipped:
    empty_completion: int = 0
    prompt_too_long: int = 0
    list_too_short: int = 0    # a ranked list of fewer than 2 responses ranks nothing
    list_too_long: int = 0     # more responses than the method's `size`, K_max
    no_step_within_max_length: int = 0
    empty_prompt: int = 0      # no prompt tokens, and completions that do not share a first token

    def __str__(self) -> str:
        parts = [f"{n} {what}" for what, n in (("with an empty completion", self.empty_completion),
                                                ("whose prompt leaves no room within max_length",
                                                 self.prompt_too_long),
                                                ("whose list has fewer than 2 responses", self.list_too_short),
                                                ("whose list has more responses than the method's `size`",
                                                 self.list_too_long),
                                                ("whose first step does not end within max_length",
                                                 self.no_step_within_max_length),
                                                ("with no prompt tokens", self.empty_prompt)) if n]
        return "skipped rows: " + ", ".join(parts) if parts else ""


# ---- formats → one shape --------------------------------------------------------

def _content(value) -> str:
    """A completion's text: the assistant turns' content (a completion holds only those)."""
    return "".join(m["content"] for m in value) if is_chat(value) else value


def _implicit_prompt(values: list) -> int:
    """Where the prompt the sets share ends. A space before the point where texts differ goes
    to the completions (" 7", not "7"), as TRL's extract_prompt does: that is where a
    tokenizer puts it, inside the completion's first word."""
    k = shared_start(values)
    if all(isinstance(v, str) for v in values) and 0 < k < min(map(len, values)) and values[0][k - 1] == " ":
        k -= 1
    return k


def _chat_sets(prompt, tok, values: dict) -> dict:
    """A conversational prompt's completions: each rendered after the prompt (the template's
    end of turn included); a text completion stays text (tokenize appends EOS)."""
    return {s: Chat(render(tok, prompt + v, False), v) if is_chat(v) else v for s, v in values.items()}


def normalise(row: dict, kind: str, tok) -> list[dict]:
    """A validated row (validate.py) → rows with `prompt` (text, or a Chat of the prompt's
    messages) and the kind's completions (text, or a Chat of the whole conversation)."""
    row = dict(row)
    if kind == "sft" and "messages" in row:  # the last (assistant) turn is the completion
        msgs = row.pop("messages")
        row["prompt"], row["completion"] = msgs[:-1], msgs[-1:]
    elif kind == "sft" and "text" in row and "completion" not in row:
        row = {**row, "prompt": row.get("prompt", ""), "completion": row.pop("text")}
    kind_ = DATA_KINDS[kind]
    paired = kind == "unpaired" and "chosen" in row and "completion" not in row
    sets = ("chosen", "rejected") if paired else tuple(kind_.column(s) for s in kind_.sets)
    if "prompt" not in row and len(sets) >= 2:  # implicit prompt: the sets' shared start
        k = _implicit_prompt([row[s] for s in sets])
        row["prompt"] = row[sets[0]][:k]
        row.update({s: row[s][k:] for s in sets})
    prompt = row.get("prompt")
    if kind_.token_fields:  # steps stay a list of texts: tokenize joins them
        sets = ()
    elif kind_.list_rows:  # a ranked list, best first; ratings default to the ranks
        n = len(row.get("responses", []))
        row.setdefault("ratings", [float(n - 1 - i) for i in range(n)])
    if is_chat(prompt):
        if kind_.list_rows:
            row["responses"] = list(_chat_sets(prompt, tok, dict(enumerate(row.get("responses", [])))).values())
        else:
            row.update(_chat_sets(prompt, tok, {s: row[s] for s in sets}))
        row["prompt"] = Chat(render(tok, prompt, True), prompt)
    elif kind_.list_rows:  # a text prompt: a conversational completion is its assistant text
        row["responses"] = [_content(r) for r in row.get("responses", [])]
    else:
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

def split_ids(tok, prompt, completions: list) -> tuple[list[int], list[list[int]]]:
    """Prompt ids and each completion's ids, laid out as TRL 1.16's DPO, KTO and SFT trainers
    do: the prompt and each prompt + completion are tokenised whole, and a completion starts
    where its sequence leaves the prompt's tokens (so tokens that merge across the boundary
    and templates that render a prompt differently alone stay as the model sees them).
    Text is tokenised with the tokenizer's special tokens (BOS where it adds one) and a
    completion gets the EOS text; a Chat holds its template's tokens already."""
    chat = isinstance(prompt, Chat)  # then its completions are Chats too (normalise)
    text = prompt.text if chat else prompt
    wholes = [c.text if isinstance(c, Chat) else text + _with_eos(tok, c) for c in completions]
    p_ids, *full = tok([text] + wholes, add_special_tokens=not chat)["input_ids"]  # one batched call
    k = min((_shared(p_ids, f) for f in full), default=len(p_ids))
    return p_ids[:k], [f[k:] for f in full]


def _with_eos(tok, text: str) -> str:
    eos = tok.eos_token
    return text if eos is None or text.endswith(eos) else text + eos


def _shared(a: list[int], b: list[int]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def _text(value) -> str:
    """What a completion says (to find empty ones)."""
    return value.content() if isinstance(value, Chat) else value


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
    for i, row in enumerate(rows):
        if limit is not None and len(out) >= limit:
            break
        prompt = row.get("prompt", "")
        values = _completions(row, kind_, list_size, skipped)
        if values is None:
            continue
        p_ids, c_ids = split_ids(tok, prompt, values)
        if not p_ids:
            p_ids, c_ids = _first_token_as_prompt(c_ids)
            if not p_ids:
                skipped.empty_prompt += 1
                continue
        if max_prompt_length is not None:
            p_ids = p_ids[-max_prompt_length:]
        if len(p_ids) >= max_length:
            skipped.prompt_too_long += 1
            continue
        room = max_length - len(p_ids)
        text, messages = (prompt.text, prompt.messages) if isinstance(prompt, Chat) else (prompt, None)
        if kind_.token_fields:
            ex = _stepwise(i, row, text, p_ids, room, tok, step_separator, skipped)
            if ex is not None:
                ex.prompt_messages = messages
                out.append(ex)
            continue
        if kind_.list_rows:
            comps = {sets[0]: [c[:room] for c in c_ids]}
            values_ = {"rating": [float(v) for v in row["ratings"]]}
            extra = {c: v for c, v in row.items() if c not in ("prompt", "responses", "ratings")}
        else:
            comps = {s: c[:room] for s, c in zip(sets, c_ids)}
            extra = {c: v for c, v in row.items() if c not in ("prompt",) + tuple(kind_.column(s) for s in sets)}
            values_ = {f: (bool(row[f]) if f == "label" else float(row[f])) for f in fields}
        out.append(Example(i, text, p_ids, comps, values_, extra, prompt_messages=messages))
    return out, skipped


def _first_token_as_prompt(c_ids: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """No prompt tokens (language-modelling text and a tokenizer that adds no BOS): the first
    token has nothing to be predicted from, so it becomes the prompt, as TRL's shifted labels
    leave it unlearned. Completions that start differently leave nothing to share: ([], …)."""
    firsts = {c[0] if c else None for c in c_ids}
    if len(firsts) != 1 or None in firsts:
        return [], c_ids
    return [c_ids[0][0]], [c[1:] for c in c_ids]


def _completions(row: dict, kind_, list_size: int | None, skipped: Skipped) -> list | None:
    """A row's completions to tokenise (none for steps, which _stepwise lays out), or None
    (counted) where the row has nothing to learn from."""
    if kind_.list_rows:  # 2 to `size` responses (validation matched the ratings to them)
        values = row["responses"]
        if len(values) < 2:
            skipped.list_too_short += 1
            return None
        if list_size is not None and len(values) > list_size:
            skipped.list_too_long += 1
            return None
    else:
        values = [] if kind_.token_fields else [row[kind_.column(s)] for s in kind_.sets]
    if not all(_text(v).strip() for v in values):
        skipped.empty_completion += 1
        return None
    return values


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
