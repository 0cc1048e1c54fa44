"""The token sequence of an episode: the chat template's rendering, extended turn by turn.

Training needs `prompt_ids + completion_ids` to be one valid sequence in which the policy's
tokens are exactly the ones it sampled (their log-probs are what the loss compares against),
and everything between its turns — the end of its turn, tool results, the next turn's header —
is what the chat template inserts there. So after each tool turn, `extension` renders the whole
conversation again (`apply_chat_template(messages, tools=…, add_generation_prompt=True)`) and
checks that the rendering starts with the sequence so far; the new tokens are the rest.

The rendering may not extend the sequence: the template writes the parsed assistant message
differently from how the model spelled it (JSON spacing, a dropped reasoning block), the model
produced a tokenization the tokenizer would not (BPE merges differ), or the template cannot
render the turn at all (Llama 3.1's raises on two calls in one turn). Then the sequence keeps the
sampled tokens and takes the inserted tokens as TRL 1.16 does (`GRPOTrainer._get_tool_suffix_ids`):
render a stand-in conversation — a user message and one call to the first tool — without and
with the tool messages, cut the first just after its last end-of-turn token, and take what the
second adds past that point. `extension` says which happened; the episode counts the second
kind, since the final sequence then differs from a fresh rendering of its messages (it is still
exactly what the policy was conditioned on).

`check_template` refuses, before any generation, a chat template that drops tool calls or tool
results (TRL's `supports_tool_calling` test), so a run never trains on conversations whose tool
results the model could not see.
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
    whether they came from a rendering of `messages` that extends `sequence`). `messages[:n_before]`
    ends with the policy's last turn; the rest are the tool messages it led to."""
    try:
        full = render(tokenizer, messages, schemas, True, template_kwargs)
    except Exception:  # noqa: BLE001 — jinja's TemplateError and the like: the stand-in below still works
        full = None
    if full is not None and full[:len(sequence)] == sequence:
        return full[len(sequence):], True
    return _stand_in_suffix(tokenizer, messages[n_before:], stop_ids, template_kwargs), False


def _stand_in_suffix(tokenizer, results: list[dict], stop_ids: set[int], template_kwargs: dict | None) -> list[int]:
    """TRL's suffix (module docstring): what the template adds after an assistant turn's end."""
    call = {"type": "function", "function": {"name": results[0].get("name", "tool"), "arguments": {}}}
    stand_in = [{"role": "user", "content": "dummy"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    before = render(tokenizer, stand_in, [], False, template_kwargs)
    after = render(tokenizer, stand_in + results, [], True, template_kwargs)
    cut = max((i for i, t in enumerate(before) if t in stop_ids), default=None)
    if cut is None or after[:cut + 1] != before[:cut + 1]:
        raise RuntimeSetupError(
            f"the chat template of `{_name(tokenizer)}` does not render a conversation with tool results as an "
            f"extension of the same conversation without them",
            help="episodes need a chat template with tool support that only appends when messages are appended "
                 "(e.g. Qwen 2.5's); pass a different chat template")
    return after[cut + 1:]


def check_template(tokenizer, template_kwargs: dict | None = None) -> None:
    """The chat template renders a tool call and a tool result (TRL's `supports_tool_calling`)."""
    name, result = "probe_tool_7f3a", "probe_result_c41e"
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": name, "arguments": {"probe_arg": 1}}}]},
                {"role": "tool", "name": name, "content": result}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, **(template_kwargs or {}))
        problem = None if name in text and result in text else "drops the tool call or the tool result"
    except Exception as exc:  # noqa: BLE001 — a template without tool support raises TemplateError, TypeError …
        problem = f"fails on a tool call ({type(exc).__name__}: {exc})"
    if problem:
        raise RuntimeSetupError(f"the chat template of `{_name(tokenizer)}` {problem}: episodes need one with "
                                f"tool support", help="use a model whose chat template renders `tool_calls` and "
                                                      "`tool` messages (e.g. Qwen 2.5), or pass such a template")


def _name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
