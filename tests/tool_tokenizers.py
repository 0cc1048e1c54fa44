"""Tokenizers with tool-calling chat templates, built offline, for the episode tests.

The chat template is Qwen 2.5's own (the copy TRL 1.16 ships as `qwen2_5_chat_template`: the
`# Tools` system block, `<tool_call>` JSON in assistant turns, tool results as
`<tool_response>` inside a user turn), and the response template is the one TRL's
`add_response_schema` attaches to it, so `tokenizer.parse_response` reads tool calls as it would
for the real model. The vocabulary is a small byte-level BPE trained here (as in
tests/chat_tokenizers.py), with Qwen's special tokens; like Qwen 2.5 Instruct its EOS is
`<|im_end|>`, the token that ends an assistant turn.

`tool_tokenizer("llama3.1")` is the same with Llama 3.1's template (TRL's copy, tools in the first
user message, a call as `{"name": …, "parameters": …}`, results in an `ipython` turn, and an
exception for two calls in one turn) and the response template TRL attaches to it; EOS
`<|eot_id|>`.

`tool_tokenizer(response_template=False)` is a tokenizer without a response template: ptdsl then
falls back to its own `<tool_call>{json}</tool_call>` reader.
"""
from __future__ import annotations

from tests.chat_tokenizers import CORPUS

TOOL_CORPUS = CORPUS + [
    '<tool_call>\n{"name": "calculate", "arguments": {"expression": "12 * 34"}}\n</tool_call>',
    '<tool_response>\n408\n</tool_response> The answer is 408.',
    '{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": '
    '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]}}}'] * 4


STYLES = {  # specials (pad first), EOS, the TRL attribute holding the chat template
    "qwen2.5": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|im_end|>", "qwen2_5_chat_template"),
    "llama3.1": (["<|finetune_right_pad_id|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"], "<|eot_id|>", "llama3_1_chat_template"),
}


def tool_tokenizer(style: str = "qwen2.5", response_template: bool = True):
    """A fast tokenizer with the style's chat template (and, by default, its response template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from trl import chat_template_utils
    specials, eos, template = STYLES[style]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(TOOL_CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos, pad_token=specials[0],
                                  bos_token="<|begin_of_text|>" if style == "llama3.1" else None,
                                  additional_special_tokens=[t for t in specials[1:] if t != eos])
    tok.chat_template = getattr(chat_template_utils, template)
    tok.name_or_path = f"test-{style}-tools"
    if response_template:
        chat_template_utils.add_response_schema(tok)
    return tok


def tiny_llama(tok, layers: int = 2, seed: int = 0):
    """A random Llama with the tokenizer's vocabulary, small enough for CPU tests (eval mode)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg).eval()
