"""Issue 11's promise: a TRL user's environment class trains unchanged under `ptdsl train`.

`Abacus` below is written for TRL 1.16's `GRPOTrainer(environment_factory=Abacus)` in TRL's
documented convention, with nothing of ptdsl in it: `reset(**kwargs)` receives the dataset row,
a typed tool method with a Google-style docstring, and `get_reward()` owning the episode's reward.
The same class (imported from this file, not copied) trains one step under TRL and two under
`ptdsl train` from the command line (`--env abacus=MODULE:Abacus`, a spec whose episodes play it
and whose reward is its `get_reward`), on the embedded tool model, warm-started to call a
`calculate(expression)` tool; both runs must finish and must have called the tool, which each
reports in its own metrics (TRL: `tools/call_frequency`; ptdsl: `episode/tool_calls`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trl_harness import needs_trl

ROOT = Path(__file__).resolve().parents[2]
G, PROMPTS, MAX_TOKENS = 8, 2, 40


class Abacus:
    """A TRL environment: answer `a+b=` with the help of an abacus that can add."""

    def reset(self, **kwargs) -> str | None:
        self.answer = str(kwargs["answer"])
        self.shown = None
        return None

    def calculate(self, expression: str) -> str:
        """Add up the numbers in an expression such as "12+30".

        Args:
            expression: Integers joined by +.
        """
        try:
            self.shown = str(sum(int(part) for part in expression.split("+")))
        except ValueError:
            return "Error: only integers joined by + are allowed"
        return self.shown

    def get_reward(self) -> float:
        return 1.0 if self.shown == self.answer else 0.0


def _spec(tmp_path: Path) -> str:
    """grpo_tools with the environment's own reward (TRL: `get_reward` owns the reward)."""
    text = (ROOT / "methods" / "grpo_tools.ptdsl").read_text()
    text = text.replace('verifier("final_answer")', 'environment("abacus")')
    text = text.replace('environment("calculator")', 'environment("abacus")')
    text = text.replace("method grpo_tools ", "method abacus_tools ")
    assert text.count('environment("abacus")') == 2
    path = tmp_path / "abacus_tools.ptdsl"
    path.write_text(text)
    return str(path)


def _setup(tmp_path: Path):
    """The embedded tool model and tokenizer saved where both trainers load them, and the rows."""
    from ptdsl.runtime import embedded_tools
    tok = embedded_tools.tokenizer()
    embedded_tools.model(tok, seed=0, log=lambda *_: None).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    rows = embedded_tools.dataset(16, seed=3)
    with open(tmp_path / "rows.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return rows


def _train_with_trl(tmp_path: Path, rows: list[dict]) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
                            "answer": [r["answer"] for r in rows]})
    cfg = GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=PROMPTS * G, num_generations=G,
                     max_completion_length=MAX_TOKENS, max_tool_calling_iterations=3, learning_rate=1e-3,
                     beta=0.0, max_steps=1, logging_steps=1, gradient_checkpointing=False, save_strategy="no", report_to="none",
                     disable_tqdm=True, use_cpu=True, seed=0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tmp_path / "model"), args=cfg,
                          processing_class=AutoTokenizer.from_pretrained(tmp_path / "model"), train_dataset=ds,
                          environment_factory=Abacus)  # no reward_funcs: get_reward is the reward
    trainer.train()
    return next(h for h in trainer.state.log_history if "tools/call_frequency" in h)


def _train_with_ptdsl(tmp_path: Path) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "ptdsl", "train", _spec(tmp_path), "--model", str(tmp_path / "model"),
                        "--data", str(tmp_path / "rows.jsonl"), "--env", f"abacus={Path(__file__).stem}:Abacus",
                        "--set", f"num_generations={G}", "--set", f"max_completion_length={MAX_TOKENS}",
                        "--steps", "2", "--batch-size", str(PROMPTS), "--lr", "1e-3", "--log-steps", "1",
                        "--output", str(tmp_path / "out"), "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)])})
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]


@needs_trl
@pytest.mark.integration
def test_a_trl_environment_class_trains_unchanged_under_trl_and_ptdsl_train(tmp_path):
    import torch
    rows = _setup(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only spin at barriers on a busy machine
    try:
        trl = _train_with_trl(tmp_path, rows)
    finally:
        torch.set_num_threads(threads)
    # the reward is get_reward's: 1 only where the abacus showed the sum, so never above the tool use
    assert 0 < trl["rewards/Abacus/mean"] <= trl["tools/call_frequency"]
    steps = _train_with_ptdsl(tmp_path)
    assert len(steps) == 2
    assert sum(s["mean_reward"] for s in steps) > 0
    assert all(s["mean_reward"] <= s["episode/tool_calls"] and 1.0 <= s["episode/turns"] <= 4.0 for s in steps)
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
