"""Tokenizers with tool-calling chat templates, built offline, for the episode tests.

The chat template is Qwen 2.5's own (the copy TRL 1.16 ships as `qwen2_5_chat_template`: the
`# Tools` system block, `<tool_call>` JSON in assistant turns, tool results as
`<tool_response>` inside a user turn), and the response template is the one TRL's
`add_response_schema` attaches to it, so `tokenizer.parse_response` reads tool calls as it would
for the real model. The vocabulary is a small byte-level BPE trained here (as in
tests/chat_tokenizers.py), with Qwen's special tokens; like Qwen 2.5 Instruct its EOS is
`<|im_end|>`, the token that ends an assistant turn.

`tool_tokenizer(response_template=False)` is the same tokenizer without a response template:
ptdsl then falls back to its own `<tool_call>{json}</tool_call>` reader.
"""
from __future__ import annotations

from tests.chat_tokenizers import CORPUS

TOOL_CORPUS = CORPUS + [
    '<tool_call>\n{"name": "calculate", "arguments": {"expression": "12 * 34"}}\n</tool_call>',
    '<tool_response>\n408\n</tool_response> The answer is 408.',
    '{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": '
    '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]}}}'] * 4


def tool_tokenizer(response_template: bool = True):
    """A fast tokenizer with Qwen 2.5's chat template (and, by default, its response template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(TOOL_CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = qwen2_5_chat_template
    tok.name_or_path = "test-qwen2.5-tools"
    if response_template:
        add_response_schema(tok)
    return tok
