"""`ptdsl.integrations.trl`: a spec's loss inside TRL 1.16's DPOTrainer and GRPOTrainer.

On one batch of TRL's own (its tokenisation, collation, generation and reward step; a tiny
random Llama, policy and reference with different weights), the bridge's loss with the spec
that matches a TRL loss equals TRL's trainer's loss, and with any spec equals an independent
computation: each row run alone through the model with Hugging Face's forward (unpadded, no
fused head), its completion's log-probs given to `ptdsl.compile(spec).loss`. Tolerance 1e-5
(float32; the fused head, padding and packing change summation order only).
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import ptdsl
from ptdsl.runtime import embedded
from trl_harness import needs_trl

ATOL = 1e-5
DPO_ROWS = [("1+2=", "3", "45"), ("7*3=", "21", "2"), ("9-4=", "5", "13"), ("8+8=", "16", "0")]


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _common(tmp_path) -> dict:
    return dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, seed=0, logging_steps=1,
                save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, learning_rate=1e-2)


def _models(tok, moe: bool = False):
    """Policy and reference with different weights, so β·log(π/π_ref) is not 0; dropout is 0.
    `moe`: a tiny Mixtral, whose router adds TRL's load-balancing loss."""
    if not moe:
        return embedded.model(tok, 0), embedded.model(tok, 1)
    from transformers import MixtralConfig, MixtralForCausalLM
    cfg = MixtralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=4, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=64, pad_token_id=tok.pad_token_id, router_aux_loss_coef=0.5)
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(MixtralForCausalLM(cfg))
    return tuple(out)


# --- DPO ---------------------------------------------------------------------------------------


def _dpo(tmp_path, cls, tok, moe=False, **config):
    from datasets import Dataset
    from trl import DPOConfig
    method = {k: config.pop(k) for k in ("method", "params") if k in config}
    cfg = DPOConfig(**_common(tmp_path), per_device_train_batch_size=len(DPO_ROWS), max_steps=2, **config)
    policy, reference = _models(tok, moe)
    data = Dataset.from_dict({k: [r[i] for r in DPO_ROWS] for i, k in enumerate(("prompt", "chosen", "rejected"))})
    return _quiet(cls, policy, ref_model=reference, args=cfg, train_dataset=data, processing_class=tok, **method)


def _batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def _row_logps(model, ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Log-probs of the `scored` tokens of one unpadded row, from the model's logits."""
    with torch.no_grad():
        logits = model(input_ids=ids.unsqueeze(0)).logits[0, :-1]
    logps = F.log_softmax(logits.float(), dim=-1).gather(1, ids[1:].unsqueeze(1)).squeeze(1)
    return logps[scored[1:].bool()]


def _padded(rows: list[torch.Tensor]):
    width = max(len(r) for r in rows)
    values = torch.zeros(len(rows), width)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        values[i, :len(r)], mask[i, :len(r)] = r, True
    return values, mask


def _dpo_leaves(trainer, batch) -> dict:
    """Every DPO leaf, each row alone through HF's forward; TRL's rows are [chosen; rejected]."""
    ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    half = ids.size(0) // 2
    leaves = {}
    for part, name in enumerate(("chosen", "rejected")):
        rows = range(part * half, (part + 1) * half)
        for model, who in ((trainer.model, "policy"), (trainer.ref_model, "reference")):
            values, mask = _padded([_row_logps(model, ids[i][attention[i].bool()], completion[i][attention[i].bool()])
                                    for i in rows])
            leaves[f"logprobs({who}, {name})"], leaves[f"mask({name})"] = values, mask
    return leaves


@needs_trl
def test_dpo_bridge_adds_the_routers_loss_of_a_mixture_of_experts_as_trl(tmp_path):
    from trl import DPOTrainer as TRLDPOTrainer

    from ptdsl.integrations.trl import DPOTrainer
    tok = embedded.tokenizer()
    ours = _dpo(tmp_path / "ours", DPOTrainer, tok, moe=True, method="dpo")
    theirs = _dpo(tmp_path / "theirs", TRLDPOTrainer, tok, moe=True, beta=0.1, loss_type=["sigmoid"])
    assert ours.aux_loss_enabled
    batch = _batch(ours)
    loss = ours.compute_loss(ours.model, batch).item()
    assert abs(loss - theirs.compute_loss(theirs.model, batch).item()) < ATOL
    assert ours._metrics["train"]["aux_loss"] == pytest.approx(theirs._metrics["train"]["aux_loss"]) != [0.0]


@needs_trl
def test_dpo_bridge_gives_trls_sigmoid_loss_and_ptdsls_own(tmp_path):
    from trl import DPOTrainer as TRLDPOTrainer

    from ptdsl.integrations.trl import DPOTrainer
    tok = embedded.tokenizer()
    ours = _dpo(tmp_path / "ours", DPOTrainer, tok, method="dpo", params={"beta": 0.1})
    theirs = _dpo(tmp_path / "theirs", TRLDPOTrainer, tok, beta=0.1, loss_type=["sigmoid"])
    batch = _batch(ours)
    assert torch.equal(batch["input_ids"], _batch(theirs)["input_ids"])
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
    ours = _dpo(tmp_path / "ours", DPOTrainer, tok, method="dpo")
    runtime, make = {}, loop.loss_inputs

    def spy(ctx, batch):
        out = make(ctx, batch)
        runtime.setdefault("rows", [e.prompt_text for e in batch.examples])
        runtime.setdefault("leaves", {k: v.detach().clone() for k, v in out.items()})
        return out
    monkeypatch.setattr(loop, "loss_inputs", spy)
    from datasets import Dataset
    rows = Dataset.from_dict({k: [r[i] for r in DPO_ROWS] for i, k in enumerate(("prompt", "chosen", "rejected"))})
    _quiet(ptdsl.train, "dpo", data=rows, model=_models(tok)[0], tokenizer=tok, output=str(tmp_path / "ptdsl"),
           steps=1, batch_size=len(DPO_ROWS), quiet=True)
    bridge, loss = {}, ours.compiled_method.loss

    def keep(leaves, **kw):
        bridge.update(leaves)
        return loss(leaves, **kw)
    monkeypatch.setattr(ours.compiled_method, "loss", keep)
    batch = _batch(ours)
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
        cfg = DPOConfig(**_common(tmp_path / cls.__module__), per_device_train_batch_size=len(DPO_ROWS),
                        beta=0.1, loss_type=["sigmoid"])
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
        trainer = _quiet(cls, embedded.model(tok, 0), args=cfg, train_dataset=data, processing_class=tok,
                         peft_config=lora, **extra)
        torch.manual_seed(3)   # the adapter moves the policy away from the reference
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.5)
        trainers.append(trainer)
    ours, theirs = trainers
    assert ours.ref_model is None
    batch = _batch(ours)
    loss = ours.compute_loss(ours.model, batch).item()
    assert abs(loss - theirs.compute_loss(theirs.model, batch).item()) < ATOL and abs(loss - 0.6931) > 1e-3


@needs_trl
def test_dpo_bridge_runs_the_specs_loss_not_trls(tmp_path):
    from trl import DPOTrainer as TRLDPOTrainer

    from ptdsl.integrations.trl import DPOTrainer
    tok = embedded.tokenizer()
    ours = _dpo(tmp_path / "ours", DPOTrainer, tok, method="ipo", params={"beta": 0.1}, loss_type=["sigmoid"])
    sigmoid = _dpo(tmp_path / "theirs", TRLDPOTrainer, tok, beta=0.1, loss_type=["sigmoid"])
    batch = _batch(ours)
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
    ours = _dpo(tmp_path / "ours", DPOTrainer, tok, method="ld_dpo", params={"ld_alpha": 0.5})
    theirs = _dpo(tmp_path / "theirs", TRLDPOTrainer, tok, beta=0.1, loss_type=["sigmoid"], ld_alpha=0.5)
    plain = _dpo(tmp_path / "plain", TRLDPOTrainer, tok, beta=0.1, loss_type=["sigmoid"])
    batch = _batch(ours)
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


# --- GRPO --------------------------------------------------------------------------------------

PROMPTS, G = ["1+2=", "7*3="], 4
COMPLETIONS = {"1+2=": ["3", "4", "33", "1"], "7*3=": ["21", "2", "12", "9"]}
REWARDS = {("1+2=", "3"): 1.0, ("1+2=", "4"): 0.0, ("1+2=", "33"): 0.5, ("1+2=", "1"): 0.0,
           ("7*3=", "21"): 1.0, ("7*3=", "2"): 0.25, ("7*3=", "12"): 0.0, ("7*3=", "9"): 0.75}


def _reward(prompts, completions, **_):
    return [REWARDS[p, c] for p, c in zip(prompts, completions, strict=True)]


def _grpo(tmp_path, cls, tok, rows=len(PROMPTS) * G, moe=False, **config):
    """A GRPOTrainer whose generation returns COMPLETIONS (the j-th sample of a prompt its j-th)."""
    from datasets import Dataset
    from trl import GRPOConfig
    method = {k: config.pop(k) for k in ("method", "params") if k in config}
    cfg = GRPOConfig(**_common(tmp_path), per_device_train_batch_size=rows, num_generations=G,
                     max_completion_length=4, beta=0.0, max_steps=2, shuffle_dataset=False, **config)
    trainer = _quiet(cls, _models(tok, moe)[0], reward_funcs=_reward, args=cfg,
                     train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}), processing_class=tok, **method)

    def generate(prompts):
        seen: dict = {}
        texts = []
        for p in prompts:
            texts.append(COMPLETIONS[p][seen.get(p, 0) % G])
            seen[p] = seen.get(p, 0) + 1
        ids = [tok.convert_tokens_to_ids(list(t)) + [tok.eos_token_id] for t in texts]
        return [tok(p)["input_ids"] for p in prompts], ids, None, texts, None, {}, None, None
    trainer._generate = generate
    trainer.current_gradient_accumulation_steps = cfg.gradient_accumulation_steps  # as Trainer.train sets it
    return trainer


def _generation(trainer):
    return _quiet(trainer._generate_and_score_completions, [{"prompt": p} for p in PROMPTS for _ in range(G)])


def _grpo_leaves(trainer, batch) -> dict:
    rows = []
    for i in range(batch["completion_ids"].size(0)):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
        completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()]
        ids = torch.cat([prompt, completion])
        rows.append(_row_logps(trainer.model, ids, torch.cat([torch.zeros_like(prompt), torch.ones_like(completion)])))
    logps, mask = _padded(rows)
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
    ours = _grpo(tmp_path / "ours", GRPOTrainer, tok, moe=moe, method="grpo", params=params)
    theirs = _grpo(tmp_path / "theirs", TRLGRPOTrainer, tok, moe=moe, loss_type="grpo",
                   scale_rewards="group" if scale else "none")
    # ours keeps TRL's default advantages (scale_rewards="group") in its batch: the spec's own
    # formula, on the raw rewards, is what must act
    batch, their_batch = _generation(ours), _generation(theirs)
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
    ours = _grpo(tmp_path, GRPOTrainer, tok, rows=G, method="grpo", params={"num_generations": G},
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
    dpo = _dpo(tmp_path / "dpo", DPOTrainer, tok, method="dpo")
    grpo = _grpo(tmp_path / "grpo", GRPOTrainer, tok, method="grpo", params={"num_generations": G})
    for trainer, metric in ((dpo, "dpo/reward_margin"), (grpo, "grpo/mean_reward")):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        _quiet(trainer.train)
        logs = [h for h in trainer.state.log_history if "loss" in h]
        assert len(logs) == 2 and all(metric in h for h in logs)
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert grpo.state.log_history[0]["grpo/mean_reward"] == pytest.approx(sum(REWARDS.values()) / 8)


# --- what the bridges cannot run ---------------------------------------------------------------


@needs_trl
@pytest.mark.parametrize("method, params, config, needle", [
    ("kto", {}, {}, "`logprobs(policy, completion)`"),
    ("dpo", {}, {"precompute_ref_log_probs": True}, "precompute_ref_log_probs=True"),
])
def test_dpo_bridge_refuses_leaves_it_cannot_supply(tmp_path, method, params, config, needle):
    from ptdsl.integrations.trl import BridgeError, DPOTrainer
    with pytest.raises(BridgeError, match="cannot run in TRL's DPOTrainer") as e:
        _dpo(tmp_path, DPOTrainer, embedded.tokenizer(), method=method, params=params, **config)
    assert needle in str(e.value)


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
        _grpo(tmp_path, GRPOTrainer, embedded.tokenizer(), method=method, params=params)
    assert needle in str(e.value)


@needs_trl
def test_grpo_bridge_names_every_completion_no_reward_function_scored(tmp_path, monkeypatch):
    from ptdsl.integrations.trl import BridgeError, GRPOTrainer
    ours = _grpo(tmp_path, GRPOTrainer, embedded.tokenizer(), method="grpo", params={"num_generations": G})
    scored = ours.reward_funcs[0]
    unscored = {("1+2=", "33"), ("7*3=", "9")}
    monkeypatch.setattr(ours, "reward_funcs", [lambda prompts, completions, **kw: [
        None if (p, c) in unscored else r for p, c, r in zip(prompts, completions, scored(prompts, completions))]])
    with pytest.raises(BridgeError, match=r"2 completion\(s\) .* \(rows 2, 7, counted from 0\)"):
        _generation(ours)


def test_import_ptdsl_imports_no_integration():
    import subprocess
    import sys
    code = "import sys, ptdsl; print(any(m.startswith(('trl', 'ptdsl.integrations')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
