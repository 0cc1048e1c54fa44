"""The training graph (inspect/training.py) and its renderers: every library method, in
every text format, accounts for each query of its plan exactly once, at the time the
runtime computes it; and the graphs of the methods that exercise each stage say what
their specs and the plan say."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ptdsl
from ptdsl import library
from ptdsl.cli.main import main
from ptdsl.inspect.training import PHASES
from ptdsl.inspect.training_build import build_training
from ptdsl.inspect.training_render import FORMATS, schedule_lines, to_dot, to_mermaid, to_text

ROOT = Path(__file__).resolve().parents[2]
HAVE_DOT = shutil.which("dot") is not None


def _graph(name, **params):
    return build_training(ptdsl.compile(name, **params))


def _lines(t, stage):
    s = t.stage(stage)
    return [(line.text, line.when) for line in s.lines] if s else []


def _where_each_query_runs(c, t) -> dict:
    """leaf → the stages whose runs give it (sampling records `logprobs(sampler, y)` itself)."""
    out = {}
    for s in t.stages:
        for r in s.runs:
            for leaf in r.outputs:
                out.setdefault(leaf, []).append(s.name)
    for q in c.plan.queries:
        if q.role_kind == "sampler":
            assert any(q.leaf in text for text, _ in _lines(t, "sample")), q.leaf
            out.setdefault(q.leaf, []).append("sample")
    return out


@pytest.mark.parametrize("name", library.all_names())
def test_every_method_in_every_text_format(name):
    c = ptdsl.compile(name)
    t = build_training(c)
    phases = [list(PHASES).index(s.phase) for s in t.stages]
    assert phases == sorted(phases), "stages in the order the trainer runs them"
    names = [s.name for s in t.stages]
    assert {"sources", "reuse", "optimize"} <= set(names) and len(names) == len(set(names))
    assert [m.name for m in t.models][0] == "policy" and t.models[0].trained
    # each query is computed exactly once, where the plan says: precomputed, recorded or per micro-batch
    where = _where_each_query_runs(c, t)
    reused = c.plan.schedule.when_reused() is not None
    for q in c.plan.queries:
        if q.role_kind == "old" and not reused:  # the current policy's, detached: no forward of its own
            assert q.leaf not in where and any(q.leaf in text for text, _ in _lines(t, "record")), q.leaf
            continue
        expected = ("sample" if q.role_kind == "sampler" else "precompute" if q.precomputable else
                    "record" if q.per_experience and reused else "forward")
        assert where.get(q.leaf) == [expected], (q.leaf, where.get(q.leaf))
    trained = {"policy"} | {learner.name for learner in c.plan.learners}  # separate critics train too
    for s in t.stages:  # a run with gradient only in the step's forward, of a trained network
        for r in s.runs:
            assert not r.grad or (s.name == "forward" and r.model in trained), (s.name, r)
    assert {r.model for s in t.stages for r in s.runs} <= {m.name for m in t.models}
    # text: the title, then one row per line of each stage, the stage named on its first
    text = to_text(t).splitlines()
    assert text[0] == f"{name} — training graph" and text[1].startswith("models      policy")
    assert [row.split()[0] for row in text[2:] if not row.startswith(" ")] == names
    assert len(text) == 2 + sum(len(s.lines) for s in t.stages)
    assert text[1:] == schedule_lines(t)
    # dot and mermaid: every stage and model a node, every edge between declared nodes
    dot, mm = to_dot(t), to_mermaid(t)
    assert dot.startswith(f'digraph "{name}" {{') and dot.rstrip().endswith("}")
    for s in t.stages:
        assert f'"s_{s.name}" [' in dot and (f"    s_{s.name}[" in mm or f"    s_{s.name}{{{{" in mm)
    for m in t.models:
        assert f'"m_{m.name}" [' in dot and f"  m_{m.name}([" in mm
    nodes = {f"s_{s.name}" for s in t.stages} | {f"m_{m.name}" for m in t.models}
    dot_edges = re.findall(r'^  "(\w+)" -> "(\w+)"', dot, re.M)
    mm_edges = re.findall(r'^  (\w+) [-=.]+>(?:\|"[^"]*"\|)? (\w+)$', mm, re.M)
    assert dot_edges == mm_edges and len(dot_edges) == dot.count("->")
    assert all(a in nodes and b in nodes and b.startswith("s_") for a, b in dot_edges)
    assert mm.startswith("flowchart TB\n")


def test_ppo_records_old_log_probs_and_values_for_four_passes():
    t = _graph("ppo")
    assert _lines(t, "record") == [
        ("reference on y → logprobs(reference, y)", "per experience, before its first update"),
        ("prefix sharing, reference: no (one row per prompt)", ""),
        ("policy on y → logprobs(old, y), values(old(value), y)", "per experience, before its first update"),
        ("prefix sharing, policy: no (one row per prompt)", "")]
    assert _lines(t, "reuse") == [("4 passes × 1 mini-batch → 4 optimizer steps per experience", "")]
    assert _lines(t, "forward") == [("policy on y → logprobs(policy, y), values(value, y)",
                                     "per micro-batch, with gradient"), ("prefix sharing, policy: no (one row per prompt)", "")]
    assert [r.grad for r in t.stage("record").runs] == [False, False]
    assert t.steps_per_experience == "4" and "AdamW on policy, value" in _lines(t, "optimize")[0][0]
    assert [(m.name, m.heads) for m in t.models] == [("policy", ("value = value_head(policy)",)),
                                                   ("reference", ())]
    mm = to_mermaid(t)
    assert 's_optimize -.->|"next mini-batch (4 steps per experience)"| s_reuse' in mm
    assert 'm_policy ==>|"on y"| s_forward' in mm and 'm_policy -.->|"on y"| s_record' in mm


def test_grpo_records_old_only_when_an_experience_feeds_several_steps():
    one, two = _graph("grpo"), _graph("grpo", num_iterations=2)
    assert _lines(one, "record") == [("nothing: one optimizer step per experience, so logprobs(old, y) = the "
                                      "current policy's, detached", "")]
    assert one.stage("record").runs == () and "next mini-batch" not in to_dot(one)
    shared = ("prefix sharing, policy: each prompt encoded once for its 8 rows, when the saved prompt tokens pay: "
              "(R − U)·P ≥ 0.1·R·(P + C)", "--no-prefix-sharing: off")
    assert _lines(two, "record") == [("policy on y → logprobs(old, y)", "per experience, before its first update"),
                                     shared]
    assert _lines(two, "reuse")[0][0].startswith("2 passes × 1 mini-batch")
    assert "next mini-batch (2 steps per experience)" in to_dot(two)
    k = _graph("grpo", beta=0.04, steps_per_generation=4)
    assert _lines(k, "record")[2] == ("reference on y → logprobs(reference, y)",
                                     "per experience, before its first update, when --grad-accum < 4")
    assert _lines(k, "sources") == [("prompts", "per experience: 4 ÷ --grad-accum global batches")]


def test_dpo_precomputes_reference_log_probs_once():
    t = _graph("dpo")
    assert t.stages[0].name == "precompute" and t.stages[0].phase == "setup"
    assert _lines(t, "precompute") == [("reference on chosen, rejected → logprobs(reference, chosen), "
                                        "logprobs(reference, rejected)", "once, cached; --no-precompute: per micro-batch"),
                                       ("prefix sharing, reference: each prompt encoded once for its 2 rows, when the "
                                        "saved prompt tokens pay: (R − U)·P ≥ 0.1·R·(P + C)", "--no-prefix-sharing: off")]
    assert t.stage("record") is None and t.stage("sample") is None
    assert _lines(t, "sources") == [("preference: chosen, rejected", "per experience: 1 global batch")]
    assert '"s_precompute" -> "s_forward" [label="cached"]' in to_dot(t)


def test_draws_state_sync_picks_and_special_rollouts():
    assert _lines(_graph("sampo"), "draws") == [
        ("uniform@sampo:19:30 at f32[token chosen]", "per micro-batch, keyed by (seed, step, site, row)"),
        ("uniform@sampo:20:32 at f32[token rejected]", "per micro-batch, keyed by (seed, step, site, row)")]
    beta = _graph("beta_dpo")
    assert [text for text, _ in _lines(beta, "state")] == ["margin_baseline = ema(decay = 0.9, init = 0)",
                                                          "margin_spread = ema(decay = 0.9, init = 0)"]
    assert _lines(beta, "draws")[0][0] == "uniform@beta_dpo:32:25 at f32[seq examples]"
    assert _lines(_graph("bco"), "state") == [("delta = running_mean", "per micro-batch, in checkpoints")]
    tr = _graph("tr_dpo")
    assert _lines(tr, "sync") == [("reference ← 0.6·policy + 0.4·reference", "every 512 optimizer steps")]
    assert tr.models[1].source == "frozen(policy, sync_steps = 512, mixup = 0.6)"
    assert _lines(_graph("tr_dpo", ref_model_sync_steps=64), "sync")[0][1] == "every 64 optimizer steps"
    assert _lines(_graph("online_dpo"), "pick") == [
        ("best(y, r): the best of y's samples of a prompt by r", "per experience"),
        ("worst(y, r): the worst of y's samples of a prompt by r", "per experience")]
    star = _lines(_graph("a_star_po"), "sample")
    assert star[0][1] == "once per prompt, then reused" and star[1][1] == "per experience"
    assert _lines(_graph("gkd_lambda"), "sample")[0][1] == \
        "per micro-batch with probability 0.5, else the dataset's completions"
    nash = _graph("nash_md")
    assert "mixture" in [m.name for m in nash.models] and ("mixture", ("y_mix",)) in \
        [(r.model, r.sets) for r in nash.stage("sample").runs]


def test_kto_detached_query_runs_without_gradient():
    t = _graph("kto")
    runs = [(r.model, r.sets, r.grad) for r in t.stage("forward").runs]
    assert ("policy", ("completion",), True) in runs and ("policy", ("mismatched(completion)",), False) in runs
    assert ("mismatched(completion): formed within each micro-batch", "per micro-batch") in _lines(t, "sources")


SCHEDULED = """method annealed "DPO with an annealed beta"
data preference
policy
reference = frozen(policy)
param beta0 = 0.1 > 0
param beta = beta0 * (1 - 0.5 * progress) > 0
let z = beta * (logp(policy, chosen) - logp(reference, chosen) - logp(policy, rejected) + logp(reference, rejected))
loss mean(-logsigmoid(z))
metric drawn = mean(bernoulli(0.5, z))
"""


def test_a_scheduled_param_shows_as_reading_progress(tmp_path):
    spec = tmp_path / "annealed.ptdsl"
    spec.write_text(SCHEDULED)
    t = _graph(str(spec))
    assert _lines(t, "time") == [("progress", "per optimizer step"),
                                 ("param beta = beta0 * (1 - 0.5 * progress)", "per optimizer step")]
    assert _lines(t, "draws") == [("uniform@annealed:9:21 at f32[seq examples] (metrics only)",
                                   "per micro-batch, keyed by (seed, step, site, row)")]
    assert _graph(str(spec), beta=0.2).stage("time") is None  # --set makes it a constant


# ---- the command line -----------------------------------------------------------------------

def test_graph_training_formats_and_show(capsys, tmp_path):
    for fmt in FORMATS:
        assert main(["graph", "ppo", "--training", "--format", fmt]) == 0
        assert capsys.readouterr().out == FORMATS[fmt](_graph("ppo")) + ("\n" if fmt == "text" else "")
    assert main(["graph", "grpo", "--training", "--set", "num_iterations=2", "-o", str(tmp_path / "g.txt")]) == 0
    assert (tmp_path / "g.txt").read_text() == to_text(_graph("grpo", num_iterations=2))
    assert main(["show", "ppo"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("\ntraining graph\n") + 1:out.index("\n\nir\n")].splitlines()
    assert section == ["training graph"] + ["  " + row for row in schedule_lines(_graph("ppo"))]
    assert "schedule" not in out[:out.index("\ntraining graph\n")]  # the plan no longer repeats it


def test_training_with_loss_graph_options_is_bad_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["graph", "dpo", "--training", "--unoptimised"])
    assert exc.value.code == 2 and "--unoptimised and --no-metrics are for the loss graph" in capsys.readouterr().err


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ptdsl", *args], cwd=ROOT, capture_output=True, timeout=120, env=env)


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` not installed (apt-get install graphviz)")
@pytest.mark.parametrize("name", ["ppo", "dpo", "kto", "beta_dpo", "nash_md", "tr_dpo", "online_dpo"])
def test_graphviz_parses_the_training_dot(name):
    proc = subprocess.run(["dot", "-Tsvg"], input=to_dot(_graph(name)).encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"<svg" in proc.stdout and proc.stderr == b""


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` not installed (apt-get install graphviz)")
def test_training_svg_file(tmp_path):
    assert _run("graph", "ppo", "--training", "--format", "svg", "-o", str(tmp_path / "p.svg")).returncode == 0
    svg = (tmp_path / "p.svg").read_text()
    assert "<svg" in svg and "ppo — training graph" in svg


def test_missing_graphviz_is_the_loss_graphs_clear_error():
    proc = _run("graph", "ppo", "--training", "--format", "svg", env=dict(os.environ, PATH=""))
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert "Graphviz's `dot`" in err and "apt-get install graphviz" in err and "--format dot" in err


def test_training_graph_commands_do_not_import_torch():
    code = ("import sys; from ptdsl.cli.main import main; "
            "[main(a) for a in (['graph', 'ppo', '--training'], ['graph', 'grpo', '--training', '--format', 'dot'], "
            "['graph', 'dpo', '--training', '--format', 'mermaid'], ['show', 'ppo'])]; "
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_show_says_where_prompts_are_shared():
    """Per forward: pairs and groups share (with the rule), a ranked list shares up to its size,
    one row per prompt or a separate critic does not."""
    def sharing(name, stage="forward", **params):
        return [text for text, _ in _lines(_graph(name, **params), stage) if text.startswith("prefix sharing")]
    assert sharing("dpo") == ["prefix sharing, policy: each prompt encoded once for its 2 rows, when the saved "
                              "prompt tokens pay: (R − U)·P ≥ 0.1·R·(P + C)"]
    assert "for its 8 rows" in sharing("grpo")[0]
    assert "for its up to 4 rows" in sharing("lipo")[0]
    assert sharing("sft") == ["prefix sharing, policy: no (one row per prompt)"]
    assert "prefix sharing, value: no (a separate critic encodes every row)" in sharing("ppo_critic", "record")
