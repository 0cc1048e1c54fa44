"""Tokenizers built offline in the styles of real chat models, for the TRL token-identity tests.

Each is a small byte-level BPE (trained here on a few sentences, so words merge into
tokens and a space can merge into the next word, as in real vocabularies) with the special
tokens and a chat template in the style of one family, reduced to what these tests need:

* chatml: Qwen 2.5 — `<|im_start|>role … <|im_end|>`, no BOS, EOS `<|endoftext|>`.
* llama3: Llama 3 — `{{ bos_token }}` in the template *and* a tokenizer that adds BOS to
  plain text, turns ending in `<|eot_id|>`.
* gemma: Gemma — `{{ bos_token }}` in the template, BOS added to text, `<end_of_turn>`.
* phi3: Phi-3 — `<|user|> … <|end|>`, BOS added to text (not in the template), and the
  template appends the EOS after a conversation that ends with an answer.
"""
from __future__ import annotations

CORPUS = ["What is the capital of France? The capital of France is Paris.",
          "What color is the sky? It is blue. It is green. The sky is blue today.",
          "Two plus two is four. Three plus four is seven, not eight.",
          "You are a helpful assistant. Answer briefly and correctly."] * 4

STYLES = {
    "chatml": dict(
        bos=None, eos="<|endoftext|>", adds_bos=False, specials=["<|im_start|>", "<|im_end|>"],
        template="{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    "llama3": dict(
        bos="<|begin_of_text|>", eos="<|end_of_text|>", adds_bos=True,
        specials=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        template="{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>"
                 "\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
    "gemma": dict(
        bos="<bos>", eos="<eos>", adds_bos=True, specials=["<start_of_turn>", "<end_of_turn>"],
        template="{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' "
                 "else m['role'] %}{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"),
    "phi3": dict(
        bos="<s>", eos="<|endoftext|>", adds_bos=True, specials=["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        template="{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"),
}
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>", "phi3": "<|end|>"}


def chat_tokenizer(style: str):
    """A fast tokenizer in the style's layout, with its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    spec = STYLES[style]
    specials = ["<pad>"] + [t for t in (spec["bos"], spec["eos"]) if t] + spec["specials"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if spec["adds_bos"]:
        core.post_processor = processors.TemplateProcessing(
            single=f"{spec['bos']} $A", special_tokens=[(spec["bos"], core.token_to_id(spec["bos"]))])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=spec["bos"], eos_token=spec["eos"],
                                  pad_token="<pad>", additional_special_tokens=spec["specials"])
    tok.chat_template = spec["template"]
    tok.name_or_path = f"test-{style}"
    return tok
