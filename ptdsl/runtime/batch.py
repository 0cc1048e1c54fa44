"""Batches: the rows of every sequence set a step needs, and their token layout.

A set's rows are (prompt ids, completion ids) pairs. Dataset sets come from the
examples; `mismatched(S)` pairs each prompt with the previous row's completion
(cyclic within the micro-batch, as TRL's KTO does within a device batch); rollout
sets are filled by rollout.py. One forward runs over several sets at once in the
layout `[left padding][prompt][completion][right padding]`, so every row's
completion starts at the same column and per-token outputs are a plain slice.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SetRows:
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    truncated: list[bool] | None = None   # rollouts: no EOS within max_tokens
    texts: list[str] | None = None        # rollouts: decoded completions
    token_mask: list[list[bool]] | None = None  # which completion tokens the set holds, when not all
    sampler_logprobs: list[list[float]] | None = None  # rollouts: each token's log-prob under the distribution
    #                                                    the generator drew it from (`logprobs(sampler, y)`)
    episodes: list[dict] | None = None  # episode rollouts: each row's record (runtime/episode_rollout.py)

    def select(self, rows: list[int]) -> "SetRows":
        """These rows, in this order."""
        def pick(values):
            return [values[i] for i in rows] if values is not None else None
        return SetRows(pick(self.prompt_ids), pick(self.completion_ids), pick(self.truncated), pick(self.texts),
                       pick(self.token_mask), pick(self.sampler_logprobs), pick(self.episodes))

    def __len__(self) -> int:
        return len(self.completion_ids)


@dataclass
class Batch:
    examples: list                # the first data source's examples (the only one's, mostly)
    sets: dict[str, SetRows] = field(default_factory=dict)
    rewards: dict[str, list[float]] = field(default_factory=dict)  # "r(y)" → one score per row of y
    recorded: dict = field(default_factory=dict)  # leaf → tensor computed when the experience was made
    sources: dict[str, list] = field(default_factory=dict)  # the other sources' examples, by row space
    version: int | None = None    # the policy version that sampled it (runtime/async_gen.py); None: the current

    @property
    def prompts(self) -> list[str]:
        return [e.prompt_text for e in self.examples]

    def rows_of(self, rows: str) -> list:
        """The examples whose rows a row space holds: another source's, else the first's (a grouped
        row space, a rollout's or a ranked list's, holds rows of the first source's examples)."""
        return self.sources.get(rows, self.examples)


def list_sizes(examples, set_name: str) -> list[int] | None:
    """Each example's number of responses when `set_name` is a ranked list (K varies per
    example: 2 to the method's `size`), else None."""
    first = examples[0].completions.get(set_name) if examples else None
    if not (isinstance(first, list) and first and isinstance(first[0], list)):
        return None
    return [len(e.completions[set_name]) for e in examples]


def dataset_sets(examples, wanted: list[str], set_info) -> dict[str, SetRows]:
    prompts = [e.prompt_ids for e in examples]
    out = {}
    for s in wanted:
        info = set_info[s]
        if info.source == "data" and list_sizes(examples, s) is not None:
            # a ranked list: each example's responses are consecutive rows (a group of its own size)
            out[s] = SetRows([e.prompt_ids for e in examples for _ in e.completions[s]],
                             [c for e in examples for c in e.completions[s]])
        elif info.source == "data":
            marks = [e.token_masks[s] for e in examples] if examples and s in examples[0].token_masks else None
            out[s] = SetRows(prompts, [e.completions[s] for e in examples], token_mask=marks)
        elif info.source == "derived":  # mismatched(base): the previous row's completion
            base = [e.completions[info.base] for e in examples]
            out[s] = SetRows(prompts, base[-1:] + base[:-1])
    return out


@dataclass
class Layout:
    """Token ids of rows from several sets, ready for one forward."""

    input_ids: object       # [R, P + C]
    attention_mask: object
    position_ids: object
    prompt_len: int         # P: completions start at column P
    spans: dict             # set → (first row, row count, completion length C_s)
    completion_mask: dict   # set → [rows, C_s] bool
    prompt_groups: list = field(default_factory=list)  # row → index of its prompt among the distinct ones


def completion_width(rows: SetRows) -> int:
    """Columns of a set's per-token tensors: its longest completion (at least 1)."""
    return max(max((len(c) for c in rows.completion_ids), default=1), 1)


def set_mask(rows: SetRows, width: int):
    """[rows, width] bool: the completion tokens of each row that belong to the set."""
    import torch
    lengths = torch.tensor([len(c) for c in rows.completion_ids])
    m = torch.arange(width)[None, :] < lengths[:, None]
    if rows.token_mask is not None:  # a subset of the completion (e.g. the last token of each step)
        marks = torch.zeros_like(m)
        for i, row in enumerate(rows.token_mask):
            marks[i, :len(row)] = torch.tensor(row, dtype=torch.bool)
        m &= marks
    return m


def layout(sets: dict[str, SetRows], names: list[str], pad_id: int, device) -> Layout:
    import torch

    from ptdsl.runtime.prefix import prompt_groups
    rows = [(s, p, c) for s in names for p, c in zip(sets[s].prompt_ids, sets[s].completion_ids)]
    P = max(len(p) for _, p, _ in rows)
    C = max(max(len(c) for _, _, c in rows), 1)
    ids = torch.full((len(rows), P + C), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), P + C), dtype=torch.long)
    for i, (_, p, c) in enumerate(rows):
        ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        att[i, P - len(p):P] = 1
        if c:
            ids[i, P:P + len(c)] = torch.tensor(c, dtype=torch.long)
            att[i, P:P + len(c)] = 1
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    spans, masks, start = {}, {}, 0
    for s in names:
        n = len(sets[s])
        width = completion_width(sets[s])
        masks[s] = set_mask(sets[s], width).to(device)
        spans[s] = (start, n, width)
        start += n
    groups = prompt_groups([p for _, p, _ in rows])
    return Layout(ids.to(device), att.to(device), pos.to(device), P, spans, masks, groups)
