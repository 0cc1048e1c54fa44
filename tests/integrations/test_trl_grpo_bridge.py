"""`ptdsl.integrations.trl.GRPOTrainer`: a spec's loss inside TRL 1.16's GRPOTrainer, and both
bridges through TRL's own `train()`.

On one generation batch of TRL's own (fixed completions and rewards injected), the bridge's loss
with grpo equals TRL's `loss_type="grpo"` loss and an independent computation (each row alone
through Hugging Face's forward, `ptdsl.compile("grpo").loss` on TRL's raw rewards). Tolerance
1e-5 (float32).
"""
from __future__ import annotations

import pytest
import torch

import ptdsl
from ptdsl.runtime import embedded
from trl_bridge_setup import (ATOL, COMPLETIONS, G, PROMPTS, REWARDS, dpo_trainer, generation, grpo_trainer,
                              padded, quiet, row_logps)
from trl_harness import needs_trl


def _grpo_leaves(trainer, batch) -> dict:
    rows = []
    for i in range(batch["completion_ids"].size(0)):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
        completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()]
        ids = torch.cat([prompt, completion])
        rows.append(row_logps(trainer.model, ids, torch.cat([torch.zeros_like(prompt), torch.ones_like(completion)])))
    logps, mask = padded(rows)
    rewards = torch.tensor([REWARDS[p, c] for p in PROMPTS for c in COMPLETIONS[p]])
    return {"logprobs(policy, y)": logps, "logprobs(old, y)": logps, "mask(y)": mask, "r(y)": rewards}


@needs_trl
@pytest.mark.parametrize("scale, moe", [(True, False), (False, False), (True, True)])
def test_grpo_bridge_gives_trls_loss_from_the_raw_rewards(tmp_path, scale, moe):
    from trl import GRPOTrainer as TRLGRPOTrainer

    from ptdsl.integrations.trl import REWARDS as KEY
    from ptdsl.integrations.trl import GRPOTrainer
    tok = embedded.tokenizer()
    params = {"num_generations": G, "scale_rewards": scale}
    ours = grpo_trainer(tmp_path / "ours", GRPOTrainer, tok, moe=moe, method="grpo", params=params)
    theirs = grpo_trainer(tmp_path / "theirs", TRLGRPOTrainer, tok, moe=moe, loss_type="grpo",
                   scale_rewards="group" if scale else "none")
    # ours keeps TRL's default advantages (scale_rewards="group") in its batch: the spec's own
    # formula, on the raw rewards, is what must act
    batch, their_batch = generation(ours), generation(theirs)
    assert torch.equal(batch["completion_ids"], their_batch["completion_ids"])
    assert batch[KEY].tolist() == [REWARDS[p, c] for p in PROMPTS for c in COMPLETIONS[p]]
    leaves = _grpo_leaves(ours, batch)
    # off-policy rows (old ≠ policy), so the ratio, its clipping and the advantages all count
    old = leaves["logprobs(old, y)"] - 0.3 * leaves["mask(y)"]
    for b in (batch, their_batch):
        b["old_per_token_logps"] = torch.zeros_like(b["completion_mask"], dtype=torch.float32)
        b["old_per_token_logps"][b["completion_mask"].bool()] = old[leaves["mask(y)"]]
    loss = ours.compute_loss(ours.model, batch)
    expected, metrics = ptdsl.compile("grpo", **params).loss({**leaves, "logprobs(old, y)": old})
    assert abs(loss.item() - theirs.compute_loss(theirs.model, their_batch).item()) < ATOL
    if moe:   # TRL adds the router's loss; the spec's own is what the independent forward gives
        assert ours.aux_loss_enabled and abs(loss.item() - expected.item()) > 1e-3
        assert ours._metrics["train"]["aux_loss"] == pytest.approx(theirs._metrics["train"]["aux_loss"])
    else:
        assert abs(loss.item() - expected.item()) < ATOL and abs(loss.item()) > 1e-3
    assert abs(ours._metrics["train"]["grpo/mean_reward"][0] - metrics["mean_reward"].item()) < ATOL


@needs_trl
def test_grpo_micro_batches_keep_whole_groups(tmp_path):
    from ptdsl.integrations.trl import REWARDS as KEY
    from ptdsl.integrations.trl import GRPOTrainer
    tok = embedded.tokenizer()
    ours = grpo_trainer(tmp_path, GRPOTrainer, tok, rows=G, method="grpo", params={"num_generations": G},
                 steps_per_generation=2, gradient_accumulation_steps=2)
    for trial in range(4):
        torch.manual_seed(trial)
        ours._step, ours._buffered_inputs = 0, None
        first = ours._prepare_inputs([{"prompt": p} for p in PROMPTS for _ in range(G)])
        second = ours._buffered_inputs[1]
        for part in (first, second):   # one prompt's G completions, in their order
            assert part[KEY].tolist() in ([REWARDS[p, c] for c in COMPLETIONS[p]] for p in PROMPTS)


# --- TRL's train() with the bridge -------------------------------------------------------------


@needs_trl
@pytest.mark.integration
def test_trl_train_runs_the_bridges_and_logs_the_methods_metrics(tmp_path):
    from ptdsl.integrations.trl import DPOTrainer, GRPOTrainer
    tok = embedded.tokenizer()
    dpo = dpo_trainer(tmp_path / "dpo", DPOTrainer, tok, method="dpo")
    grpo = grpo_trainer(tmp_path / "grpo", GRPOTrainer, tok, method="grpo", params={"num_generations": G})
    for trainer, metric in ((dpo, "dpo/reward_margin"), (grpo, "grpo/mean_reward")):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        quiet(trainer.train)
        logs = [h for h in trainer.state.log_history if "loss" in h]
        assert len(logs) == 2 and all(metric in h for h in logs)
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert grpo.state.log_history[0]["grpo/mean_reward"] == pytest.approx(sum(REWARDS.values()) / 8)


@needs_trl
@pytest.mark.parametrize("method, params, needle", [
    ("grpo", {"num_generations": G, "beta": 0.04}, "`logprobs(reference, y)`"),    # TRL's beta = 0: no reference
    ("ppo", {}, "`values(value, y)`"),                                             # a value head
    ("grpo", {"num_generations": 8}, "n = 8 completions"),
    ("seqkd", {}, "samples `y` from `teacher`"),                                    # TRL samples the policy
    ("grpo", {"num_generations": G, "temperature": 0.7}, "scores `y` at temperature 0.7"),
])
def test_grpo_bridge_refuses_specs_it_cannot_run(tmp_path, method, params, needle):
    from ptdsl.integrations.trl import BridgeError, GRPOTrainer
    with pytest.raises(BridgeError) as e:
        grpo_trainer(tmp_path, GRPOTrainer, embedded.tokenizer(), method=method, params=params)
    assert needle in str(e.value)


@needs_trl
def test_grpo_bridge_names_every_completion_no_reward_function_scored(tmp_path, monkeypatch):
    from ptdsl.integrations.trl import BridgeError, GRPOTrainer
    ours = grpo_trainer(tmp_path, GRPOTrainer, embedded.tokenizer(), method="grpo", params={"num_generations": G})
    scored = ours.reward_funcs[0]
    unscored = {("1+2=", "33"), ("7*3=", "9")}
    monkeypatch.setattr(ours, "reward_funcs", [lambda prompts, completions, **kw: [
        None if (p, c) in unscored else r for p, c, r in zip(prompts, completions, scored(prompts, completions))]])
    with pytest.raises(BridgeError, match=r"2 completion\(s\) .* \(rows 2, 7, counted from 0\)"):
        generation(ours)


def test_import_ptdsl_imports_no_integration():
    import subprocess
    import sys
    code = "import sys, ptdsl; print(any(m.startswith(('trl', 'ptdsl.integrations')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
