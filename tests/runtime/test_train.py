"""`ptdsl train` on the embedded default: learning is visible (trends, not just
no exception), accumulation and processes do not change the result, bad data gives
clear errors. (A killed and resumed run: test_resume.py.)"""
import collections
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.loop import train

ROOT = Path(__file__).resolve().parents[2]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def window_mean(rows, key, frac=0.2, last=False):
    k = max(1, int(len(rows) * frac))
    w = rows[-k:] if last else rows[:k]
    return sum(r[key] for r in w) / len(w)


def final_params(out: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(out / "final" / "model.safetensors"))


def assert_same_training(a: dict, b: dict) -> None:
    """Two runs that should train identically (batch split differently) ended with the same
    parameters. Adam divides by each gradient's own scale, so float-summation noise in an
    entry whose gradient is ~0 can move that one entry by a fair part of lr (3e-3 for the
    embedded model; seen: 1.3e-4). A real bug moves most entries by ~lr. So: every entry
    within lr/10, almost every entry within 1e-5, and the mean difference at float-noise
    level. (The gradients themselves agree to 1e-6: test_split_exactness.)"""
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in b])
    assert diff.max() < 3e-4, f"largest parameter difference {diff.max():.2e}"
    assert (diff > 1e-5).float().mean() < 1e-3, f"{(diff > 1e-5).float().mean():.2%} of entries differ > 1e-5"
    assert diff.mean() < 1e-6, f"mean parameter difference {diff.mean():.2e}"


@pytest.mark.integration
def test_dpo_reward_accuracy_and_margin_climb(tmp_path):
    train("dpo", output=str(tmp_path), steps=300, quiet=True)
    rows = metrics(tmp_path)
    assert window_mean(rows, "reward_accuracy", last=True) > window_mean(rows, "reward_accuracy") + 0.05
    assert window_mean(rows, "reward_margin", last=True) > window_mean(rows, "reward_margin") + 0.2
    assert (tmp_path / "final" / "model.safetensors").exists()


@pytest.mark.integration
def test_grpo_raises_mean_verifier_reward(tmp_path):
    train("grpo", output=str(tmp_path), steps=200, quiet=True)
    rows = metrics(tmp_path)
    first, last = window_mean(rows, "mean_reward", frac=0.05), window_mean(rows, "mean_reward", last=True)
    assert last > first + 0.1 and last > 2 * first


def prompt_blind_loss(examples) -> float:
    """The lowest token-mean loss a model that ignores the prompt can reach on these completions:
    the entropy of the completions' own distribution (nats per completion) over their mean length
    in tokens. (The embedded answers are sums of two uniform digits: about 2.65 nats / 2.44 tokens.)"""
    counts = collections.Counter(tuple(e.completions["completion"]) for e in examples)
    n = sum(counts.values())
    entropy = -sum(c / n * math.log(c / n) for c in counts.values())
    return entropy / (sum(len(e.completions["completion"]) for e in examples) / n)


@pytest.mark.integration
def test_sft_learns_to_read_the_prompt(tmp_path):
    """Derived, not observed: the last steps' loss is below what any prompt-blind model can reach
    (so the model reads the prompt), and the first steps' loss was above it (learned in this run)."""
    import ptdsl
    from ptdsl.runtime.embedded import tokenizer
    from ptdsl.runtime.setup import load_examples
    train("sft", output=str(tmp_path), steps=150, quiet=True)
    rows = metrics(tmp_path)
    bound = prompt_blind_loss(load_examples(ptdsl.compile("sft"), None, tokenizer(), 512, None, 0, log=lambda m: None))
    assert window_mean(rows, "loss", last=True) < bound < window_mean(rows, "loss"), bound


@pytest.mark.integration
def test_kto_trains(tmp_path):
    train("kto", output=str(tmp_path), steps=200, quiet=True)
    rows = metrics(tmp_path)
    gap_first = window_mean(rows, "reward_desirable") - window_mean(rows, "reward_undesirable")
    gap_last = window_mean(rows, "reward_desirable", last=True) - window_mean(rows, "reward_undesirable", last=True)
    assert gap_last > gap_first + 0.1
    assert window_mean(rows, "loss", last=True) < window_mean(rows, "loss")


@pytest.mark.integration
@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_accumulation_does_not_change_the_trained_model(tmp_path, method):
    outs = []
    for bs, ga in ((8, 1), (4, 2), (2, 4)):
        out = tmp_path / f"ga{ga}"
        train(method, output=str(out), steps=3, batch_size=bs, grad_accum=ga, max_examples=64, quiet=True)
        outs.append(final_params(out))
    for other in outs[1:]:
        assert_same_training(other, outs[0])


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ptdsl", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kw)


def _free_port() -> int:
    """A port nothing listens on now (the OS picks it) for accelerate's rendezvous: its default,
    29500, is taken by any other two-process run on the machine (another test, another user)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(*script_and_args):
    # `--multi_gpu` is accelerate's name for its multi-process launcher; on a machine
    # without CUDA, ptdsl's Accelerator joins the processes in a gloo group
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--main_process_port", str(_free_port()), "--mixed_precision", "no",
                           "--dynamo_backend", "no", *script_and_args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["dpo", "bco"])  # bco: a running mean over every process's batch
def test_two_processes_match_one(tmp_path, method):
    one, two = tmp_path / "one", tmp_path / "two"
    # 64 examples: the reference's precompute (before step 1) covers what 3 steps read, not all 4096
    r1 = _cli("train", method, "--steps", "3", "--batch-size", "8", "--max-examples", "64", "--output", str(one),
              "--quiet")
    assert r1.returncode == 0, r1.stderr
    r2 = _two_processes("-m", "ptdsl", "train", method, "--steps", "3", "--batch-size", "4", "--max-examples", "64",
                        "--output", str(two), "--quiet")
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert len(metrics(two)) == 3  # one log line per step: only the main process writes
    assert_same_training(final_params(two), final_params(one))
    for key in ("loss", "grad_norm"):  # grad_norm: Adam's steps hide a gradient off by a constant factor
        assert [r[key] for r in metrics(two)] == pytest.approx([r[key] for r in metrics(one)], rel=1e-5), key


@pytest.mark.integration
def test_two_processes_of_a_rollout_method_train_as_one_fed_their_rollouts(tmp_path, monkeypatch):
    """Each process samples its own prompts' groups, so two processes cannot reproduce one
    process's samples; instead the samples each process drew (recorded by hooked_cli.py) are
    fed to one process with two accumulation steps, which must train identically: the global
    counts, the loss summed over processes and the gradient averaged by DDP. The processes'
    prompts are each step's global batch, split between them; the rewards are the verifier's."""
    from ptdsl.runtime import embedded, experience
    two, rec, one = tmp_path / "two", tmp_path / "batches", tmp_path / "one"
    args = ["grpo", "--steps", "3", "--max-examples", "64", "--set", "num_generations=4", "--quiet"]
    r = _two_processes(str(ROOT / "tests" / "runtime" / "hooked_cli.py"), "--record-batches", str(rec), "--",
                       "train", *args, "--batch-size", "4", "--output", str(two))
    assert r.returncode == 0, r.stderr[-3000:]
    recorded = {s: [torch.load(rec / f"step{s}-process{p}.pt", weights_only=False)[0] for p in (0, 1)]
                for s in range(3)}
    for step, (a, b) in recorded.items():
        mine = [[e.index for e in batch.examples] for batch in (a, b)]
        assert not set(mine[0]) & set(mine[1]) and len(mine[0]) == len(mine[1]) == 4
        for batch in (a, b):
            answers = [e.columns["answer"] for e in batch.examples for _ in range(4)]
            want = embedded.accuracy(batch.prompts, batch.sets["y"].texts, answers)
            assert batch.rewards["r(y)"] == pytest.approx(want, abs=1e-7), step
    monkeypatch.setattr(experience.Experiences, "minibatch", lambda self, step: recorded[step])
    train("grpo", output=str(one), steps=3, max_examples=64, params={"num_generations": 4}, batch_size=4,
          grad_accum=2, quiet=True)
    assert_same_training(final_params(two), final_params(one))
    # grad_norm: Adam's steps hide a gradient off by a constant factor (and GRPO's loss is ~0 by design)
    for key in ("loss", "grad_norm", "mean_reward", "clip_ratio"):
        assert [r[key] for r in metrics(two)] == pytest.approx([r[key] for r in metrics(one)], rel=1e-5, abs=1e-9), key


def _write_jsonl(path: Path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_missing_field_names_field_method_and_columns(tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1=", "chosen": "2"}] * 4)
    with pytest.raises(RuntimeSetupError) as info:
        train("dpo", data=data, output=str(tmp_path / "o"), steps=1, quiet=True)
    msg = str(info.value) + (info.value.help or "")
    assert "`rejected`" in msg and "`dpo`" in msg and "`chosen`" in msg and "`prompt`" in msg


@pytest.mark.integration
def test_empty_completions_and_long_prompts_are_counted_skips(tmp_path, capsys):
    rows = [{"prompt": "1+1=", "completion": "2"}] * 8 + [{"prompt": "2+2=", "completion": ""}] * 3 \
        + [{"prompt": "9" * 100, "completion": "1"}] * 2
    data = _write_jsonl(tmp_path / "d.jsonl", rows)
    train("sft", data=data, output=str(tmp_path / "o"), steps=1, max_length=32, quiet=False)
    err = capsys.readouterr()
    text = err.out + err.err
    assert "3 with an empty completion" in text and "2 whose prompt leaves no room" in text


def test_the_exported_error_is_what_train_raises(tmp_path):
    """`except ptdsl.RuntimeSetupError` in a user's script catches train's data errors."""
    import ptdsl
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1="}] * 2)
    with pytest.raises(ptdsl.RuntimeSetupError, match="completion"):
        ptdsl.train("sft", data=data, output=str(tmp_path / "o"), steps=1, quiet=True)
    assert ptdsl.RuntimeSetupError is RuntimeSetupError and "RuntimeSetupError" in ptdsl.__all__


def test_everything_skipped_is_an_error(tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1=", "completion": " "}] * 4)
    with pytest.raises(RuntimeSetupError, match="no usable rows"):
        train("sft", data=data, output=str(tmp_path / "o"), steps=1, quiet=True)


def test_cli_reports_data_errors_without_traceback(tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", [{"question": "1+1="}] * 4)
    r = _cli("train", "sft", "--data", data, "--output", str(tmp_path / "o"), "--steps", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "needs the field `prompt`" in r.stderr and "`question`" in r.stderr


def test_non_finite_loss_names_the_node(tmp_path):
    spec = tmp_path / "bad.ptdsl"
    spec.write_text('method bad "log of a negative number"\ndata sft\npolicy\n'
                    'let x = log(logp(policy, completion))\nloss -mean(x)\n')
    with pytest.raises(RuntimeSetupError) as info:
        train(str(spec), output=str(tmp_path / "o"), steps=1, quiet=True)
    assert "not finite at step 1" in str(info.value) and "`log`" in str(info.value) and "bad.ptdsl:4" in str(info.value)


def test_unknown_verifier_is_named(tmp_path):
    spec = tmp_path / "v.ptdsl"
    text = (ROOT / "methods" / "grpo.ptdsl").read_text().replace('verifier("accuracy")', 'verifier("unit_tests")')
    spec.write_text(text.replace("method grpo", "method grpo_tests"))
    with pytest.raises(RuntimeSetupError) as info:
        train(str(spec), output=str(tmp_path / "o"), steps=1, quiet=True)
    assert "`unit_tests`" in str(info.value) and "--reward-fn unit_tests=module:function" in info.value.help


@pytest.mark.integration
def test_reward_fn_from_the_command_line(tmp_path):
    mod = tmp_path / "myrewards.py"
    mod.write_text("def starts_with_one(prompts, completions, **kw):\n"
                   "    return [1.0 if c.startswith('1') else 0.0 for c in completions]\n")
    out = tmp_path / "o"
    r = _cli("train", "grpo", "--steps", "30", "--batch-size", "4", "--reward-fn", "myrewards:starts_with_one",
             "--output", str(out), "--quiet", "--set", "num_generations=4",
             env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    rows = metrics(out)
    assert window_mean(rows, "mean_reward", last=True) > window_mean(rows, "mean_reward") + 0.2


def _reference_rows_per_phase(monkeypatch) -> dict:
    """Rows the reference model's decoder runs before step 1 (the precompute) and in the
    steps (from the first micro-batch on). A shared-prompt forward (runtime/prefix.py) runs the
    distinct prompts into an empty cache, then every row's completion: the rows are counted once,
    by the second call."""
    from ptdsl.runtime import experience, loop
    rows = {"precompute": 0, "steps": 0}
    phase = ["precompute"]
    real_load, real_micro = loop.load_models, experience.Experiences.minibatch

    def count(mod, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is None or cache.get_seq_length() > 0:  # a whole row, or a completion continuing its prompt
            rows[phase[0]] += kwargs["input_ids"].shape[0]

    def load(*a, **kw):
        models = real_load(*a, **kw)
        models.frozen["reference"].model.register_forward_pre_hook(count, with_kwargs=True)
        return models

    def micro(*a, **kw):
        phase[0] = "steps"
        return real_micro(*a, **kw)
    monkeypatch.setattr(loop, "load_models", load)
    monkeypatch.setattr(experience.Experiences, "minibatch", micro)
    return rows


@pytest.mark.integration
@pytest.mark.parametrize("method", ["dpo", "kto", "tdpo1"])
def test_precomputed_reference_gives_the_same_losses_as_a_live_one(tmp_path, method, monkeypatch):
    """The reference's data-only log-probs are computed once before step 1, and the steps read
    them instead of running the reference on those sets: kto still runs it on its mismatched
    pairs (they depend on the micro-batch), tdpo1 on chosen and rejected for their logits."""
    import ptdsl
    steps, bs = 4, 8
    queries = [q for q in ptdsl.compile(method).plan.queries if q.model == "reference"]
    cached, per_step = {q.set for q in queries if q.precomputable}, {q.set for q in queries if not q.precomputable}
    runs = {}
    for precompute in (True, False):
        rows = _reference_rows_per_phase(monkeypatch)
        out = tmp_path / str(precompute)
        train(method, output=str(out), steps=steps, batch_size=bs, max_examples=64, precompute=precompute, quiet=True)
        runs[precompute] = metrics(out), dict(rows)
    (pre, pre_rows), (live, live_rows) = runs[True], runs[False]
    assert list((tmp_path / "True" / "cache").glob("reference-*.pt")), "the precompute cache was written"
    assert cached and pre_rows == {"precompute": 64 * len(cached), "steps": steps * bs * len(per_step)}
    assert live_rows == {"precompute": 0, "steps": steps * bs * len(cached | per_step)}
    assert [r["step"] for r in pre] == [r["step"] for r in live] == [1, 2, 3, 4]
    assert [r["loss"] for r in pre] == pytest.approx([r["loss"] for r in live], rel=1e-5, abs=1e-7)


@pytest.mark.integration
def test_metrics_reach_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train("sft", output=str(tmp_path), steps=3, log_steps=1, report_to=("tensorboard",), quiet=True)
    logged = {r["step"]: r["loss"] for r in metrics(tmp_path) if "loss" in r}
    seen = {}
    for f in tmp_path.rglob("events.out.tfevents*"):
        ea = EventAccumulator(str(f))
        ea.Reload()
        if "loss" in ea.Tags()["scalars"]:
            seen.update({e.step: e.value for e in ea.Scalars("loss")})
    assert seen.keys() == logged.keys() == {1, 2, 3}
    for step, loss in logged.items():
        assert seen[step] == pytest.approx(loss, rel=1e-6)
