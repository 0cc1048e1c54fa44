"""Chat templates: conversations rendered as the tokenizer's chat template writes them
(runtime/data.py tokenises the result), and the `--chat-template FILE|plain` option.

A conversational dataset needs a template: a tokenizer without one is an error (ptdsl
used to invent a `user: …` transcript silently); `--chat-template plain` asks for that
transcript explicitly."""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.runtime.errors import RuntimeSetupError


@dataclass(frozen=True)
class Chat:
    """A conversation as the tokenizer's chat template renders it: a prompt (with the
    generation prompt) or a prompt followed by a completion. The text already holds the
    template's special tokens (`{{ bos_token }}`, end-of-turn markers), so it is tokenised
    without adding any (adding them gave Llama 3 and Gemma prompts a second BOS), and a
    completion ends with the template's end of turn, not an added EOS."""
    text: str
    messages: list   # the prompt's messages, or the completion's (assistant turns)

    def content(self) -> str:
        return "".join(m["content"] for m in self.messages)


class NoChatTemplate(RuntimeSetupError):
    """Conversational data and a tokenizer without a chat template: one error for the dataset."""


def is_chat(value) -> bool:
    return isinstance(value, list)  # validated rows: a list here is a conversation (schema.py)


def render(tok, messages, generation_prompt: bool) -> str:
    if getattr(tok, "chat_template", None) is None:
        name = getattr(tok, "name_or_path", "")  # empty: built in code, as the embedded default's is
        who = f"the tokenizer `{name}`" if name else "the embedded default's tokenizer"
        raise NoChatTemplate(f"the dataset is conversational, and {who} has no chat template to render it with",
                             help="give one with `--chat-template FILE` (a Jinja template), or "
                                  "`--chat-template plain` for a plain `role: content` transcript")
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # noqa: BLE001 - templates reject conversations (e.g. roles that do not alternate)
        raise RuntimeSetupError(f"the tokenizer's chat template cannot render the conversation: "
                                f"{type(exc).__name__}: {exc}") from None


# --chat-template plain: BOS, then each turn `role: content`, ending in a newline or, for the
# assistant's, in EOS (where generation stops); then `assistant: `
PLAIN_TEMPLATE = ("{% if bos_token %}{{ bos_token }}{% endif %}"
                  "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
                  "{{ eos_token if m['role'] == 'assistant' else '\n' }}{% endfor %}"
                  "{% if add_generation_prompt %}assistant: {% endif %}")


def read_template(option: str) -> str:
    """--chat-template: `plain`, or a file holding a Jinja chat template."""
    if option == "plain":
        return PLAIN_TEMPLATE
    try:
        with open(option, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise RuntimeSetupError(f"--chat-template {option}: cannot read the file: {exc.strerror}",
                                help="give a file holding a Jinja chat template, or `plain`") from None
