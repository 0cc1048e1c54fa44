"""The token sequence of an episode: the chat template's rendering, extended turn by turn.

Training needs `prompt_ids + completion_ids` to be one valid sequence in which the policy's
tokens are exactly the ones it sampled (their log-probs are what the loss compares against),
and everything between its turns — the end of its turn, tool results, the next turn's header —
is what the chat template inserts there. So after each tool turn, `extension` renders the whole
conversation again (`apply_chat_template(messages, tools=…, add_generation_prompt=True)`) and
checks that the rendering starts with the sequence so far; the new tokens are the rest.

The rendering may not extend the sequence: the template writes the parsed assistant message
differently from how the model spelled it (JSON spacing, a dropped reasoning block), or the
model produced a tokenization the tokenizer would not (BPE merges differ). Then the sequence
keeps the sampled tokens and takes the inserted tokens as TRL 1.16 does
(`GRPOTrainer._get_tool_suffix_ids`): render the conversation without and with the tool
messages, cut the first just after its last end-of-turn token, and take what the second adds
past that point. `extension` says which happened; the episode counts the second kind, since the
final sequence then differs from a fresh rendering of its messages (it is still exactly what
the policy was conditioned on). A template that rewrites earlier turns when tool results are
appended cannot be used at all: a RuntimeSetupError.
"""
from __future__ import annotations

from ptdsl.runtime.errors import RuntimeSetupError


def render(tokenizer, messages: list[dict], schemas: list[dict], generation_prompt: bool,
           template_kwargs: dict | None = None) -> list[int]:
    """The chat template's token ids for `messages` with the tools' schemas. `tools=None` when
    there are none: TRL notes some templates (Llama) write tool boilerplate for `tools=[]`."""
    ids = tokenizer.apply_chat_template(messages, tools=schemas or None, add_generation_prompt=generation_prompt,
                                        tokenize=True, return_dict=False, **(template_kwargs or {}))
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # some processors return a batch of one
        ids = ids[0]
    return list(ids)


def extension(tokenizer, sequence: list[int], messages: list[dict], n_before: int, schemas: list[dict],
              stop_ids: set[int], template_kwargs: dict | None = None) -> tuple[list[int], bool]:
    """(the tokens to append to `sequence` so that the policy's next turn follows `messages`,
    whether they came from a rendering that extends `sequence`). `messages[:n_before]` ends with
    the policy's last turn; the rest are the tool messages it led to."""
    full = render(tokenizer, messages, schemas, True, template_kwargs)
    if full[:len(sequence)] == sequence:
        return full[len(sequence):], True
    before = render(tokenizer, messages[:n_before], schemas, False, template_kwargs)
    cut = max((i for i, t in enumerate(before) if t in stop_ids), default=None)
    if cut is None or full[:cut + 1] != before[:cut + 1]:
        raise RuntimeSetupError(
            f"the chat template of `{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}` does "
            f"not render a conversation with tool results as an extension of the same conversation without them",
            help="episodes need a chat template with tool support that only appends when messages are appended "
                 "(e.g. Qwen 2.5's); pass a different chat template")
    return full[cut + 1:], False
