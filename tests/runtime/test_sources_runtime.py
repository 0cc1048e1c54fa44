"""Several data sources at run time (runtime/sources.py): which file feeds each source
(`--data NAME=PATH`), which rows of each source every optimizer step gets (the first
source's epochs; the others' endless seeded permutations, split over micro-batches and
processes like the first's), counts per source's row space that keep accumulation exact,
fields read from their own source, and (integration) training, files, errors and resume."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ptdsl
from ptdsl.runtime import experience
from ptdsl.runtime.data import Example
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.sources import data_paths, shares, stream

NPO_RT = ptdsl.compile("npo_rt")


# ---- --data ------------------------------------------------------------------------------

def test_data_paths_feed_each_source():
    sources = NPO_RT.plan.sources
    assert data_paths(None, sources) == {"forget": None, "retain": None}  # the embedded default for both
    assert data_paths(["forget=f.jsonl", "retain=r=1.jsonl"], sources) == {"forget": "f.jsonl", "retain": "r=1.jsonl"}
    assert data_paths({"retain": "r", "forget": "f"}, sources) == {"retain": "r", "forget": "f"}
    one = ptdsl.compile("dpo").plan.sources
    assert data_paths("data/pairs.jsonl", one) == {"examples": "data/pairs.jsonl"}
    assert data_paths(["hub/name"], one) == {"examples": "hub/name"}


def test_data_paths_errors_name_the_declared_sources(tmp_path):
    sources = NPO_RT.plan.sources
    cases = {
        ("forgt=f", "retain=r"): ("--data names `forgt`, which the method does not declare; its sources are "
                                  "`forget`, `retain`", "did you mean `forget`?"),
        ("f.jsonl",): ("--data `f.jsonl` does not say which source it feeds; the method reads `forget`, `retain`",
                       "give each as --data NAME=PATH, e.g. --data forget=f.jsonl"),
        ("forget=f",): ("source `retain` has no data",
                        "--data retain=PATH (the embedded default supplies every source only when no --data is given)"),
        ("forget=f", "forget=g"): ("--data gives source `forget` twice", "give each source once"),
    }
    for given, (message, help) in cases.items():
        with pytest.raises(RuntimeSetupError) as info:
            data_paths(list(given), sources)
        assert (str(info.value), info.value.help) == (message, help)
    one = ptdsl.compile("dpo").plan.sources
    with pytest.raises(RuntimeSetupError, match="--data names the source `pairs`, and the method reads one unnamed"):
        data_paths("pairs=p.jsonl", one)
    with pytest.raises(RuntimeSetupError, match="more than once"):
        data_paths(["a.jsonl", "b.jsonl"], one)
    odd = tmp_path / "a=b.jsonl"  # a file whose name looks like NAME=PATH is still a file
    odd.write_text("")
    assert data_paths(str(odd), one) == {"examples": str(odd)}


# ---- which rows each step gets ----------------------------------------------------------------

def test_shares_give_each_source_its_rows_per_micro_batch():
    c = ptdsl.compile(_spec("mix forget = 2, retain = 3"))
    forget, retain = c.plan.sources
    (share,) = shares(c.plan.sources, {"forget": [0] * 10, "retain": [0] * 7}, batch_size=4)
    assert (share.rows, share.batch, share.n) == ("retain", 6, 7)
    with pytest.raises(RuntimeSetupError) as info:
        shares(c.plan.sources, {"forget": [0] * 10, "retain": [0] * 7}, batch_size=3)
    assert str(info.value) == ("`mix` gives source `retain` 4.5 rows per micro-batch (--batch-size 3 × weight 3 / "
                               "forget's 2), not a whole number ≥ 1")
    assert shares(ptdsl.compile("dpo").plan.sources, {"examples": []}, 4) == ()


def test_stream_uses_every_row_once_per_cycle_and_depends_only_on_the_seed():
    rows = [x for k in range(10) for x in stream(7, k, 3, seed=5, name="retain")]  # 30 rows: 4 cycles and a bit
    for cycle in range(4):
        assert sorted(rows[cycle * 7:(cycle + 1) * 7]) == list(range(7))
    assert rows[:7] != rows[7:14]  # each cycle its own order
    assert stream(7, 4, 3, 5, "retain") == rows[12:15]  # experience 4 alone: what the run drew (resume)
    assert stream(7, 4, 3, 6, "retain") != rows[12:15] or stream(7, 0, 3, 6, "retain") != rows[:3]
    assert stream(7, 0, 3, 5, "other") != rows[:3] or stream(7, 1, 3, 5, "other") != rows[3:6]


def _examples(n: int, start: int, set_name: str) -> list[Example]:
    return [Example(start + i, f"p{start + i}", [1, 2], {set_name: [3 + i % 4, 2]}) for i in range(n)]


def _experiences(c, forget, retain, batch_size, grad_accum, process=0, world=1, seed=0):
    sources = {"forget": forget, "retain": retain}
    reuse = experience.resolve(c.plan.schedule, len(forget), batch_size, grad_accum, world)
    acc = SimpleNamespace(process_index=process, num_processes=world)
    opts = SimpleNamespace(seed=seed, rollout={})
    return reuse, experience.Experiences(c, sources, reuse, opts, acc, None, None, None,
                                         shares(c.plan.sources, sources, batch_size))


def test_each_step_holds_rows_of_both_sources_and_an_epoch_is_a_pass_over_the_first():
    forget, retain = _examples(12, 0, "completion"), _examples(5, 100, "retained")
    reuse, exps = _experiences(NPO_RT, forget, retain, batch_size=2, grad_accum=2)
    assert (reuse.per_step, reuse.per_epoch) == (4, 3)
    seen_forget, seen_retain = [], []
    for step in range(6):  # two epochs of the forget set
        micro = exps.minibatch(step)
        step_retain = sorted(e.index for b in micro for e in b.sources["retain"])
        assert step_retain == sorted(100 + x for x in stream(5, step, 4, 0, "retain"))  # the next 4 of the sequence
        assert len(micro) == 2
        for b in micro:
            assert len(b.examples) == 2 and len(b.sources["retain"]) == 2
            assert b.sets["completion"].completion_ids == [e.completions["completion"] for e in b.examples]
            assert b.sets["retained"].completion_ids == [e.completions["retained"] for e in b.sources["retain"]]
            seen_forget += [e.index for e in b.examples]
            seen_retain += [e.index for e in b.sources["retain"]]
    assert sorted(seen_forget[:12]) == list(range(12)) and sorted(seen_forget[12:]) == list(range(12))
    assert seen_forget[:12] != seen_forget[12:]  # a new epoch, a new order
    from collections import Counter
    assert Counter(seen_retain[:20]) == dict.fromkeys(range(100, 105), 4)  # 4 cycles of 5: every row 4 times


def test_processes_split_every_source_of_the_global_batch():
    forget, retain = _examples(16, 0, "completion"), _examples(9, 50, "retained")
    c = ptdsl.compile(_spec("mix forget = 1, retain = 2"))
    one = _experiences(c, forget, retain, batch_size=4, grad_accum=1)[1].minibatch(1)
    parts = [_experiences(c, forget, retain, batch_size=2, grad_accum=1, process=p, world=2)[1].minibatch(1)
             for p in range(2)]
    for rows in ("forget", "retain"):
        def ids(b):
            return [e.index for e in (b.examples if rows == "forget" else b.sources["retain"])]
        whole = ids(one[0])
        assert len(whole) == (4 if rows == "forget" else 8)
        assert sorted(ids(parts[0][0]) + ids(parts[1][0])) == sorted(whole)
        assert not set(ids(parts[0][0])) & set(ids(parts[1][0]))


def test_a_field_is_read_from_its_own_sources_rows():
    from ptdsl.runtime.step import batch_fields, build_batch
    c = ptdsl.compile(_spec(""))
    forget = _examples(2, 0, "completion")
    retain = _examples(3, 10, "retained")
    for e in retain:
        e.fields["margin"] = float(e.index)
    batch = build_batch(c, forget, {"retain": retain})
    assert batch_fields(c, batch, "cpu")["margin"].tolist() == [10.0, 11.0, 12.0]


def test_accumulation_is_exact_with_counts_per_source():
    """The micro-batch losses of npo_rt (a forget mean over rows, a retain token mean) sum to the
    full batch's, and their gradients too, with the loop's counts per source row space."""
    import copy
    from ptdsl.runtime.loop import _global_counts
    from ptdsl.runtime.setup import load_examples, load_models
    from ptdsl.runtime.step import StepContext, build_batch, loss_inputs
    models = load_models(NPO_RT, None, 0)
    forget_src, retain_src = NPO_RT.plan.sources
    forget = load_examples(NPO_RT, None, models.tokenizer, 64, None, 0, lambda m: None, source=forget_src)[:4]
    retain = load_examples(NPO_RT, None, models.tokenizer, 64, None, 7919, lambda m: None, source=retain_src)[:6]
    for i, e in enumerate(retain):  # ragged retain lengths, so token counts differ per micro-batch
        e.completions["retained"] = e.completions["retained"][: 1 + i % 3]

    class _One:
        num_processes, device = 1, "cpu"

        def reduce(self, t, op):
            return t

    def grads(batches):
        policy = copy.deepcopy(models.policy)
        ctx = StepContext(NPO_RT, copy.copy(models), "cpu", {}, {})
        ctx.models.policy = policy
        norm = _global_counts(NPO_RT, batches, _One())
        total = 0.0
        for b in batches:
            loss, _ = NPO_RT.loss(loss_inputs(ctx, b), normalizers=norm)
            loss.backward()
            total += loss.item()
        return total, norm, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}

    full_loss, norm, full = grads([build_batch(NPO_RT, forget, {"retain": retain})])
    assert norm["rows:forget"] == 4 and norm["rows:retain"] == 6
    split = [build_batch(NPO_RT, forget[i::2], {"retain": retain[i::2]}) for i in range(2)]
    loss, _, parts = grads(split)
    assert abs(loss - full_loss) < 1e-5 * max(1, abs(full_loss))
    for name in full:
        torch.testing.assert_close(parts[name], full[name], rtol=1e-4, atol=1e-7)


def _spec(mix: str) -> str:
    return str(_SPEC_DIR / "two_sources.ptdsl") if not mix else _write(mix)


_SPEC_DIR = Path(__file__).parent / "specs"


def _write(mix: str) -> str:
    import tempfile
    text = (_SPEC_DIR / "two_sources.ptdsl").read_text() + mix + "\n"
    f = Path(tempfile.mkdtemp()) / "two_sources.ptdsl"
    f.write_text(text)
    return str(f)


# ---- training (integration) ----------------------------------------------------------------

FAST = dict(batch_size=4, max_examples=8, quiet=True)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["npo", "npo_rt", "dpo_sft_mix"])
def test_the_embedded_default_trains_each_method(method, tmp_path):
    from ptdsl.runtime.loop import train
    last = train(method, output=str(tmp_path), steps=2, **FAST)
    assert last["step"] == 2 and torch.isfinite(torch.tensor(last["loss"]))
    if method == "npo_rt":
        assert last["retain_nll"] > 0


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.integration
def test_data_name_equals_path_feeds_each_source_and_names_it_in_errors(tmp_path):
    import subprocess
    import sys
    forget = _jsonl(tmp_path / "forget.jsonl", [{"prompt": f"{i}+1=", "completion": str(i + 1)} for i in range(8)])
    rows = [{"prompt": f"{i}+2=", "completion": str(i + 2)} for i in range(8)]
    retain = _jsonl(tmp_path / "retain.jsonl", rows)
    root = Path(__file__).resolve().parents[2]

    def run(*data):
        args = [sys.executable, "-m", "ptdsl", "train", "npo_rt", "--steps", "1", "--batch-size", "4", "--quiet",
                "--output", str(tmp_path / "out")] + [a for d in data for a in ("--data", d)]
        return subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)

    ok = run(f"forget={forget}", f"retain={retain}")
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 1
    bad = run(f"forgt={forget}", f"retain={retain}")
    assert bad.returncode == 1
    assert "error: --data names `forgt`, which the method does not declare; its sources are `forget`, `retain`" \
        in bad.stderr
    broken = _jsonl(tmp_path / "broken.jsonl", rows[:3] + [{"prompt": "x", "completion": 3}] + rows[4:])
    bad = run(f"forget={forget}", f"retain={broken}")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "do not fit `npo_rt` source `retain` (data sft" in bad.stderr and "row 4 (line 4)" in bad.stderr


@pytest.mark.integration
def test_a_resumed_run_draws_the_rows_and_ends_with_the_weights_of_the_uninterrupted_one(tmp_path):
    from safetensors.torch import load_file

    from ptdsl.runtime.loop import train
    args = dict(steps=5, save_steps=1, **FAST)  # 8 forget rows, 4 a step: an epoch is 2 steps
    run, out = tmp_path / "run", tmp_path / "out"
    train("npo_rt", output=str(run), **args)
    shutil.copytree(run, out)
    shutil.rmtree(out / "final")
    shutil.rmtree(out / "checkpoint-4")  # stopped after step 3: steps 4 and 5 run again
    train("npo_rt", output=str(out), resume=True, **args)
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (run, out)]
    assert [{**r, "step_time": 0} for r in rows[0]] == [{**r, "step_time": 0} for r in rows[1]]
    a, b = (load_file(str(d / "final" / "model.safetensors")) for d in (run, out))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_counts_cover_a_source_read_only_through_a_field(tmp_path):
    """A source whose sets the loss never reads still has its rows counted: `mean(margin)` over
    the retain rows is a mean over the whole step's retain rows, whatever the split."""
    from ptdsl.runtime.loop import _global_counts
    from ptdsl.runtime.step import build_batch
    spec = tmp_path / "fields_only.ptdsl"
    spec.write_text((_SPEC_DIR / "two_sources.ptdsl").read_text().replace(
        " - token_mean(logprobs(policy, retained))", ""))
    c = ptdsl.compile(str(spec))
    assert "retained" not in c.plan.sets
    retain = _examples(5, 10, "retained")
    for e in retain:
        e.fields["margin"] = 1.0
    micro = [build_batch(c, _examples(2, 0, "completion"), {"retain": retain[:3]}),
             build_batch(c, _examples(2, 2, "completion"), {"retain": retain[3:]})]
    acc = SimpleNamespace(num_processes=1, device="cpu", reduce=lambda t, op: t)
    norm = _global_counts(c, micro, acc)
    assert (norm["rows:forget"], norm["rows:retain"]) == (4, 5)
