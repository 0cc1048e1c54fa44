"""Graph rendering: gradient-flow classes, valid DOT (checked by Graphviz when it is
installed), Mermaid and text, and a clear message when `dot` is missing."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ptdsl
from ptdsl.inspect.render import GRAD, to_dot, to_mermaid, to_text
from ptdsl.inspect.view import build_view

ROOT = Path(__file__).resolve().parents[2]
HAVE_DOT = shutil.which("dot") is not None


def _view(name, **params):
    c = ptdsl.compile(name, **params)
    return build_view(c.graph, c.name)


def _flows(view):
    return {n.label: n.flow for n in view.nodes if n.is_leaf}


def test_trainable_paths_frozen_leaves_and_detached_queries():
    assert _flows(_view("dpo")) == {
        "logprobs(policy, chosen)": "grad", "logprobs(policy, rejected)": "grad",
        "logprobs(reference, chosen)": "frozen", "logprobs(reference, rejected)": "frozen",
        "mask(chosen)": "frozen", "mask(rejected)": "frozen"}
    kto = _flows(_view("kto"))  # z0 is detached: its policy query gets no gradient
    assert kto["logprobs(policy, mismatched(completion))"] == "detached"
    assert kto["logprobs(policy, completion)"] == "grad" and kto["label"] == "frozen"
    grpo = _view("grpo")
    ops = {n.label: n.flow for n in grpo.nodes if not n.is_leaf}
    assert ops["group_std"] == "frozen" and ops["minimum"] == "grad" and ops["mean_tokens"] == "grad"
    # the edge from the advantage into the surrogate carries no gradient; the ratio's does
    adv = next(n.id for n in grpo.nodes if n.name == "adv")
    ratio = next(n.id for n in grpo.nodes if n.name == "ratio")
    assert not any(e.grad for e in grpo.edges if e.src == adv)
    assert any(e.grad for e in grpo.edges if e.src == ratio)


def test_labels_carry_op_constants_level_and_spec_line():
    v = _view("dpo")
    by_label = {n.label: n for n in v.nodes}
    beta = [n for n in v.nodes if n.label == "mul(0.1, •)"]
    assert [n.name for n in beta] == ["chosen_reward", "rejected_reward"]
    assert by_label["logsigmoid"].level == "f32[seq examples]" and by_label["logsigmoid"].where == "dpo.ptdsl:18"
    assert [o.name for o in v.outputs][:2] == ["loss", "metric reward_accuracy"]
    loss_only = build_view(ptdsl.compile("dpo").graph, "dpo", metrics=False)
    assert [o.name for o in loss_only.outputs] == ["loss"] and len(loss_only.nodes) < len(v.nodes)


def test_dot_styles_gradient_edges_solid_and_frozen_dashed():
    dot = to_dot(_view("dpo"))
    assert dot.startswith('digraph "dpo" {') and dot.rstrip().endswith("}")
    edges = [l for l in dot.splitlines() if "->" in l]
    assert any(GRAD in l and "dashed" not in l for l in edges)
    assert any("dashed" in l for l in edges)
    assert 'shape=doubleoctagon' in dot


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` not installed (apt-get install graphviz)")
@pytest.mark.parametrize("name", ["dpo", "kto", "grpo", "orpo", "rloo"])
def test_graphviz_parses_the_dot(name):
    proc = subprocess.run(["dot", "-Tsvg"], input=to_dot(_view(name)).encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"<svg" in proc.stdout and proc.stderr == b""


def test_mermaid_declares_every_node_and_styles_gradient_links():
    v = _view("dpo")
    mm = to_mermaid(v)
    assert mm.startswith("flowchart TB\n")
    for n in v.nodes:
        assert f"  n{n.id}[" in mm or f"  n{n.id}(" in mm
    assert "-.->" in mm and "-->" in mm and "linkStyle" in mm and 'out0{{"loss"}}:::loss' in mm


def test_text_lists_inputs_ops_and_outputs():
    text = to_text(_view("dpo"))
    assert "● logprobs(policy, chosen)" in text and "○ logprobs(reference, chosen)" in text
    assert "mul(0.1, %6)" in text and "loss = %" in text and "metric reward_accuracy" in text


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ptdsl", *args], cwd=ROOT, capture_output=True, timeout=120, env=env)


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` not installed (apt-get install graphviz)")
def test_svg_and_png_files(tmp_path):
    assert _run("graph", "dpo", "--format", "svg", "-o", str(tmp_path / "d.svg")).returncode == 0
    assert (tmp_path / "d.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert _run("graph", "grpo", "--format", "png", "-o", str(tmp_path / "g.png")).returncode == 0
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_graphviz_is_a_clear_error():
    env = dict(os.environ, PATH="")
    proc = _run("graph", "dpo", "--format", "svg", env=env)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert "Graphviz's `dot`" in err and "apt-get install graphviz" in err and "--format dot" in err
    assert _run("graph", "dpo", "--format", "dot", env=env).returncode == 0  # DOT needs no binary
