"""`ptdsl train METHOD …`: train with a compiled method (runtime/loop.py).

With no --model and --data it runs the embedded default: a tiny model with random
weights, a character tokenizer and synthetic arithmetic data of the method's kind.
Under several processes: `accelerate launch -m ptdsl train …`."""
from __future__ import annotations

import sys


def register(sub) -> None:
    s = sub.add_parser("train", help="train a model with a method (embedded default without --model/--data)")
    s.add_argument("method")
    s.add_argument("--model", help="model id or local path (default: the embedded tiny model)")
    s.add_argument("--data", action="append", metavar="[NAME=]PATH",
                   help="dataset: local .json/.jsonl/.parquet, saved dataset dir, or hub name; for a method "
                        "with several sources, NAME=PATH once per source")
    s.add_argument("--reward-fn", action="append", default=[], metavar="[NAME=]MODULE:FUNCTION",
                   help="a verifier, imported from the named module")
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a method parameter")
    s.add_argument("--output", default="out", help="output directory (metrics.jsonl, checkpoints, final/)")
    s.add_argument("--steps", type=int, help="optimizer steps (default: one epoch)")
    s.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output")
    s.add_argument("--batch-size", type=int, default=8, help="examples (prompts) per process per micro-step")
    s.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    s.add_argument("--lr", type=float, help="learning rate (default 1e-5; 3e-3 for the embedded model)")
    s.add_argument("--critic-lr", type=float, help="learning rate of the spec's separate critics (default: the "
                   "policy's × the critic's lr_scale)")
    s.add_argument("--warmup-ratio", type=float, default=0.1)
    s.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the gradient norm (0: no clipping)")
    s.add_argument("--nonfinite-grads", choices=["stop", "skip"], default="stop",
                   help="a step whose loss or gradient is not finite: stop naming the node (default), or skip "
                        "its update and count it")
    s.add_argument("--max-skipped-steps", type=int, default=10, metavar="N",
                   help="with --nonfinite-grads skip: stop after N skipped steps (default 10)")
    s.add_argument("--max-length", type=int, default=512)
    s.add_argument("--max-prompt-length", type=int)
    s.add_argument("--step-separator", help='stepwise data: text appended to each step (default "\\n"; '
                   'a space for the embedded tokenizer)')
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-examples", type=int, help="use only the first N usable rows of the dataset (of each source)")
    s.add_argument("--skip-invalid-rows", action="store_true", help="drop the dataset rows that do not fit the "
                   "method's data kind (counted, the first few shown) instead of stopping before step 1")
    s.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: final model only)")
    s.add_argument("--log-steps", type=int, default=10)
    s.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    s.add_argument("--no-precompute", action="store_true", help="run frozen data-only queries at every step")
    s.add_argument("--no-prefix-sharing", action="store_true", help="encode every row's prompt, even where rows "
                   "share it (default: once per prompt when that pays; `ptdsl show` says where)")
    s.add_argument("--report-to", action="append", default=[], choices=["tensorboard", "trackio"])
    s.add_argument("--temperature", type=float, help="override the rollout sampling temperature")
    s.add_argument("--max-tokens", type=int, help="override the rollout's maximum completion tokens")
    s.add_argument("--lora-r", type=int, default=0, help="train LoRA adapters of this rank (needs peft); "
                   "a frozen(policy) reference is then the base model with adapters disabled")
    s.add_argument("--lora-alpha", type=int, default=16)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_train)


def cmd_train(args) -> int:
    from ptdsl.cli.main import parse_overrides
    from ptdsl.runtime.errors import RuntimeSetupError
    from ptdsl.runtime.loop import train
    rollout = {k: v for k, v in (("temperature", args.temperature), ("max_tokens", args.max_tokens)) if v is not None}
    try:
        train(args.method, model=args.model, data=args.data, reward_fns=args.reward_fn,
              params=parse_overrides(args.set), output=args.output, steps=args.steps, resume=args.resume,
              batch_size=args.batch_size, grad_accum=args.grad_accum, learning_rate=args.lr,
              critic_lr=args.critic_lr,
              warmup_ratio=args.warmup_ratio, max_grad_norm=args.max_grad_norm, max_length=args.max_length,
              nonfinite_grads=args.nonfinite_grads, max_skipped_steps=args.max_skipped_steps,
              max_prompt_length=args.max_prompt_length, seed=args.seed, max_examples=args.max_examples,
              skip_invalid_rows=args.skip_invalid_rows, save_steps=args.save_steps,
              log_steps=args.log_steps, mixed_precision=args.mixed_precision, precompute=not args.no_precompute,
              prefix_sharing=not args.no_prefix_sharing,
              report_to=tuple(args.report_to), rollout=rollout, quiet=args.quiet, lora_r=args.lora_r,
              lora_alpha=args.lora_alpha, step_separator=args.step_separator)
    except RuntimeSetupError as err:
        print(err.render(), file=sys.stderr)
        return 1
    return 0
