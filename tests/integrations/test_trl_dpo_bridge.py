"""`ptdsl.integrations.trl.DPOTrainer`: a spec's loss inside TRL 1.16's DPOTrainer.

On one batch of TRL's own (its tokenisation and collation; a tiny random Llama, policy and
reference with different weights), the bridge's loss with the spec that matches a TRL loss
(dpo: sigmoid, ld_dpo: ld_alpha) equals TRL's trainer's loss, and with any spec equals an
independent computation: each row run alone through the model with Hugging Face's forward
(unpadded, no fused head), its completion's log-probs given to `ptdsl.compile(spec).loss`; its
leaves equal those ptdsl's own trainer makes. Tolerance 1e-5 (float32; the fused head, padding
and packing change summation order only).
"""
from __future__ import annotations

import pytest
import torch

import ptdsl
from ptdsl.runtime import embedded
from trl_bridge_setup import (ATOL, DPO_ROWS, common_args, dpo_trainer, first_batch, models, padded, quiet,
                              row_logps)
from trl_harness import needs_trl


def _dpo_leaves(trainer, batch) -> dict:
    """Every DPO leaf, each row alone through HF's forward; TRL's rows are [chosen; rejected]."""
    ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    half = ids.size(0) // 2
    leaves = {}
    for part, name in enumerate(("chosen", "rejected")):
        rows = range(part * half, (part + 1) * half)
        for model, who in ((trainer.model, "policy"), (trainer.ref_model, "reference")):
            values, mask = padded([row_logps(model, ids[i][attention[i].bool()], completion[i][attention[i].bool()])
                                    for i in rows])
            leaves[f"logprobs({who}, {name})"], leaves[f"mask({name})"] = values, mask
    return leaves


@needs_trl
def test_dpo_bridge_adds_the_routers_loss_of_a_mixture_of_experts_as_trl(tmp_path):
    from trl import DPOTrainer as TRLDPOTrainer

    from ptdsl.integrations.trl import DPOTrainer
    tok = embedded.tokenizer()
    ours = dpo_trainer(tmp_path / "ours", DPOTrainer, tok, moe=True, method="dpo")
    theirs = dpo_trainer(tmp_path / "theirs", TRLDPOTrainer, tok, moe=True, beta=0.1, loss_type=["sigmoid"])
    assert ours.aux_loss_enabled
    batch = first_batch(ours)
    loss = ours.compute_loss(ours.model, batch).item()
    assert abs(loss - theirs.compute_loss(theirs.model, batch).item()) < ATOL
    assert ours._metrics["train"]["aux_loss"] == pytest.approx(theirs._metrics["train"]["aux_loss"]) != [0.0]


@needs_trl
def test_dpo_bridge_gives_trls_sigmoid_loss_and_ptdsls_own(tmp_path):
    from trl import DPOTrainer as TRLDPOTrainer

    from ptdsl.integrations.trl import DPOTrainer
    tok = embedded.tokenizer()
    ours = dpo_trainer(tmp_path / "ours", DPOTrainer, tok, method="dpo", params={"beta": 0.1})
    theirs = dpo_trainer(tmp_path / "theirs", TRLDPOTrainer, tok, beta=0.1, loss_type=["sigmoid"])
    batch = first_batch(ours)
    assert torch.equal(batch["input_ids"], first_batch(theirs)["input_ids"])
    loss = ours.compute_loss(ours.model, batch)
    expected, metrics = ptdsl.compile("dpo", beta=0.1).loss(_dpo_leaves(ours, batch))
    assert abs(loss.item() - theirs.compute_loss(theirs.model, batch).item()) < ATOL
    assert abs(loss.item() - expected.item()) < ATOL and abs(loss.item() - 0.6931) > 1e-3  # not at z = 0
    logged = ours._metrics["train"]
    assert abs(logged["dpo/reward_margin"][0] - metrics["reward_margin"].item()) < ATOL
    loss.backward()   # the policy gets gradients through the packed leaves
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.model.parameters())


@needs_trl
@pytest.mark.integration
def test_dpo_bridge_leaves_are_ptdsls_own_runtime_leaves(tmp_path, monkeypatch):
    """The bridge's `logprobs(policy, S)` and `mask(S)` on TRL's batch equal those ptdsl's own
    trainer hands the loss for the same rows (its first step, same weights; rows by prompt)."""
    from ptdsl.integrations.trl import DPOTrainer
    from ptdsl.runtime import loop
    tok = embedded.tokenizer()
    ours = dpo_trainer(tmp_path / "ours", DPOTrainer, tok, method="dpo")
    runtime, make = {}, loop.loss_inputs

    def spy(ctx, batch):
        out = make(ctx, batch)
        runtime.setdefault("rows", [e.prompt_text for e in batch.examples])
        runtime.setdefault("leaves", {k: v.detach().clone() for k, v in out.items()})
        return out
    monkeypatch.setattr(loop, "loss_inputs", spy)
    from datasets import Dataset
    rows = Dataset.from_dict({k: [r[i] for r in DPO_ROWS] for i, k in enumerate(("prompt", "chosen", "rejected"))})
    quiet(ptdsl.train, "dpo", data=rows, model=models(tok)[0], tokenizer=tok, output=str(tmp_path / "ptdsl"),
           steps=1, batch_size=len(DPO_ROWS), quiet=True)
    bridge, loss = {}, ours.compiled_method.loss

    def keep(leaves, **kw):
        bridge.update(leaves)
        return loss(leaves, **kw)
    monkeypatch.setattr(ours.compiled_method, "loss", keep)
    batch = first_batch(ours)
    ours.compute_loss(ours.model, batch)
    prompts = [tok.decode(ids[(m == 0) & (a == 1)], skip_special_tokens=True) for ids, m, a in
               zip(batch["input_ids"], batch["completion_mask"], batch["attention_mask"], strict=True)]
    order = [prompts.index(p) for p in runtime["rows"]]
    for name in ("logprobs(policy, chosen)", "logprobs(policy, rejected)", "mask(chosen)", "mask(rejected)"):
        theirs, mine = runtime["leaves"][name], bridge[name][order].detach()
        assert theirs.shape == mine.shape, name
        assert torch.allclose(mine.float(), theirs.float(), atol=ATOL), name


@needs_trl
def test_dpo_bridge_with_a_lora_adapter_takes_the_reference_with_the_adapter_off(tmp_path):
    """With PEFT TRL keeps no reference model: the reference is the policy with its adapter off."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig
    from trl import DPOTrainer as TRLDPOTrainer

    from ptdsl.integrations.trl import DPOTrainer
    tok = embedded.tokenizer()
    data = Dataset.from_dict({k: [r[i] for r in DPO_ROWS] for i, k in enumerate(("prompt", "chosen", "rejected"))})
    trainers = []
    for cls, extra in ((DPOTrainer, {"method": "dpo"}), (TRLDPOTrainer, {})):
        cfg = DPOConfig(**common_args(tmp_path / cls.__module__), per_device_train_batch_size=len(DPO_ROWS),
                        beta=0.1, loss_type=["sigmoid"])
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
        trainer = quiet(cls, embedded.model(tok, 0), args=cfg, train_dataset=data, processing_class=tok,
                         peft_config=lora, **extra)
        torch.manual_seed(3)   # the adapter moves the policy away from the reference
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.5)
        trainers.append(trainer)
    ours, theirs = trainers
    assert ours.ref_model is None
    batch = first_batch(ours)
    loss = ours.compute_loss(ours.model, batch).item()
    assert abs(loss - theirs.compute_loss(theirs.model, batch).item()) < ATOL and abs(loss - 0.6931) > 1e-3


@needs_trl
def test_dpo_bridge_runs_the_specs_loss_not_trls(tmp_path):
    from trl import DPOTrainer as TRLDPOTrainer

    from ptdsl.integrations.trl import DPOTrainer
    tok = embedded.tokenizer()
    ours = dpo_trainer(tmp_path / "ours", DPOTrainer, tok, method="ipo", params={"beta": 0.1}, loss_type=["sigmoid"])
    sigmoid = dpo_trainer(tmp_path / "theirs", TRLDPOTrainer, tok, beta=0.1, loss_type=["sigmoid"])
    batch = first_batch(ours)
    loss = ours.compute_loss(ours.model, batch).item()
    expected, _ = ptdsl.compile("ipo", beta=0.1).loss(_dpo_leaves(ours, batch))
    assert abs(loss - expected.item()) < ATOL
    assert abs(loss - sigmoid.compute_loss(sigmoid.model, batch).item()) > 1e-2


@needs_trl
def test_dpo_bridge_with_a_position_reading_spec_gives_trls_ld_alpha_loss(tmp_path):
    """ld_dpo reads `position(chosen)` and `length(chosen)` of the bridge's leaves (packed from
    TRL's prompt-first rows); on TRL's batch it is TRL's own ld_alpha loss."""
    from trl import DPOTrainer as TRLDPOTrainer

    from ptdsl.integrations.trl import DPOTrainer
    tok = embedded.tokenizer()
    ours = dpo_trainer(tmp_path / "ours", DPOTrainer, tok, method="ld_dpo", params={"ld_alpha": 0.5})
    theirs = dpo_trainer(tmp_path / "theirs", TRLDPOTrainer, tok, beta=0.1, loss_type=["sigmoid"], ld_alpha=0.5)
    plain = dpo_trainer(tmp_path / "plain", TRLDPOTrainer, tok, beta=0.1, loss_type=["sigmoid"])
    batch = first_batch(ours)
    loss = ours.compute_loss(ours.model, batch).item()
    assert abs(loss - theirs.compute_loss(theirs.model, batch).item()) < ATOL
    assert abs(loss - plain.compute_loss(plain.model, batch).item()) > 1e-4   # ld_alpha acts on this batch


def test_bridge_refuses_a_trl_other_than_1_16(monkeypatch):
    import importlib
    import sys
    trl = pytest.importorskip("trl")
    monkeypatch.setattr(trl, "__version__", "1.17.0")
    monkeypatch.delitem(sys.modules, "ptdsl.integrations.trl", raising=False)
    with pytest.raises(ImportError, match=r"needs trl 1.16 \(found 1.17.0\)"):
        importlib.import_module("ptdsl.integrations.trl")


@needs_trl
@pytest.mark.parametrize("method, params, config, needle", [
    ("kto", {}, {}, "`logprobs(policy, completion)`"),
    ("dpo", {}, {"precompute_ref_log_probs": True}, "precompute_ref_log_probs=True"),
])
def test_dpo_bridge_refuses_leaves_it_cannot_supply(tmp_path, method, params, config, needle):
    from ptdsl.integrations.trl import BridgeError, DPOTrainer
    with pytest.raises(BridgeError, match="cannot run in TRL's DPOTrainer") as e:
        dpo_trainer(tmp_path, DPOTrainer, embedded.tokenizer(), method=method, params=params, **config)
    assert needle in str(e.value)
    help_line = f"\n  = help: {e.value.help}"   # in the text a script's traceback shows, once when rendered
    assert e.value.help and help_line in str(e.value) and e.value.render().count("= help:") == 1
