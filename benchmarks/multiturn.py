"""grpo.py's multi-turn configuration (issue 11): ptdsl's `grpo_tools` step vs TRL 1.16's
GRPOTrainer with `environment_factory`, on the same environment, model and settings.

The task is the embedded tool task (ptdsl/runtime/embedded_tools.py): prompts `372+458=`, the
built-in `calculator` environment (runtime/calculator.py: a class in TRL's environment_factory
convention, one `calculate` tool) and its `answer_reward` (TRL's reward-function signature),
scored as the verifier `final_answer`. The model is the embedded tiny Llama warm-started on
tool-use demonstrations; `prepare` saves it and its tokenizer (chat template with tools, and the
transformers `response_template` both sides parse tool calls with) once, and both workers load
that directory. Both play the same environment class, counted: a subclass whose `calculate`
adds one to the worker's clock, so the tool-call rate of each side is counted the same way,
outside either framework's metrics.

Settings, the same on both sides: PROMPTS prompts × GROUP episodes per step, an episode budget
of MAX_TOKENS completion tokens (policy and inserted tokens), at most MAX_TURNS policy turns
(TRL: `max_tool_calling_iterations = MAX_TURNS − 1`, the rounds of tool results after the first
turn), temperature 1.0 (top_p 1, top_k 0), β = 0, AdamW at LR with clipping at 1.0, no vLLM.
The rows are the same; each side shuffles them with its own sampler. TRL runs twice: with its
defaults otherwise (gradient checkpointing on, as in grpo.py's other tables) and with
`gradient_checkpointing=False`, ptdsl's default, so that the ratio is not won by checkpointing.
"""
from __future__ import annotations

import json
from pathlib import Path

PROMPTS, GROUP, MAX_TOKENS, MAX_TURNS, LR = 2, 8, 40, 3, 1e-6
NAMES = ("ptdsl_tools", "trl_tools", "trl_tools_nockpt")
LABELS = {"ptdsl_tools": "ptdsl `grpo_tools` (`ptdsl.train`)",
          "trl_tools": "TRL 1.16 GRPOTrainer(environment_factory=…)",
          "trl_tools_nockpt": "TRL, `gradient_checkpointing=False`"}


def prepare(workdir: Path, n_prompts: int):
    """The warm-started tool model and its tokenizer, saved once for both workers, and the rows."""
    from ptdsl.runtime import embedded_tools
    tok = embedded_tools.tokenizer()
    model = embedded_tools.model(tok, seed=0, log=lambda *_: None)
    model.save_pretrained(workdir / "tools_model")
    tok.save_pretrained(workdir / "tools_model")
    with open(workdir / "tools_rows.jsonl", "w") as f:
        for row in embedded_tools.dataset(n_prompts, seed=1):
            f.write(json.dumps(row) + "\n")


def _rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in open(workdir / "tools_rows.jsonl")]


def counted_calculator(clock):
    """The built-in Calculator, its tool calls counted on `clock.tools` (signature and docstring
    kept: both frameworks build the tool's schema from them)."""
    from ptdsl.runtime.calculator import Calculator

    class CountedCalculator(Calculator):
        def calculate(self, expression: str) -> str:
            clock.tools += 1
            return super().calculate(expression)

    CountedCalculator.calculate.__doc__ = Calculator.calculate.__doc__
    return CountedCalculator


def timed_reward(clock):
    """`answer_reward`, its time counted as the reward phase."""
    import time
    from ptdsl.runtime.calculator import answer_reward

    def final_answer(prompts, completions, answer, **kw):
        t0 = time.perf_counter()
        try:
            return answer_reward(prompts, completions, answer, **kw)
        finally:
            clock.reward += (time.perf_counter() - t0) * 1000
    return final_answer


def run_ptdsl(workdir: Path, steps: int, clock, timer):
    import ptdsl
    ptdsl.rewards.register("final_answer")(timed_reward(clock))
    ptdsl.train("grpo_tools", model=str(workdir / "tools_model"), data=str(workdir / "tools_rows.jsonl"),
                output=str(workdir / "out_ptdsl_tools"), envs={"calculator": counted_calculator(clock)},
                params={"num_generations": GROUP, "max_completion_length": MAX_TOKENS, "max_turns": MAX_TURNS,
                        "temperature": 1.0},
                steps=steps, batch_size=PROMPTS, learning_rate=LR, warmup_ratio=0.0, max_grad_norm=1.0,
                log_steps=10 ** 9, quiet=True, callbacks=[timer])


def run_trl(workdir: Path, steps: int, clock, callback, checkpointing: bool = True):
    import os
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # environment_factory's warning
    tok = AutoTokenizer.from_pretrained(workdir / "tools_model")
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(workdir / "tools_model")
    rows = _rows(workdir)
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
                            "answer": [r["answer"] for r in rows]})
    cfg = GRPOConfig(output_dir=str(workdir / "out_trl_tools"), per_device_train_batch_size=PROMPTS * GROUP,
                     num_generations=GROUP, max_completion_length=MAX_TOKENS,
                     max_tool_calling_iterations=MAX_TURNS - 1, temperature=1.0, top_p=1.0, top_k=0, beta=0.0,
                     loss_type="grpo", learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=1.0,
                     max_steps=steps, logging_steps=10 ** 6, save_strategy="no", report_to="none",
                     disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0,
                     gradient_checkpointing=checkpointing)
    trainer = GRPOTrainer(model=model, reward_funcs=[timed_reward(clock)], args=cfg, train_dataset=ds,
                          processing_class=tok, environment_factory=counted_calculator(clock), callbacks=[callback])
    trainer.train()


def settings_line() -> str:
    return (f"The embedded tool task (`372+458=`, the built-in `calculator` environment, reward `final_answer`) "
            f"on the embedded tiny Llama (hidden 64, 2 layers, character vocabulary) warm-started on tool-use "
            f"demonstrations, saved once and loaded by both; {PROMPTS} prompts × {GROUP} episodes = "
            f"{PROMPTS * GROUP} episodes per step, at most {MAX_TURNS} policy turns (TRL: "
            f"`max_tool_calling_iterations = {MAX_TURNS - 1}`), an episode budget of {MAX_TOKENS} completion "
            f"tokens, temperature 1.0, β = 0, AdamW lr {LR:g} + clipping, transformers `generate`, no vLLM. "
            "Tool calls are counted by the environment class itself (the same counting subclass on both sides).")
