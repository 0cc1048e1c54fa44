"""The embedded default for episode methods: a task where a tool genuinely helps a tiny model.

The task: `372+458=`, two three-digit numbers. A ~100k-parameter model cannot add them in its
head, but it can copy: call the built-in `calculator` environment's `calculate` tool with the
question, read the result, and say it. The reward is `final_answer` (runtime/calculator.py's
`answer_reward`): 1 when the last integer of the final answer is the sum.

Offline, with no download, so the tokenizer is built in code: characters, a few control tokens
(`<tools>`, `<user>`, `<bot>`, `<call>`, `</call>`, `<result>`; `</s>` ends the policy's turn)
and the calculator's names as single tokens. Its chat template renders tools and tool calls
(`<call>calculate{expression:"372+458"}</call>`: JSON arguments with bare keys, every tool's
schema by name), and its transformers `response_template` reads a turn back, so episodes use the
same machinery as a real model's (runtime/episode.py, tools.py): nothing here is calculator-only
except the two name tokens, which only make the names cheap.

The model starts where a real tool-RL run starts: from a model that knows the format. Random
weights would almost never write a well-formed call, so `model` warm-starts the tiny Llama with a
few hundred steps of supervised learning on demonstrations, `TOOL_SHARE` of which call the tool
and the rest answer directly (right answers). The warm-started model calls the tool on about that
share of prompts (seed 0: 51%), copies the result right after most calls (98%) and gets almost
every direct answer wrong (1%); the RL run then shows tool use and reward rising together. (With
fewer tool demonstrations or steps the copying is not learned reliably: 30% and 400 steps gave
27% right after a call.) The warm-up is plain cross-entropy on the assistant's tokens, seeded;
it runs once per seed, since its weights are cached. It stands in for the
instruction tuning a real model had.
"""
from __future__ import annotations

import hashlib
import os
import random
import string
from pathlib import Path

from ptdsl.runtime import embedded

CONTROL = ["<tools>", "<user>", "<bot>", "<call>", "</call>", "<result>"]
WORDS = ["calculate", "expression"]  # the calculator's tool and argument names: one token each
ALPHABET = sorted(set(string.digits + string.ascii_letters + string.punctuation + " "))
TOOL_SHARE = 0.5  # of the warm-up demonstrations that call the tool
MAX_EPISODE_TOKENS = 40  # a call, its result and an answer take about 26
LEARNING_RATE = 1e-3  # the default: the warm-started model unlearns its format at embedded's 3e-3
ROWS = 512  # the task's prompts: one epoch is 64 steps of 8 prompts
WARMUP_STEPS = 600
WARMUP_BATCH = 64
WARMUP_LR = 3e-3
VERSION = 1  # of the warm-up recipe: part of the cache key

TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if tools -%}<tools>{%- for t in tools -%}{{ (t.function if t.function is defined else t).name }}"
    "{%- endfor -%}{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}<bot>{{ m.content or '' }}"
    "{%- for c in m.tool_calls or [] -%}{%- set f = c.function if c.function is defined else c -%}"
    "<call>{{ f.name }}"
    "{%- if f.arguments is string -%}{{ f.arguments }}{%- else -%}{{ '{' }}"
    "{%- for k, v in f.arguments.items() -%}{{ k }}:{{ v | tojson }}{{ ',' if not loop.last }}{%- endfor -%}"
    "{{ '}' }}{%- endif -%}</call>"
    "{%- endfor -%}{{ eos_token }}"
    "{%- elif m.role == 'tool' -%}<result>{{ m.content }}"
    "{%- else -%}<user>{{ m.content }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<bot>{%- endif -%}"
)

# transformers 5's response parsing (tokenizer.parse_response): what follows the last `<bot>`
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<bot>",
    "fields": {
        "tool_calls": {
            "open_pattern": r"<call>(?P<name>\w+)",
            "close": "</call>",
            "repeats": True,
            "content": "json",
            "content_args": {"unquoted_keys": True},
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}},
        },
        "content": {"close": "</s>", "content": "text"},
    },
}


def tokenizer():
    """The character tokenizer with control tokens, a tool-aware chat template and a response template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {tok: i for i, tok in enumerate(embedded.SPECIAL + CONTROL + WORDS + ALPHABET)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in embedded.SPECIAL + CONTROL])
    core.add_tokens([AddedToken(w, normalized=False) for w in WORDS])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", additional_special_tokens=CONTROL)
    tok.chat_template = TEMPLATE
    tok.response_template = RESPONSE_TEMPLATE
    tok.padding_side = "left"
    return tok


def dataset(n: int = ROWS, seed: int = 0) -> list[dict]:
    """`prompts` rows of the task: `prompt` (`372+458=`) and `answer` (`830`)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randrange(100, 1000), rng.randrange(100, 1000)
        rows.append({"prompt": f"{a}+{b}=", "answer": str(a + b)})
    return rows


def demonstration(tok, row: dict, use_tool: bool, schemas: list[dict] | None = None) -> tuple[list[int], list[int]]:
    """(token ids, mask) of one demonstrated episode: the tool's call, result and the answer, or
    the answer alone; mask 1 on the assistant's own tokens (what the model learns to write)."""
    schemas = schemas if schemas is not None else calculator_schemas()
    messages = [{"role": "user", "content": row["prompt"]}]
    if use_tool:
        expression = row["prompt"].rstrip("=")
        call = {"type": "function", "function": {"name": "calculate", "arguments": {"expression": expression}}}
        messages += [{"role": "assistant", "content": "", "tool_calls": [call]},
                     {"role": "tool", "name": "calculate", "content": row["answer"]}]
    messages += [{"role": "assistant", "content": row["answer"]}]
    ids, mask = [], []
    for k in range(len(messages)):  # each message's tokens are what it adds to the rendering before it
        upto = tok.apply_chat_template(messages[:k + 1], tools=schemas, tokenize=True, return_dict=False)
        new = upto[len(ids):]
        ids += new
        own = messages[k]["role"] == "assistant"
        mask += [0] + [int(own)] * (len(new) - 1) if own else [0] * len(new)  # `<bot>` is the template's
    return ids, mask


def calculator_schemas() -> list[dict]:
    """The calculator's tool schemas, as an episode renders them."""
    from ptdsl.runtime.calculator import Calculator
    from ptdsl.runtime.tools import toolbox
    return toolbox(Calculator(), "calculator").schemas


def applies(plan) -> bool:
    """Whether the embedded default of this plan is the tool task: it plays episodes."""
    return any(r.kind == "episode" for r in plan.rollouts.values())


def model(tok, seed: int = 0, log=print, steps: int = WARMUP_STEPS):
    """The embedded tiny Llama (embedded.model) warm-started on demonstrations (module docstring).
    The warm-up is deterministic, so its weights are cached (`cache_dir()`), once per seed and
    settings; a cache that cannot be written only costs the warm-up next time."""
    from safetensors.torch import load_file, save_file
    policy = embedded.model(tok, seed)
    path = cache_dir() / f"seed{seed}-{_settings_key(tok, steps)}.safetensors"
    if path.is_file():
        policy.load_state_dict(load_file(str(path)))
        policy.eval()
        return policy
    log(f"warming up the embedded tool model (seed {seed}, {steps} steps of demonstrations; "
        f"once, then cached in {path.parent})")
    _warm_up(policy, tok, seed, steps)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(tmp))
        os.replace(tmp, path)  # atomic: a concurrent run reads the old state or the whole new one
    except OSError as exc:
        log(f"note: could not cache the warmed-up model in {path.parent} ({exc})")
    return policy


def cache_dir() -> Path:
    """$PTDSL_CACHE, else $XDG_CACHE_HOME/ptdsl, else ~/.cache/ptdsl; the warm-ups live in embedded-tools/."""
    root = os.environ.get("PTDSL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ptdsl"
    return Path(root) / "embedded-tools"


def _settings_key(tok, steps: int) -> str:
    """Everything the warm-up's result depends on: its settings, the template, torch's version."""
    import torch
    what = repr((VERSION, steps, WARMUP_BATCH, WARMUP_LR, TOOL_SHARE, TEMPLATE, len(tok), torch.__version__))
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def _warm_up(policy, tok, seed: int, steps: int) -> None:
    """Plain cross-entropy on the assistant's tokens of seeded demonstrations; one torch thread,
    as tiny matrices gain nothing from more and lose a lot on a busy machine."""
    import torch
    rng = random.Random(seed + 17)
    rows = dataset(2048, seed + 17)
    uses_tool = [rng.random() < TOOL_SHARE for _ in rows]
    schemas = calculator_schemas()
    rendered: dict[int, tuple[list[int], list[int]]] = {}  # rendered when first drawn: a short warm-up renders few

    def demo(i: int) -> tuple[list[int], list[int]]:
        if i not in rendered:
            rendered[i] = demonstration(tok, rows[i], uses_tool[i], schemas)
        return rendered[i]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed + 17)
    try:
        opt = torch.optim.AdamW(policy.parameters(), lr=WARMUP_LR)
        policy.train()
        for _ in range(steps):
            batch = [demo(rng.randrange(len(rows))) for _ in range(WARMUP_BATCH)]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in batch])
            mask = torch.tensor([m + [0] * (width - len(m)) for _, m in batch], dtype=torch.float32)[:, 1:]
            logits = policy(input_ids=ids).logits[:, :-1]  # right padding: no earlier position sees it
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            loss = (nll * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    policy.eval()
