"""FSDP2 (runtime/sharding.py): two processes launched as accelerate launches FSDP
(`--use_fsdp --fsdp_version 2`) shard the policy, its value head and a critic with
`fully_shard` over gloo, and train as one process (or as DDP, where rollouts make one
process's samples differ from two's); checkpoints are Hugging Face folders and resume
exactly; a request that cannot be honoured is an error before step 1."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptdsl.runtime import embedded, sharding
from ptdsl.runtime.errors import RuntimeSetupError
from tests.runtime.test_train import ROOT, _cli, _free_port, assert_same_training, final_params, metrics

FSDP = ["--use_fsdp", "--fsdp_version", "2"]
DDP = ["--multi_gpu"]

# Summation order differs between one process and two (and between a gathered and a whole
# weight): losses and gradient norms agree to float32 rounding, as DDP's do (test_train.py).
REL = 1e-5


def _launch(kind, *args):
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *kind, "--num_processes", "2",
                           "--num_machines", "1", "--main_process_port", str(_free_port()), "--mixed_precision", "no",
                           "--dynamo_backend", "no", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _same_metrics(a: Path, b: Path, keys=("loss", "grad_norm"), rel=REL):
    for key in keys:
        got, want = ([r[key] for r in metrics(out) if key in r] for out in (a, b))
        assert got and got == pytest.approx(want, rel=rel, abs=1e-9), key


# ---- what is asked, and what is refused ------------------------------------------------------

def _asked(**env):
    return sharding.requested({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", **env})


def test_no_request_is_one_process_or_ddp():
    assert sharding.resolve(sharding.requested({}), 1, "no", False).describe("cpu") == "one process (cpu)"
    assert sharding.resolve(sharding.requested({}), 4, "no", False).describe("cpu") == "DDP, 4 processes"


def test_an_fsdp2_request_is_read_as_accelerate_writes_it():
    mode = sharding.resolve(_asked(FSDP_RESHARD_AFTER_FORWARD="false",
                                   FSDP_TRANSFORMER_CLS_TO_WRAP="LlamaDecoderLayer"), 2, "bf16", False)
    assert mode.fsdp and not mode.reshard_after_forward and mode.layer_classes == ("LlamaDecoderLayer",)
    assert mode.describe("cpu") == "FSDP2 (fully_shard, shard grad/optimizer (SHARD_GRAD_OP)), 2 processes"


@pytest.mark.parametrize("env, processes, precision, lora, says", [
    ({"FSDP_VERSION": "1"}, 2, "no", False, "FSDP version 1 (only FSDP2 is supported: --fsdp_version 2)"),
    ({}, 1, "no", False, "one process (FSDP shards over several"),
    ({"FSDP_OFFLOAD_PARAMS": "true"}, 2, "no", False, "parameter offload (FSDP_OFFLOAD_PARAMS)"),
    ({"FSDP_RESHARD_AFTER_FORWARD": "HYBRID_SHARD"}, 2, "no", False, "the sharding strategy `hybrid_shard`"),
    ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, 2, "no", False, "the wrap policy SIZE_BASED_WRAP"),
    ({}, 2, "no", True, "LoRA adapters"),
    ({}, 2, "fp16", False, "--mixed-precision fp16"),
])
def test_what_cannot_be_honoured_is_an_error_naming_it(env, processes, precision, lora, says):
    with pytest.raises(RuntimeSetupError) as info:
        sharding.resolve(_asked(**env), processes, precision, lora)
    assert str(info.value).startswith("FSDP is asked for, but this run cannot be sharded as asked: ")
    assert says in str(info.value) and "--use_fsdp" in info.value.help


def test_deepspeed_is_refused_with_the_fsdp2_equivalent():
    with pytest.raises(RuntimeSetupError) as info:
        sharding.resolve(sharding.requested({"ACCELERATE_USE_DEEPSPEED": "true"}), 2, "no", False)
    assert "DeepSpeed" in str(info.value) and "ZeRO-3" in info.value.help


def test_the_request_is_hidden_from_accelerate_and_restored(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    import os
    with sharding.hidden_from_accelerate({"fsdp": "2"}):
        assert "ACCELERATE_USE_FSDP" not in os.environ
    assert os.environ["ACCELERATE_USE_FSDP"] == "true"


# ---- two processes ----------------------------------------------------------------------------

PROBE = """
import json, sys
import ptdsl
result = ptdsl.train("dpo", output=sys.argv[1], steps=2, batch_size=4, max_examples=64, quiet=True)
w = result.model.lm_head.weight
from torch.distributed import get_rank
json.dump({"type": type(w).__name__, "local": list(w.to_local().shape), "full": list(w.shape)},
          open(f"{sys.argv[1]}/probe{get_rank()}.json", "w"))
"""


@pytest.mark.integration
def test_fsdp2_shards_the_policy_and_dpo_trains_as_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # 64 examples: the reference's precompute (before step 1) covers what 3 steps read, not all 4096
    r1 = _cli("train", "dpo", "--steps", "3", "--batch-size", "8", "--max-examples", "64", "--output", str(one),
              "--quiet")
    assert r1.returncode == 0, r1.stderr
    r2 = _launch(FSDP, "-m", "ptdsl", "train", "dpo", "--steps", "3", "--batch-size", "4", "--max-examples", "64",
                 "--output", str(two))
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "FSDP2 (fully_shard, full shard), 2 processes" in r2.stdout + r2.stderr
    assert json.loads((two / "run.json").read_text())["distributed"] == "FSDP2 (fully_shard, full shard), 2 processes"
    assert (r2.stdout + r2.stderr).count("done: metrics") == 1  # one summary, not one per process
    _same_metrics(two, one)
    assert_same_training(final_params(two), final_params(one))
    # each process held half of each weight (here the LM head's rows) while it trained
    probe = tmp_path / "probe"
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    r3 = _launch(FSDP, str(script), str(probe))
    assert r3.returncode == 0, r3.stderr[-3000:]
    seen = [json.loads((probe / f"probe{rank}.json").read_text()) for rank in (0, 1)]
    rows, width = seen[0]["full"]
    assert all(s["type"] == "DTensor" and s["local"][1] == width for s in seen), seen
    assert [s["local"][0] for s in seen] == [(rows + 1) // 2, rows // 2], seen  # dim-0 shards, as FSDP2 splits


@pytest.mark.integration
def test_fsdp2_trains_rollouts_a_critic_and_its_checkpoints_as_ddp(tmp_path):
    """ppo_critic: generation on the gathered policy, the critic sharded as a root of its own, `old`
    recorded, the reward model replicated. Two processes draw the same samples under DDP and
    FSDP2 (same seeds, same split), so the runs must agree step by step."""
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps(r) + "\n" for r in embedded.dataset("prompts", seed=5)[:10]))
    args = ["-m", "ptdsl", "train", "ppo_critic", "--steps", "4", "--save-steps", "2", "--batch-size", "4",
            "--max-examples", "64", "--eval-data", str(held_out), "--eval-steps", "2", "--quiet"]
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    for kind, out in ((DDP, ddp), (FSDP, fsdp)):
        r = _launch(kind, *args, "--output", str(out))
        assert r.returncode == 0, r.stderr[-3000:]
    _same_metrics(fsdp, ddp, ("loss", "grad_norm", "grad_norm_value", "mean_score", "value_loss"))
    # evaluation (greedy decoding on the gathered weights) reads weights that Adam's steps left a few
    # float32 ulps apart (assert_same_training): a looser tolerance, still far below any real difference
    _same_metrics(fsdp, ddp, ("eval/loss", "eval/reward"), rel=1e-4)
    assert_same_training(final_params(fsdp), final_params(ddp))
    from safetensors.torch import load_file
    critic = [load_file(str(out / "final" / "value" / "model.safetensors")) for out in (fsdp, ddp)]
    assert_same_training(*critic)
    start = load_file(str(fsdp / "checkpoint-2" / "value" / "model.safetensors"))
    assert any(not torch.equal(start[k], critic[0][k]) for k in start)  # the critic trained on after step 2
    # the checkpoint is the step-2 policy in Hugging Face's layout, whole on disk
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(fsdp / "checkpoint-2")
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in final_params(fsdp).values())
    # resumed from checkpoint-2 (weights, optimizer shards, experience, random states): the same run
    resumed = tmp_path / "resumed"
    import shutil
    shutil.copytree(fsdp, resumed)
    shutil.rmtree(resumed / "final")
    r = _launch(FSDP, *args, "--output", str(resumed), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [[(r["step"], r.get("loss"), r.get("eval/loss")) for r in metrics(out)] for out in (resumed, fsdp)]
    assert rows[0] == rows[1] and len(rows[0]) == 4 + 2  # each step once, and the evaluations at steps 2 and 4
    assert all(torch.equal(a, b) for a, b in zip(final_params(resumed).values(), final_params(fsdp).values()))


@pytest.mark.integration
def test_an_fsdp1_request_stops_before_step_1(tmp_path):
    r = _launch(["--use_fsdp", "--fsdp_version", "1"], "-m", "ptdsl", "train", "dpo", "--steps", "1",
                "--output", str(tmp_path))
    assert r.returncode != 0
    assert "FSDP version 1 (only FSDP2 is supported: --fsdp_version 2)" in r.stderr
    assert "internal error" not in r.stderr and not (tmp_path / "metrics.jsonl").exists()
