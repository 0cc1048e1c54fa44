"""The `update` statement (experience reuse), the `sampler` role and W0202: how they
parse, inherit, bind params, fail, and what the plan makes of them."""
import pytest

import ptdsl
from ptdsl.inspect.training_build import build_training
from ptdsl.inspect.training_render import schedule_lines
from ptdsl.syntax import ast
from ptdsl.syntax.parse import ParseFailed, parse

GRPO = '''method m "a clipped objective"
data prompts
policy
rollout y = sample(policy, n = 2)
reward r = verifier("accuracy")
param k = 2 >= 1
let adv = r(y) - group_mean(r(y))
let ratio = exp(logprobs(policy, y) - logprobs(old, y))
loss -mean(mean_tokens(min(ratio * adv, clip(ratio, 0.8, 1.2) * adv)))
'''


def _load(tmp_path, text, name="m"):
    f = tmp_path / f"{name}.ptdsl"
    f.write_text(text)
    return ptdsl.load(str(f))


def _errors(tmp_path, text):
    with pytest.raises(ptdsl.SpecError) as info:
        _load(tmp_path, text)
    return [(d.code, d.message, d.span.line, d.span.col) for d in info.value.diagnostics]


def test_update_parses_to_its_options_with_spans():
    (*_, stmt) = parse('method m "m"\nupdate passes = 2, minibatches = k * 2\n', "m.ptdsl").statements
    assert isinstance(stmt, ast.UpdateDecl)
    assert [o.name for o in stmt.options] == ["passes", "minibatches"]
    passes, minibatches = stmt.options
    assert (passes.span.line, passes.span.col, passes.span.end_col) == (2, 8, 18)
    assert (minibatches.span.col, minibatches.span.end_col) == (20, 39)


def test_update_is_a_keyword():
    with pytest.raises(ParseFailed) as info:
        parse('method m "m"\nlet update = 1\n', "m.ptdsl")
    assert info.value.diagnostic.message == "`update` is a keyword and cannot be used as a name"
    with pytest.raises(ParseFailed) as info:
        parse('method m "m"\nupdate 2\n', "m.ptdsl")
    assert info.value.diagnostic.message == "`update` takes its options as `NAME = VALUE`"


@pytest.mark.parametrize("line,schedule", [
    ("", (1, 1, None, False)),
    ("update passes = 2", (2, 1, None, True)),
    ("update minibatches = k * 2", (1, 4, None, True)),
    ("update passes = k, micro_batches = 0", (2, None, 0, True)),
    ("update micro_batches = 6 / k", (1, None, 3, True)),
])
def test_the_plan_carries_the_schedule(tmp_path, line, schedule):
    s = _load(tmp_path, GRPO + line + "\n")._default.plan.schedule
    assert (s.passes, s.minibatches, s.micro_batches, s.stated) == schedule


def test_a_child_inherits_the_update_line_and_may_restate_it(tmp_path):
    _load(tmp_path, GRPO + "update passes = k\n", "parent")
    child = _load(tmp_path, 'method child extends parent "c"\nparam k = 3\n', "child")
    assert child._default.plan.schedule.passes == 3
    other = _load(tmp_path, 'method other extends parent "c"\nupdate passes = 1, minibatches = 2\n', "other")
    s = other._default.plan.schedule
    assert (s.passes, s.minibatches) == (1, 2)
    assert ptdsl.compile(child, k=5).plan.schedule.passes == 5


@pytest.mark.parametrize("line,want", [
    ("update pases = 2", [("E0209", "`update` has no option `pases`", 10, 8)]),
    ("update passes = 0", [("E0403", "option `passes` must be ≥ 1, got 0", 10, 8)]),
    ("update minibatches = 1 - k", [("E0403", "option `minibatches` must be ≥ 1, got -1", 10, 8)]),
    ("update micro_batches = -1", [("E0403", "option `micro_batches` must be ≥ 0, got -1", 10, 8)]),
    ("update passes = 1.5", [("E0403", "option `passes` takes an int, got 1.5", 10, 8)]),
    ("update passes = length(y)", [("E0403", "option `passes` must be a constant", 10, 17)]),
    ("update passes = 2, passes = 3", [("E0209", "`update` sets `passes` twice", 10, 20)]),
    ("update minibatches = 2, micro_batches = 2",
     [("E0209", "`minibatches` and `micro_batches` are two spellings of one count", 10, 25)]),
])
def test_bad_update_options(tmp_path, line, want):
    assert _errors(tmp_path, GRPO + line + "\n") == want


def test_the_did_you_mean_for_an_unknown_option(tmp_path):
    with pytest.raises(ptdsl.SpecError) as info:
        _load(tmp_path, GRPO + "update passes = 2, mini_batches = 2\n")
    assert info.value.diagnostics[0].help == "did you mean `minibatches`?"


def test_two_update_lines_are_one_too_many(tmp_path):
    codes = _errors(tmp_path, GRPO + "update passes = 2\nupdate passes = 3\n")
    assert codes == [("E0202", "`update` is defined twice", 11, 1)]


# ---- W0202 ---------------------------------------------------------------------------

def test_old_without_an_update_line_warns_at_the_first_old(tmp_path):
    (w,) = _load(tmp_path, GRPO).warnings
    assert (w.severity, w.code, w.span.line, w.span.col) == ("warning", "W0202", 8, 39)
    assert "clipping cannot act" in w.message and "update passes = 2" in w.help


@pytest.mark.parametrize("line", ["update passes = 1", "update passes = 2, minibatches = 2"])
def test_any_update_line_says_the_schedule_is_meant(tmp_path, line):
    assert _load(tmp_path, GRPO + line + "\n").warnings == []


def test_no_warning_without_old(tmp_path):
    text = GRPO.replace("logprobs(old, y)", "stopgrad(logprobs(policy, y))")
    assert _load(tmp_path, text).warnings == []


def test_no_shipped_spec_warns():
    from ptdsl import library
    assert [n for n in library.all_names() if ptdsl.load(n).warnings] == []


def test_check_prints_the_warning_and_exits_0(tmp_path, capsys):
    from ptdsl.cli.main import main
    f = tmp_path / "m.ptdsl"
    f.write_text(GRPO)
    assert main(["check", str(f)]) == 0
    captured = capsys.readouterr()
    assert "warning[W0202]" in captured.err and captured.out.startswith("ok: m")


# ---- the sampler -----------------------------------------------------------------------

@pytest.mark.parametrize("edit,message", [
    (("logprobs(old, y)", "entropy(sampler, y)"), "the sampler records only the log-probs of the tokens it drew"),
    (("logprobs(old, y)", "logprobs(sampler, best(y, r))"), "`sampler` exists only for rollout sets"),
    (("n = 2)", "n = 1, on_policy = 0.5)\ndata sft"), None),
])
def test_sampler_queries_only_the_log_probs_of_a_sampled_rollout(tmp_path, edit, message):
    text = GRPO.replace(*edit)
    if message is None:  # on a rollout that sometimes holds dataset completions
        text = text.replace("data prompts\n", "").replace("- group_mean(r(y))", "").replace("n = 1, on", "n = 1, on")
        text = text.replace("logprobs(old, y)", "logprobs(sampler, y)")
        message = "`y` holds the dataset's completions in batches that do not sample"
    diags = _errors(tmp_path, text)
    assert diags[0][0] == "E0210" and diags[0][1].startswith(message), diags


def test_sampler_is_a_built_in_role(tmp_path):
    assert _errors(tmp_path, GRPO + "sampler = frozen(policy)\n")[0][:2] == (
        "E0202", "`sampler` is a built-in role and cannot be rebound")
    text = GRPO.replace("sample(policy, n = 2)", "sample(sampler, n = 2)")
    assert _errors(tmp_path, text)[0][:2] == ("E0210", "cannot sample from `sampler`")


def test_the_sampler_leaf_is_recorded_at_sampling_and_never_trainable(tmp_path):
    text = GRPO.replace("logprobs(old, y)", "logprobs(sampler, y)") + "update passes = 2\n"
    c = _load(tmp_path, text)._default
    (q,) = [q for q in c.plan.queries if q.model == "sampler"]
    assert (q.role_kind, q.frozen, q.per_experience) == ("sampler", True, False)
    assert "sampler" not in c.plan.forwards
    assert "logprobs(sampler, y)                         frozen recorded at sampling" in c.plan.describe()


def test_describe_prints_the_schedule_and_what_is_recorded():
    # the plan's per-query flags; the schedule itself is the training graph (tests/inspect/test_training.py)
    text = ptdsl.compile("ppo").plan.describe()
    assert "logprobs(old, y)                             frozen recorded per experience" in text
    assert "logprobs(reference, y)                       frozen once per experience" in text
    grpo = ptdsl.compile("grpo", beta=0.04).plan.describe()
    assert "logprobs(old, y)                             frozen = the current policy, detached" in grpo
    schedule = "\n".join(schedule_lines(build_training(ptdsl.compile("ppo"))))
    assert "reuse       4 passes × 1 mini-batch → 4 optimizer steps per experience" in schedule
    assert "policy on y → logprobs(old, y), values(old(value), y)" in schedule
    grpo = "\n".join(schedule_lines(build_training(ptdsl.compile("grpo", beta=0.04))))
    assert "1 pass × 1 mini-batch (micro_batches = --grad-accum) → 1 optimizer step per experience" in grpo
    assert "record      nothing: one optimizer step per experience" in grpo
    two = "\n".join(schedule_lines(build_training(ptdsl.compile("grpo", beta=0.04, steps_per_generation=4))))
    assert "[per experience, before its first update, when --grad-accum < 4]" in two
