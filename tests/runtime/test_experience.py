"""The experience schedule (runtime/experience.py): which experience and mini-batch each
optimizer step trains on, which dataset rows each holds on each process, and the
set-up errors a schedule that does not fit the run gets before step 1."""
import itertools

import pytest
import torch

from ptdsl.plan import Schedule
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.experience import indices, resolve, split


def _reuse(passes=1, minibatches=1, micro_batches=None, n=100, batch_size=2, grad_accum=1, world=1):
    return resolve(Schedule(passes, minibatches, micro_batches, True), n, batch_size, grad_accum, world)


def test_each_step_takes_its_experience_and_mini_batch_in_order():
    r = _reuse(passes=2, minibatches=3)
    assert r.steps == 6
    assert [r.experience(s) for s in range(12)] == [0] * 6 + [1] * 6
    # every pass takes the mini-batches in the same order
    assert [r.minibatch(s) for s in range(12)] == [0, 1, 2, 0, 1, 2] * 2


def test_one_pass_one_mini_batch_is_one_experience_per_step():
    r = _reuse()
    assert r.steps == 1 and [r.experience(s) for s in range(4)] == [0, 1, 2, 3]
    assert {r.minibatch(s) for s in range(4)} == {0}


def test_one_pass_one_mini_batch_keeps_the_global_batch_of_each_step():
    """Experience k with one mini-batch is the step's old global batch: a slice of the epoch's
    seeded permutation, split over processes and then over micro-batches by striding."""
    n, per_step, seed = 37, 6, 3
    r = _reuse(n=n, batch_size=1, grad_accum=3, world=2)
    for step in range(2 * (n // per_step)):
        epoch, k = divmod(step, n // per_step)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        want = perm[k * per_step:(k + 1) * per_step]
        assert indices(n, step, r.size, seed) == want
        for p in range(2):
            assert split(want, r, p, 2) == [[want[p::2][i::3] for i in range(3)]]


@pytest.mark.parametrize("passes,minibatches,grad_accum,world", [(1, 1, 1, 1), (2, 3, 1, 1), (4, 2, 2, 2), (1, 4, 3, 1)])
def test_rows_are_never_repeated_within_an_epoch(passes, minibatches, grad_accum, world):
    """Over one epoch every row is used at most once (the remainder of the dataset, fewer rows
    than an experience, is dropped), each mini-batch holds one global batch split over the
    processes and micro-batches without overlap, and the next epoch permutes again."""
    n, b, seed = 103, 2, 0
    r = _reuse(passes, minibatches, n=n, batch_size=b, grad_accum=grad_accum, world=world)
    assert r.per_epoch == n // (b * grad_accum * world * minibatches)
    assert r.default_total() == r.per_epoch * passes * minibatches
    seen = []
    for k in range(r.per_epoch):
        ids = indices(n, k, r.size, seed)
        assert len(ids) == r.size
        parts = [split(ids, r, p, world) for p in range(world)]
        for j in range(minibatches):
            rows = [x for p in range(world) for micro in parts[p][j] for x in micro]
            assert sorted(rows) == sorted(ids[j * r.per_step:(j + 1) * r.per_step])
            assert all(len(micro) == b for p in range(world) for micro in parts[p][j])
        seen += ids
    assert len(seen) == len(set(seen)) == r.per_epoch * r.size
    assert indices(n, r.per_epoch, r.size, seed) != indices(n, 0, r.size, seed)  # a new epoch, a new order


def test_the_steps_of_an_epoch_run_over_its_experiences():
    r = _reuse(passes=2, minibatches=2, n=40, batch_size=4)  # 4 examples per step, 8 per experience
    assert r.per_epoch == 5 and r.default_total() == 20
    steps = range(r.default_total())
    assert [r.epoch(s) for s in steps] == [0] * 20
    assert r.epoch(20) == 1
    # each experience's mini-batch j trains twice (passes), at steps 4k + j and 4k + 2 + j
    for k, j in itertools.product(range(5), range(2)):
        assert [s for s in steps if r.experience(s) == k and r.minibatch(s) == j] == [4 * k + j, 4 * k + 2 + j]


def test_micro_batches_count_micro_batches_and_zero_means_grad_accum():
    assert _reuse(passes=2, minibatches=None, micro_batches=0, grad_accum=4).minibatches == 1
    assert _reuse(passes=2, minibatches=None, micro_batches=8, grad_accum=4).minibatches == 2
    assert _reuse(passes=1, minibatches=None, micro_batches=2, grad_accum=1).steps == 2


def test_micro_batches_that_grad_accum_does_not_divide_is_an_error_with_the_numbers():
    with pytest.raises(RuntimeSetupError) as info:
        _reuse(minibatches=None, micro_batches=6, grad_accum=4)
    assert "micro_batches = 6" in str(info.value) and "--grad-accum 4" in str(info.value)
    assert "multiple of 4" in info.value.help


def test_a_dataset_smaller_than_one_experience_is_an_error_with_the_numbers():
    with pytest.raises(RuntimeSetupError) as info:
        _reuse(minibatches=3, n=10, batch_size=2, grad_accum=2)
    assert str(info.value).startswith("the dataset has 10 usable rows, fewer than one batch of experience "
                                      "(2 × 2 accumulation × 1 processes × 3 mini-batches = 12)")
    with pytest.raises(RuntimeSetupError, match="fewer than one global batch"):
        _reuse(n=3, batch_size=4)


def test_the_schedule_says_when_old_is_recorded():
    assert not Schedule().reuses(1) and Schedule().when_reused() is None
    assert Schedule(passes=2).reuses(1) and Schedule(passes=2).when_reused() == ""
    k = Schedule(1, None, 4, True)
    assert k.reuses(1) and k.reuses(2) and not k.reuses(4)
    assert k.when_reused() == "when --grad-accum < 4"
    assert not Schedule(1, None, 0, True).reuses(8) and Schedule(1, None, 0, True).when_reused() is None


# ---- resume inside an experience ---------------------------------------------------------

@pytest.mark.integration
def test_a_run_resumed_inside_an_experience_trains_bit_for_bit_as_the_uninterrupted_run(tmp_path):
    """grpo with two passes (and β > 0, so the reference's log-probs on the samples are recorded
    per experience too): checkpoint-3 is taken after the first of experience 1's two steps. A run
    resumed from it continues that experience from the saved file — the same samples, rewards
    and recorded tensors, not new ones — and ends with the same weights, bit for bit."""
    import json
    import shutil

    from safetensors.torch import load_file

    from ptdsl.runtime import checkpoint
    from ptdsl.runtime.loop import train
    args = dict(steps=4, save_steps=1, batch_size=2, max_examples=16, quiet=True,
                params={"num_iterations": 2, "beta": 0.04, "num_generations": 2})
    full = tmp_path / "full"
    train("grpo", output=str(full), **args)
    saved = full / "checkpoint-3" / checkpoint.experience_file(0)
    state = torch.load(saved, weights_only=True)
    assert state["index"] == 1 and len(state["minibatches"]) == 1
    (micro,) = state["minibatches"][0]
    assert set(micro["recorded"]) == {"logprobs(old, y)", "logprobs(reference, y)"}
    assert len(micro["sets"]["y"]["completion_ids"]) == 4 and len(micro["rewards"]["r(y)"]) == 4

    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "final")
    train("grpo", output=str(resumed), resume=True, **args)
    a, b = load_file(str(full / "final" / "model.safetensors")), load_file(str(resumed / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and [r["loss"] for r in rows] == [r["loss"] for r in want]


@pytest.mark.integration
def test_a_checkpoint_without_its_experience_file_is_not_resumed_from(tmp_path):
    from ptdsl.runtime import checkpoint
    from ptdsl.runtime.loop import train
    out = tmp_path / "run"
    train("grpo", output=str(out), steps=3, save_steps=1, batch_size=2, max_examples=8, quiet=True,
          params={"num_iterations": 2, "num_generations": 2})
    (out / "checkpoint-2" / checkpoint.experience_file(0)).unlink()
    found, skipped = checkpoint.choose(out, 3, checkpoint.Layout(experience=True))
    assert found.path.name == "checkpoint-1"
    assert "`experience_0.pt` is missing" in dict((p.name, r) for p, r in skipped)["checkpoint-2"]
