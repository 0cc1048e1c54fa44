"""Data: load a dataset, bring TRL's formats to one shape, check the fields a
method needs, tokenise with prompt/completion masks, and batch.

Accepted (TRL's dataset formats): standard and conversational (`messages` or lists
of `{role, content}` rendered with the tokenizer's chat template), language
modelling `{text}` for SFT, prompt-completion, preference with explicit or
implicit prompt, unpaired preference (and preference data unpaired for unpaired
methods), prompt-only. Rows whose completion is empty or whose prompt leaves no
room within `max_length` are skipped and counted (reported before training).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ptdsl.ir.datakinds import DATA_KINDS
from ptdsl.runtime.errors import RuntimeSetupError


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
    wrong_list_size: int = 0
    no_step_within_max_length: int = 0

    def __str__(self) -> str:
        parts = [f"{n} {what}" for what, n in (("with an empty completion", self.empty_completion),
                                                ("whose prompt leaves no room within max_length",
                                                 self.prompt_too_long),
                                                ("whose list of responses has another length than the "
                                                 "method's `size`", self.wrong_list_size),
                                                ("whose first step does not end within max_length",
                                                 self.no_step_within_max_length)) if n]
        return "skipped rows: " + ", ".join(parts) if parts else ""


# ---- loading --------------------------------------------------------------------

def load_rows(source: str) -> list[dict]:
    """Rows from a local JSON/JSONL/Parquet/CSV file, a saved dataset dir, or a hub name."""
    import datasets
    path = Path(source)
    try:
        if path.is_file():
            ext = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
            if ext is None:
                raise RuntimeSetupError(f"cannot read `{source}`: use .json, .jsonl, .parquet or .csv")
            ds = datasets.load_dataset(ext, data_files=str(path), split="train")
        elif path.is_dir() and (path / "dataset_info.json").exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(source, split="train")
    except RuntimeSetupError:
        raise
    except Exception as exc:  # datasets raises many types; report one clear message
        raise RuntimeSetupError(f"cannot load dataset `{source}`: {type(exc).__name__}: {exc}",
                                help="give a local .json/.jsonl/.parquet file, a saved dataset directory, "
                                     "or a hub name reachable from this machine") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"]
    return [dict(r) for r in ds]


# ---- formats → one shape --------------------------------------------------------

def _is_chat(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


def _render(tok, messages, generation_prompt: bool) -> str:
    if getattr(tok, "chat_template", None) is None:
        # no template: a plain transcript, so conversational data still trains
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant: " if generation_prompt else "")
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def normalise(row: dict, kind: str, tok) -> list[dict]:
    """A raw row → rows with `prompt` (text) and the kind's completion texts."""
    row = dict(row)
    if kind == "stepwise":  # steps stay a list: tokenize joins them
        if _is_chat(row.get("prompt")):
            row["prompt"] = _render(tok, row["prompt"], True)
        return [row]
    if DATA_KINDS[kind].list_rows:  # a ranked list, best first; ratings default to the ranks
        if _is_chat(row.get("prompt")):
            row["prompt"] = _render(tok, row["prompt"], True)
        responses = [("".join(m["content"] for m in r) if _is_chat(r) else r) for r in row.get("responses", [])]
        row["responses"] = responses
        row.setdefault("ratings", [float(len(responses) - 1 - i) for i in range(len(responses))])
        return [row]
    if kind == "sft" and "text" in row and "completion" not in row:
        row = {**row, "prompt": row.get("prompt", ""), "completion": row.pop("text")}
    if kind == "sft" and "messages" in row:
        msgs = row.pop("messages")
        row["prompt"] = _render(tok, msgs[:-1], True)
        row["completion"] = msgs[-1]["content"]
    if kind == "unpaired" and "chosen" in row and "completion" not in row:  # unpair preference data
        base = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
        return normalise({**base, "completion": row["chosen"], "label": True}, kind, tok) + \
            normalise({**base, "completion": row["rejected"], "label": False}, kind, tok)
    kind_ = DATA_KINDS[kind]
    sets = tuple(kind_.column(s) for s in kind_.sets) or ("completion",)
    if "prompt" not in row and all(s in row for s in sets) and len(sets) >= 2:  # implicit prompt
        a, b = row[sets[0]], row[sets[1]]
        if _is_chat(a):
            k = 0
            while k < min(len(a), len(b)) - 1 and a[k] == b[k]:
                k += 1
            row["prompt"], row[sets[0]], row[sets[1]] = a[:k], a[k:], b[k:]
        else:
            p = _common_prefix(a, b)
            row["prompt"], row[sets[0]], row[sets[1]] = p, a[len(p):], b[len(p):]
    if _is_chat(row.get("prompt")):
        row["prompt"] = _render(tok, row["prompt"], True)
    for s in sets:
        if _is_chat(row.get(s)):
            row[s] = "".join(m["content"] for m in row[s])
    return [row]


def required_columns(kind: str, fields: tuple[str, ...]) -> tuple[str, ...]:
    return DATA_KINDS[kind].columns + tuple(f for f in fields if f not in DATA_KINDS[kind].columns)


def check_fields(rows: list[dict], method: str, kind: str, fields: tuple[str, ...]) -> None:
    """Every column the method's data kind needs, named, before step 1."""
    if not rows:
        raise RuntimeSetupError(f"the dataset for `{method}` is empty")
    have = sorted(rows[0])
    for col in required_columns(kind, fields):
        if col not in rows[0]:
            raise RuntimeSetupError(
                f"method `{method}` (data {kind}) needs the field `{col}`, and the dataset does not have it",
                help=f"the dataset has: {', '.join(f'`{c}`' for c in have) or 'no columns'}; "
                     f"{kind} data needs {', '.join(f'`{c}`' for c in required_columns(kind, fields))}")
    if kind == "stepwise":
        _check_steps(rows, method)
    for i, row in enumerate(rows):
        for col in fields:
            if not isinstance(row.get(col), (int, float)):
                raise RuntimeSetupError(f"field `{col}` of row {i} must be a number, got {row.get(col)!r}")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _check_steps(rows: list[dict], method: str) -> None:
    """Stepwise rows: `completions` a list of strings, `labels` one bool per step."""
    for i, row in enumerate(rows):
        steps, labels = row["completions"], row["labels"]
        if not isinstance(steps, list) or not all(isinstance(t, str) for t in steps):
            raise RuntimeSetupError(f"field `completions` of row {i} must be a list of step texts "
                                    f"(method `{method}`, data stepwise), got {type(steps).__name__}")
        if not isinstance(labels, list) or not all(isinstance(v, (bool, int)) for v in labels):
            raise RuntimeSetupError(f"field `labels` of row {i} must be a list of booleans, one per step "
                                    f"(method `{method}`, data stepwise)")
        if len(labels) != len(steps):
            raise RuntimeSetupError(f"row {i} has {_count(len(steps), 'step')} in `completions` and "
                                    f"{_count(len(labels), 'label')} in `labels` (method `{method}`, data stepwise)",
                                    help="give one label per step")


# ---- tokenisation -----------------------------------------------------------------

def tokenize(rows: list[dict], tok, kind: str, fields: tuple[str, ...], max_length: int,
             max_prompt_length: int | None, list_size: int | None = None,
             step_separator: str = "\n") -> tuple[list[Example], Skipped]:
    kind_ = DATA_KINDS[kind]
    sets = kind_.sets
    skipped = Skipped()
    out: list[Example] = []
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    for i, row in enumerate(rows):
        prompt = row.get("prompt", "")
        p_ids = bos + tok(prompt, add_special_tokens=False)["input_ids"]
        if max_prompt_length is not None:
            p_ids = p_ids[-max_prompt_length:]
        if len(p_ids) >= max_length:
            skipped.prompt_too_long += 1
            continue
        room = max_length - len(p_ids)
        if kind_.list_rows:
            if len(row["responses"]) != list_size or len(row["ratings"]) != list_size:
                skipped.wrong_list_size += 1
                continue
            texts = row["responses"]
            if not all(str(t).strip() for t in texts):
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
        if not all(str(t).strip() for t in texts):
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
        ids += tok(str(step), add_special_tokens=False)["input_ids"] + sep
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
    return (tok(str(text), add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:room]
