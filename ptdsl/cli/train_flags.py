"""`ptdsl train`'s options as one table: each option's train() keyword (also its key in a
`--config` file), its flags (ptdsl's spelling first, then the names a TRL / transformers
`TrainingArguments` user types), its type and help.

One table serves the parser, the config file and the call to train(), so an option cannot be
accepted by one and dropped by another. Every flag parses to None when absent: what the
user gave (on the command line, else in the config file) is then told apart from the
defaults, which stay in one place (runtime/loop.TrainOptions and train()'s signature)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Opt:
    key: str                        # train() keyword; "rollout.X" is a sampling override
    flags: tuple[str, ...]          # the first is ptdsl's own spelling
    type: type | None = None        # None: a switch (no value)
    help: str = ""
    choices: tuple = ()
    switch: object = True           # what a switch sets `key` to
    many: bool = False              # repeatable: values collect in a list
    metavar: str | None = None


OPTS: tuple[Opt, ...] = (
    Opt("model", ("--model", "--model_name_or_path"), str,
        "model id or local path (default: the embedded tiny model)"),
    Opt("data", ("--data", "--dataset_name"), str, "dataset: local .json/.jsonl/.csv/.parquet, saved dataset dir, "
        "or hub name; for a method with several sources, NAME=PATH once per source", many=True,
        metavar="[NAME=]PATH"),
    Opt("reward_fns", ("--reward-fn", "--reward_funcs"), str, "a verifier, imported from the named module",
        many=True, metavar="[NAME=]MODULE:FUNCTION"),
    Opt("envs", ("--env",), str, "an environment the method's episodes play, imported from the named module "
        "(TRL's environment_factory convention)", many=True, metavar="NAME=MODULE:FACTORY"),
    Opt("params", ("--set",), str, "override a method parameter", many=True, metavar="NAME=VALUE"),
    Opt("output", ("--output", "--output_dir"), str, "output directory (metrics.jsonl, checkpoints, final/); "
        "default out"),
    Opt("steps", ("--steps", "--max_steps"), int, "optimizer steps (default: --epochs epochs); overrides --epochs"),
    Opt("epochs", ("--epochs", "--num_train_epochs"), float, "passes over the dataset (default 1; fractions allowed)"),
    Opt("resume", ("--resume",), None, "continue from the latest checkpoint in --output"),
    Opt("batch_size", ("--batch-size", "--per_device_train_batch_size"), int,
        "examples (prompts) per process per micro-step (default 8)"),
    Opt("grad_accum", ("--grad-accum", "--gradient_accumulation_steps"), int, "gradient accumulation steps (default 1)"),
    Opt("learning_rate", ("--lr", "--learning_rate"), float,
        "learning rate (default 1e-5; 3e-3 for the embedded model, 1e-3 for its warm-started tool model)"),
    Opt("critic_lr", ("--critic-lr",), float,
        "learning rate of the spec's separate critics (default: the policy's × the critic's lr_scale)"),
    Opt("warmup_ratio", ("--warmup-ratio", "--warmup_ratio"), float, "linear warm-up share of the steps (default 0.1)"),
    Opt("weight_decay", ("--weight-decay", "--weight_decay"), float, "AdamW weight decay (default 0)"),
    Opt("max_grad_norm", ("--max-grad-norm", "--max_grad_norm"), float,
        "clip the gradient norm (default 1; 0: no clipping)"),
    Opt("nonfinite_grads", ("--nonfinite-grads",), str, "a step whose loss or gradient is not finite: stop naming "
        "the node (default), or skip its update and count it", choices=("stop", "skip")),
    Opt("max_skipped_steps", ("--max-skipped-steps",), int,
        "with --nonfinite-grads skip: stop after N skipped steps (default 10)", metavar="N"),
    Opt("max_length", ("--max-length", "--max_length"), int, "prompt + completion tokens (default 512)"),
    Opt("max_prompt_length", ("--max-prompt-length", "--max_prompt_length"), int, "prompt tokens"),
    Opt("step_separator", ("--step-separator",), str, 'stepwise data: text appended to each step (default "\\n"; '
        "a space for the embedded tokenizer)"),
    Opt("chat_template", ("--chat-template",), str, "render conversational data with this Jinja chat template "
        "(replacing the tokenizer's), or `plain`: `role: content` lines; needed for conversational data when the "
        "tokenizer has no template", metavar="FILE|plain"),
    Opt("seed", ("--seed",), int, "random seed (default 0)"),
    Opt("max_examples", ("--max-examples",), int, "use only the first N usable rows of the dataset (of each source)"),
    Opt("skip_invalid_rows", ("--skip-invalid-rows",), None, "drop the dataset rows that do not fit the method's "
        "data kind (counted, the first few shown) instead of stopping before step 1"),
    Opt("eval_data", ("--eval-data", "--eval_dataset"), str, "held-out rows to evaluate on (eval/ rows in "
        "metrics.jsonl), as --data; default: a DatasetDict's `test` split", many=True, metavar="[NAME=]PATH"),
    Opt("eval_steps", ("--eval-steps", "--eval_steps"), int, "evaluate every N steps (default 0: once, at the end)",
        metavar="N"),
    Opt("log_samples", ("--log-samples",), int, "write N held-out prompts with the policy's greedy completion and "
        "reward to samples.jsonl at each evaluation", metavar="N"),
    Opt("save_steps", ("--save-steps", "--save_steps"), int, "checkpoint every N steps (default 0: final model only)"),
    Opt("log_steps", ("--log-steps", "--logging_steps"), int, "print metrics every N steps (default 10)"),
    Opt("mixed_precision", ("--mixed-precision",), str, "default no", choices=("no", "bf16", "fp16")),
    Opt("mixed_precision", ("--bf16",), None, "= --mixed-precision bf16", switch="bf16"),
    Opt("mixed_precision", ("--fp16",), None, "= --mixed-precision fp16", switch="fp16"),
    Opt("precompute", ("--no-precompute",), None, "run frozen data-only queries at every step", switch=False),
    Opt("prefix_sharing", ("--no-prefix-sharing",), None, "encode every row's prompt, even where rows share it "
        "(default: once per prompt when that pays; `ptdsl show` says where)", switch=False),
    Opt("report_to", ("--report-to", "--report_to"), str, "also send the metrics to this reporter, which writes "
        "under --output (wandb offline, mlflow file store, trackio local)",
        choices=("tensorboard", "wandb", "mlflow", "trackio"), many=True),
    Opt("metric_names", ("--metric-names",), str, "the metric names --report-to gets: the spec's (default) or "
        "TRL's (rewards/chosen, …; docs/metrics.md); metrics.jsonl keeps the spec's", choices=("ptdsl", "trl")),
    Opt("generator", ("--generator",), str, "how completions are sampled: hf (transformers' generate, default) or "
        "vllm (a vLLM engine in this process, weights pushed after each step; CUDA and `pip install "
        "'ptdsl[vllm]'`)", choices=("hf", "vllm")),
    Opt("async_staleness", ("--async-staleness",), int, "generate up to K policy versions ahead of training, in a "
        "worker with its own copy of the weights; `old` is the sampling version's (default 0: synchronous; "
        "docs/scaling.md)", metavar="K"),
    Opt("rollout.temperature", ("--temperature",), float, "override the rollout sampling temperature"),
    Opt("rollout.max_tokens", ("--max-tokens", "--max_completion_length"), int,
        "override the rollout's maximum completion tokens"),
    Opt("lora_r", ("--lora-r", "--lora_r"), int, "train LoRA adapters of this rank (needs peft); a frozen(policy) "
        "reference is then the base model with adapters disabled"),
    Opt("lora_alpha", ("--lora-alpha", "--lora_alpha"), int, "LoRA alpha (default 16)"),
    Opt("lora_dropout", ("--lora-dropout", "--lora_dropout"), float, "dropout on the LoRA adapters' input (default 0)"),
    Opt("lora_target_modules", ("--lora-target-modules", "--lora_target_modules"), str,
        "comma-separated module names to adapt, e.g. q_proj,v_proj (default all-linear)", metavar="NAMES"),
    Opt("lora_path", ("--lora-path",), str, "a saved LoRA adapter (a LoRA run's final/) to train further",
        metavar="DIR"),
    Opt("torch_dtype", ("--torch-dtype", "--torch_dtype", "--dtype"), str, "the models' weights dtype "
        "(default: float32; auto: as saved)", choices=("auto", "float32", "bfloat16", "float16")),
    Opt("attn_implementation", ("--attn-implementation", "--attn_implementation"), str,
        "transformers' attention implementation: eager, sdpa, flash_attention_2, …", metavar="NAME"),
    Opt("gradient_checkpointing", ("--gradient-checkpointing", "--gradient_checkpointing"), None,
        "recompute the policy's layer activations in backward (less memory, more time)"),
    Opt("quiet", ("--quiet",), None, "print nothing but errors"),
)


def add_to(parser) -> None:
    """Every option of the table as a flag of `parser`, absent = None."""
    for o in OPTS:
        kw = {"dest": o.key, "default": None, "help": o.help}
        if o.type is None:
            kw.update(action="store_const", const=o.switch)
        else:
            kw.update(type=o.type, action="append" if o.many else "store")
            if o.choices:
                kw["choices"] = list(o.choices)
            if o.metavar:
                kw["metavar"] = o.metavar
        parser.add_argument(*o.flags, **kw)


def config_names() -> dict[str, Opt]:
    """Config-file key → option: the train() keyword and every flag's name, with `-` or `_`
    (`learning_rate`, `lr`, `batch-size`, `per_device_train_batch_size`, …)."""
    names: dict[str, Opt] = {}
    for o in OPTS:
        spellings = {o.key, o.key.split(".")[-1]} | {f.lstrip("-") for f in o.flags}
        for s in spellings:
            names.setdefault(s, o)
            names.setdefault(s.replace("-", "_"), o)
    return names


def flag_names() -> list[str]:
    return [f for o in OPTS for f in o.flags]
