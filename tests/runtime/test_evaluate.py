"""Evaluation on held-out rows (issue 12 item 3): --eval-data / a DatasetDict's `test` split,
--eval-steps, --log-samples. Eval losses are checked against the method's math recomputed by
hand with the final weights (plain one-row forwards, no ptdsl code), online rewards against
the verifier on completions decoded independently, and evaluation against a run without it."""
import json
import math

import datasets
import pytest
import torch

import ptdsl
from ptdsl.cli.main import main
from ptdsl.runtime import embedded
from ptdsl.runtime.errors import RuntimeSetupError

TRAIN = embedded.dataset("preference", n=16, seed=1)
HELD = embedded.dataset("preference", n=7, seed=2)  # 7 rows: micro-batches of 3 leave one of 1
QUICK = dict(batch_size=4, quiet=True, log_steps=1)


def _sft(rows):
    return [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rows(out, name="metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def _evals(out) -> list[dict]:
    return [r for r in _rows(out) if any(k.startswith("eval/") for k in r)]


def _train_rows(out) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "step_time"} for r in _rows(out) if "loss" in r]


def _logp(model, tok, prompt: str, completion: str) -> tuple[float, int]:
    """Σ log π(completion tokens | prompt) and their count, one unpadded row (EOS included)."""
    p = tok(prompt)["input_ids"]
    c = tok(prompt + completion)["input_ids"][len(p):] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([p + c])).logits[0, len(p) - 1:-1].float()
    return float(torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None]).sum()), len(c)


def _sft_loss(model, rows) -> tuple[float, float]:
    """SFT's loss by hand: the token mean NLL over ALL the rows (and the mean completion length)."""
    tok = embedded.tokenizer()
    sums = [_logp(model.eval(), tok, r["prompt"], r["completion"]) for r in rows]
    return -sum(s for s, _ in sums) / sum(n for _, n in sums), sum(n for _, n in sums) / len(rows)


@pytest.mark.integration
def test_sft_eval_loss_cadence_and_samples(tmp_path):
    """Eval loss = SFT's token-mean NLL of the held-out rows with the final weights (7 rows in
    micro-batches of 3: normalised over the whole set), every --eval-steps and at the end."""
    out = tmp_path / "out"
    result = ptdsl.train("sft", data=_jsonl(tmp_path / "t.jsonl", _sft(TRAIN)), steps=5, eval_steps=2,
                         log_samples=2, eval_data=_jsonl(tmp_path / "e.jsonl", _sft(HELD)), output=str(out),
                         report_to=("tensorboard",), **{**QUICK, "batch_size": 3})
    loss, length = _sft_loss(result.model, _sft(HELD))
    rows = _rows(out)
    assert [r["step"] for r in rows if "eval/loss" in r] == [2, 4, 5]  # every 2 steps, and the final one
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]  # train rows are their own
    final = _evals(out)[-1]
    assert final["eval/loss"] == pytest.approx(loss, rel=1e-5)
    assert final["eval/completion_length"] == pytest.approx(length, rel=1e-6)
    assert result["eval/loss"] == final["eval/loss"]  # train() returns the final evaluation too
    samples = _rows(out, "samples.jsonl")
    assert [s["step"] for s in samples] == [2, 2, 4, 4, 5, 5]
    assert [s["prompt"] for s in samples[:2]] == [r["prompt"] for r in HELD[:2]]
    assert all(isinstance(s["completion"], str) and s["reward"] is None for s in samples)  # sft has no reward
    scalars, texts = _tensorboard(out)
    assert scalars == {r["step"]: pytest.approx(r["eval/loss"], rel=1e-6) for r in _evals(out)}
    assert sorted(texts) == [2, 4, 5] and samples[-1]["prompt"] in texts[5]


def _tensorboard(out) -> tuple[dict, dict]:
    """step → eval/loss, and step → the samples' text table, as tensorboard reads them back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    scalars, texts = {}, {}
    for f in out.rglob("events.out.tfevents*"):
        ea = EventAccumulator(str(f))
        ea.Reload()
        if "eval/loss" in ea.Tags()["scalars"]:
            scalars.update({e.step: e.value for e in ea.Scalars("eval/loss")})
        for tag in ea.Tags()["tensors"]:
            if tag.startswith("eval/samples"):
                texts.update({e.step: e.tensor_proto.string_val[0].decode() for e in ea.Tensors(tag)})
    return scalars, texts


@pytest.mark.integration
def test_dpo_eval_loss_runs_the_frozen_reference_on_held_out_rows(tmp_path):
    """The reference's log-probs are precomputed for the training rows only: held-out rows run it live."""
    out = tmp_path / "out"
    result = ptdsl.train("dpo", data=_jsonl(tmp_path / "t.jsonl", TRAIN), steps=2, output=str(out),
                         eval_data=_jsonl(tmp_path / "e.jsonl", HELD), **QUICK)
    tok = embedded.tokenizer()
    policy, reference = result.model.eval(), embedded.model(tok, seed=0).eval()
    z = []
    for r in HELD:
        (pc, _), (pr, _) = (_logp(policy, tok, r["prompt"], r[k]) for k in ("chosen", "rejected"))
        (rc, _), (rr, _) = (_logp(reference, tok, r["prompt"], r[k]) for k in ("chosen", "rejected"))
        z.append(0.1 * ((pc - rc) - (pr - rr)))
    want = sum(-math.log(1 / (1 + math.exp(-v))) for v in z) / len(z)
    assert _evals(out)[-1]["eval/loss"] == pytest.approx(want, rel=1e-5)
    assert _evals(out)[-1]["eval/reward_margin"] == pytest.approx(sum(z) / len(z), rel=1e-4, abs=1e-7)


@pytest.mark.integration
def test_evaluation_changes_no_weight_and_no_training_metric(tmp_path):
    """GRPO samples with the torch generator: evaluation (greedy) must not move it, nor any weight."""
    prompts = [{"prompt": r["prompt"], "answer": r["chosen"]} for r in TRAIN]
    data = _jsonl(tmp_path / "t.jsonl", prompts)
    opts = dict(data=data, steps=2, **QUICK, params={"num_generations": 2})
    plain = ptdsl.train("grpo", output=str(tmp_path / "a"), **opts)
    evaluated = ptdsl.train("grpo", output=str(tmp_path / "b"), eval_steps=1, log_samples=1,
                            eval_data=_jsonl(tmp_path / "e.jsonl", prompts[:5]), **opts)
    a, b = plain.model.state_dict(), evaluated.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _train_rows(tmp_path / "b") == _train_rows(tmp_path / "a") and len(_evals(tmp_path / "b")) == 2
    assert evaluated.model.training == plain.model.training  # the mode evaluation switched is restored


@pytest.mark.integration
def test_online_eval_reward_is_the_verifiers_mean_on_greedy_completions(tmp_path):
    held = [{"prompt": r["prompt"], "answer": r["chosen"]} for r in HELD]
    out = tmp_path / "out"
    result = ptdsl.train("grpo", data=_jsonl(tmp_path / "t.jsonl", [{"prompt": r["prompt"], "answer": r["chosen"]}
                                                                    for r in TRAIN]),
                         eval_data=_jsonl(tmp_path / "e.jsonl", held), steps=2, log_samples=7, output=str(out),
                         params={"num_generations": 2}, **QUICK)
    tok, model = embedded.tokenizer(), result.model.eval()
    completions = []
    for r in held:  # greedy, one unpadded prompt at a time
        ids = torch.tensor([tok(r["prompt"])["input_ids"]])
        new = model.generate(ids, do_sample=False, max_new_tokens=embedded.ROLLOUT_MAX_TOKENS,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, ids.shape[1]:].tolist()
        completions.append(tok.decode([t for t in new if t != tok.eos_token_id], skip_special_tokens=True))
    rewards = embedded.accuracy([r["prompt"] for r in held], completions, [r["answer"] for r in held])
    (final,) = _evals(out)
    assert "eval/loss" not in final  # GRPO's loss needs its group of samples; greedy evaluation decodes one
    assert final["eval/reward"] == pytest.approx(sum(rewards) / len(rewards)) == final["eval/reward/r"]
    samples = _rows(out, "samples.jsonl")
    assert [(s["prompt"], s["completion"]) for s in samples] == [(r["prompt"], c) for r, c in zip(held, completions)]
    assert [s["reward"] for s in samples] == pytest.approx(rewards)


@pytest.mark.integration
def test_a_dataset_dicts_test_split_is_the_default_eval_data(tmp_path, capsys):
    """As an object or saved to disk: the eval loss is that of its `test` rows, said in the log."""
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(_sft(TRAIN)),
                               "test": datasets.Dataset.from_list(_sft(HELD))})
    dd.save_to_disk(str(tmp_path / "saved"))
    for name, data in {"object": dd, "saved": str(tmp_path / "saved")}.items():
        result = ptdsl.train("sft", data=data, steps=1, output=str(tmp_path / name), **{**QUICK, "quiet": False})
        (final,) = _evals(tmp_path / name)
        assert final["eval/loss"] == pytest.approx(_sft_loss(result.model, _sft(HELD))[0], rel=1e-5)
    assert capsys.readouterr().out.count("evaluating on the DatasetDict's `test` split (7 rows)") == 2


def test_a_bad_held_out_row_is_named_with_its_file_before_step_1(tmp_path, capsys):
    held = _sft(HELD)
    held[2] = {"prompt": "1+1="}
    code = main(["train", "sft", "--data", _jsonl(tmp_path / "t.jsonl", _sft(TRAIN)), "--eval_dataset",
                 _jsonl(tmp_path / "held.jsonl", held), "--steps", "1", "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "row 3 (line 3): `completion` is missing" in err and "held.jsonl" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "metrics.jsonl").exists()


@pytest.mark.parametrize("flag", ["--eval-steps", "--log-samples"])
def test_eval_options_without_held_out_rows_are_an_error(tmp_path, capsys, flag):
    code = main(["train", "sft", "--data", _jsonl(tmp_path / "t.jsonl", _sft(TRAIN)), flag, "2", "--steps", "1",
                 "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and f"{flag} 2 needs held-out rows" in err and "--eval-data" in err


def test_eval_data_for_several_sources_is_named_as_eval_data():
    from ptdsl.runtime.sources import data_paths
    sources = ptdsl.compile("npo_rt").plan.sources
    with pytest.raises(RuntimeSetupError) as info:
        data_paths(["bogus=x.jsonl"], sources, "--eval-data")
    assert str(info.value).startswith("--eval-data names `bogus`")
    assert "--eval-data" in info.value.help and "--data" not in info.value.help.replace("--eval-data", "")


def test_log_samples_of_a_sequence_classifier_is_an_error_before_step_1(tmp_path):
    with pytest.raises(RuntimeSetupError, match="`reward_model` trains a sequence classifier, which writes no"):
        ptdsl.train("reward_model", data=_jsonl(tmp_path / "t.jsonl", TRAIN), log_samples=2, steps=1,
                    eval_data=_jsonl(tmp_path / "e.jsonl", HELD), output=str(tmp_path / "out"), **QUICK)
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


@pytest.mark.integration
@pytest.mark.slow  # two processes: about a minute on a busy CPU
def test_two_processes_evaluate_as_one(tmp_path):
    """Each process evaluates its share of the held-out rows; the counts are global, so the eval
    row is the one process's (as the train rows are)."""
    import socket
    import subprocess
    import sys
    from pathlib import Path
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["train", "dpo", "--data", _jsonl(tmp_path / "t.jsonl", TRAIN), "--steps", "2", "--quiet",
            "--eval-data", _jsonl(tmp_path / "e.jsonl", embedded.dataset("preference", n=8, seed=2))]
    assert main([*args, "--batch-size", "8", "--output", str(tmp_path / "one")]) == 0
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
                        "--dynamo_backend", "no", "-m", "ptdsl", *args, "--batch-size", "4",
                        "--output", str(tmp_path / "two")], cwd=Path(__file__).resolve().parents[2],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = _evals(tmp_path / "one"), _evals(tmp_path / "two")
    assert len(one) == len(two) == 1 and two[0].keys() == one[0].keys()
    for k in one[0]:
        assert two[0][k] == pytest.approx(one[0][k], rel=1e-5, abs=1e-7), k


def test_resume_cuts_samples_back_to_the_checkpoint_as_metrics(tmp_path):
    from ptdsl.runtime import metrics_log, samples_log
    samples_log.append(tmp_path, [{"step": s, "prompt": "1+1=", "completion": "2", "reward": float("nan")}
                                  for s in (2, 2, 4)])
    assert metrics_log.truncate(tmp_path, 3, samples_log.NAME) == 1  # the step-4 row
    assert _rows(tmp_path, samples_log.NAME) == [{"step": 2, "prompt": "1+1=", "completion": "2", "reward": "nan"}] * 2


@pytest.mark.integration
def test_several_sources_take_eval_data_per_source(tmp_path):
    """NPO+RT with npo_coeff = 0: the eval loss is the retain rows' token-mean NLL (4 forget rows in
    one micro-batch of 4 take the 4 held-out retain rows, `mix` 1:1)."""
    forget, retain = _sft(HELD[:4]), _sft(embedded.dataset("preference", n=4, seed=5))
    files = {name: _jsonl(tmp_path / f"{name}.jsonl", rows) for name, rows in
             {"f": _sft(TRAIN), "r": _sft(TRAIN[::-1]), "ef": forget, "er": retain}.items()}
    out = tmp_path / "out"
    result = ptdsl.train("npo_rt", data=[f"forget={files['f']}", f"retain={files['r']}"], steps=1, output=str(out),
                         eval_data=[f"forget={files['ef']}", f"retain={files['er']}"], params={"npo_coeff": 0.0},
                         **QUICK)
    (final,) = _evals(out)
    assert final["eval/loss"] == pytest.approx(_sft_loss(result.model, retain)[0], rel=1e-5)
    assert final["eval/retain_nll"] == pytest.approx(final["eval/loss"], rel=1e-6)
