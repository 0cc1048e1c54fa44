"""The embedded default: a tiny Llama-style model built from a config (random
weights), a character-level tokenizer built in code, and a synthetic arithmetic
dataset of each data kind, on which learning is visible within a minute on a CPU.

The task: prompts `a+b=` with one-digit a, b; the right answer is the sum. The
chosen completion is right and the rejected one wrong (preference), labels say
whether a completion is right (unpaired), and the `accuracy` verifier checks a
sampled completion against the `answer` column (prompts). Stepwise data adds a third
number and labels each of the two steps by its own sum.
"""
from __future__ import annotations

import random

ALPHABET = list("0123456789+-*=?. ")
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]


def tokenizer():
    """A character-level fast tokenizer (no download): pad/bos/eos/unk + the alphabet. Like a
    Llama tokenizer it starts each text with BOS (TRL and runtime/data.py tokenise text with
    the tokenizer's own special tokens) and has no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {tok: i for i, tok in enumerate(SPECIAL + ALPHABET)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def model(tok, seed: int = 0, value_head: bool = False, sequence_classifier: bool = False):
    """A ~90k-parameter Llama built from a config with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=False, num_labels=1)
    torch.manual_seed(seed)
    cls = LlamaForSequenceClassification if sequence_classifier else LlamaForCausalLM
    return cls(cfg)


def _problems(n: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        a, b = rng.randrange(10), rng.randrange(10)
        wrong = (a + b + rng.randrange(1, 10)) % 19
        yield f"{a}+{b}=", str(a + b), str(wrong)


def _steps(prompt: str, rng) -> dict:
    """Stepwise supervision: `a+b=` then `+c`; two steps, each labelled by its own arithmetic
    (a wrong first result is carried into the second step, as a real solution would)."""
    a, b = int(prompt[0]), int(prompt[2])
    c = rng.randrange(10)
    s1 = a + b if rng.random() < 0.5 else (a + b + rng.randrange(1, 10)) % 19
    s2 = s1 + c if rng.random() < 0.5 else (s1 + c + rng.randrange(1, 10)) % 28
    return {"prompt": f"{a}+{b}+{c}=", "completions": [f"{a}+{b}={s1}", f"{s1}+{c}={s2}"],
            "labels": [s1 == a + b, s2 == s1 + c]}


def dataset(kind: str, n: int = 4096, seed: int = 0, fields: tuple[str, ...] = (),
            list_size: int | None = None) -> list[dict]:
    """Rows of the synthetic task in TRL's format for a data kind (ranked lists: the right
    answer first, then answers further and further off; between 2 and `list_size` of them,
    varying from row to row, as real ranked data does)."""
    rows = []
    for i, (prompt, right, wrong) in enumerate(_problems(n, seed)):
        if kind == "sft":
            row = {"prompt": prompt, "completion": right}
        elif kind == "preference":
            row = {"prompt": prompt, "chosen": right, "rejected": wrong}
        elif kind == "unpaired":
            good = i % 2 == 0
            row = {"prompt": prompt, "completion": right if good else wrong, "label": good}
        elif kind == "prompts":
            row = {"prompt": prompt, "answer": right}
        elif kind == "ranked":
            k = 2 + i % ((list_size or 4) - 1)
            total = int(right)
            row = {"prompt": prompt, "responses": [str((total + d) % 19) for d in range(k)],
                   "ratings": [float(k - d) for d in range(k)]}
        elif kind == "triple":
            row = {"prompt": prompt, "chosen": right, "rejected": wrong, "reference": right}
        elif kind == "stepwise":
            row = _steps(prompt, random.Random(seed * 7919 + i))
        else:
            raise ValueError(f"the embedded default has no data of kind `{kind}`")
        for f in fields:  # extra numeric columns (e.g. a reward margin): a constant
            row.setdefault(f, 1.0)
        rows.append(row)
    return rows


def accuracy(prompts, completions, answer, **_):
    """Character-level accuracy against the `answer` column: the fraction of
    positions that match, over the longer of the two strings (1 only for the
    exact answer). Partial credit gives a model with random weights a gradient
    to climb; an exact-match verifier would give it almost none. `answer` has no
    default, so every row must have that column (reward_fns.columns_read); a
    numeric answer (12) is compared as its text ("12")."""
    out = []
    for completion, want in zip(completions, answer):
        got, want = completion.strip(), "" if want is None else str(want)
        hits = sum(a == b for a, b in zip(got, want))
        out.append(hits / max(len(got), len(want), 1))
    return out


LEARNING_RATE = 3e-3  # the default with this model: random weights learn the task fast
ROLLOUT_MAX_TOKENS = 4  # answers have at most two digits; longer samples only cost time


def digits(prompts, completions, **_):
    """Format reward: the fraction of completion characters that are digits."""
    return [sum(c.isdigit() for c in s) / max(len(s), 1) for s in completions]
