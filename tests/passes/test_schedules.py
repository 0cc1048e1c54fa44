"""The training time and scheduled params in the compiler: `step`, `progress` and `epoch`
are scalar leaves; a param whose default reads them is lowered as its expression (and is a
constant again under --set); its constraint is checked at step 0 when compiled and at every
step of a run by `violations`; where a constant is needed the time is E0405."""
import pytest
import torch

import ptdsl
from ptdsl.ir.consteval import Schedule
from ptdsl.passes.params import holds
from ptdsl.passes.schedules import Evaluator, time_at, violations

SPEC = """method annealed "DPO with an annealed beta"
data preference
policy
reference = frozen(policy)
param beta0 = 0.2 > 0
param beta = beta0 * (1 - 0.5 * progress) > 0.01
param half = beta / 2
param warm = min(1, step / 4)
param per_epoch = where(epoch < 1, 1.0, 0.25) >= 0
let z = beta * (logp(policy, chosen) - logp(reference, chosen) - logp(policy, rejected) + logp(reference, rejected))
loss mean(-logsigmoid(z)) * warm * per_epoch + 0 * half
metric half = half
"""


def _write(tmp_path, text, name="annealed"):
    p = tmp_path / f"{name}.ptdsl"
    p.write_text(text)
    return str(p)


def _inputs(c, **time):
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    x = {f"mask({s})": mask for s in ("chosen", "rejected")}
    for m in ("policy", "reference"):
        for s in ("chosen", "rejected"):
            x[f"logprobs({m}, {s})"] = -torch.rand(2, 3, dtype=torch.float64)
    for name in ("step", "progress", "epoch"):
        x[name] = torch.tensor(float(time.get(name, 0)), dtype=torch.float64)
    return {k: v for k, v in x.items() if k in {i.name for i in c.inputs}}


def test_scheduled_params_are_expressions_of_the_time(tmp_path):
    c = ptdsl.compile(_write(tmp_path, SPEC))
    assert isinstance(c.params["beta"], Schedule) and str(c.params["beta"]) == "beta0 * (1 - 0.5 * progress)"
    assert isinstance(c.params["half"], Schedule)  # through a scheduled param
    assert c.params["beta0"] == 0.2
    assert {i.name for i in c.inputs if i.kind == "time"} == {"step", "progress", "epoch"}
    for step, progress, epoch in [(0, 0.0, 0), (2, 0.5, 1), (4, 1.0, 3)]:
        x = _inputs(c, step=step, progress=progress, epoch=epoch)
        beta = 0.2 * (1 - 0.5 * progress)
        warm = min(1, step / 4)
        per_epoch = 1.0 if epoch < 1 else 0.25
        h = lambda s: (torch.where(x[f"mask({s})"], x[f"logprobs(policy, {s})"] - x[f"logprobs(reference, {s})"], 0)
                       .sum(-1))
        want = -torch.nn.functional.logsigmoid(beta * (h("chosen") - h("rejected"))).mean() * warm * per_epoch
        loss, metrics = c.loss(x)
        torch.testing.assert_close(loss, want)
        torch.testing.assert_close(metrics["half"], torch.tensor(beta / 2, dtype=torch.float64))
        torch.testing.assert_close(c.interpret(x)[0], want)


def test_set_makes_a_scheduled_param_a_constant(tmp_path):
    c = ptdsl.compile(_write(tmp_path, SPEC), beta=0.3, warm=1)
    assert c.params["beta"] == 0.3 and c.params["half"] == 0.15 and c.params["warm"] == 1
    assert {i.name for i in c.inputs if i.kind == "time"} == {"epoch"}  # per_epoch still reads it


def test_a_scheduled_constraint_is_checked_at_the_start(tmp_path):
    bad = SPEC.replace("param beta0 = 0.2 > 0", "param beta0 = 0.005 > 0")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(_write(tmp_path, bad))
    (d,) = info.value.diagnostics
    assert d.code == "E0401" and "`beta` = 0.005 violates" in d.message
    assert "start of training" in d.notes[0]


def test_violations_name_the_first_step_of_the_run_that_breaks_a_constraint(tmp_path):
    spec = SPEC.replace("param beta = beta0 * (1 - 0.5 * progress) > 0.01",
                        "param beta = beta0 * (1 - 2 * progress) > 0.01")
    c = ptdsl.compile(_write(tmp_path, spec))  # 0.2 at step 0: fine when compiled
    assert violations(c.method.definition, c.params, 5, 2, holds) == [
        "parameter `beta` = 0.0 at optimizer step 3 of 5 (step = 2, progress = 0.5, epoch = 1) "
        "violates its constraint `> 0.01`"]
    assert violations(c.method.definition, c.params, 1, 1, holds) == []  # one step: progress stays 0


def test_the_clock_and_the_evaluator(tmp_path):
    assert time_at(0, 5, 2) == {"step": 0, "progress": 0.0, "epoch": 0}
    assert time_at(4, 5, 2) == {"step": 4, "progress": 1.0, "epoch": 2}
    assert time_at(0, 1, 1)["progress"] == 0.0
    c = ptdsl.compile(_write(tmp_path, SPEC))
    at = Evaluator(c.params).at({"step": 2, "progress": 1.0, "epoch": 1})
    assert at["beta"] == pytest.approx(0.1) and at["half"] == pytest.approx(0.05)
    assert at["warm"] == 0.5 and at["per_epoch"] == 0.25 and at["beta0"] == 0.2


@pytest.mark.parametrize("line,code,what", [
    ("param step = 3", "E0202", "`step` is a built-in value"),
    ("let epoch = 1", "E0202", "`epoch` is a built-in value"),
    ("param x = 0.1 < 1 - progress", "E0405", "`progress` changes during training"),
    ("param t = 1 - progress\nrollout y = sample(policy, temperature = t)", "E0405",
     "`t` is scheduled: its value changes during training"),
    ("param flag = where(step < 3, true, false)", "E0403", "must be a number, not a boolean"),
    ("param q = token_mean(logprobs(policy, chosen)) * progress", "E0403", "not a constant"),
])
def test_time_where_it_cannot_be(tmp_path, line, code, what):
    spec = SPEC.replace("metric half = half", line)
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(_write(tmp_path, spec))
    found = [(d.code, d.message + " | " + " ".join(l.text for l in d.labels)) for d in info.value.diagnostics]
    assert any(c == code and what in text for c, text in found), found
