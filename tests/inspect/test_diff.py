"""Method diffs: declarations by name, loss graphs by structure, changes at spec lines."""
import json

import ptdsl
from ptdsl.inspect.canon import expr_text, structural_hashes
from ptdsl.inspect.diff import diff_methods
from ptdsl.inspect.diff_text import to_json, to_text


def _diff(a, b, pa=None, pb=None):
    return diff_methods(ptdsl.compile(a, **(pa or {})), ptdsl.compile(b, **(pb or {})))


def _change(d, section, name):
    return next(c for c in d.changes if c.section == section and c.name == name)


def test_dpo_to_cdpo_is_the_label_smoothing_term():
    d = _diff("dpo", "cdpo")
    assert (_change(d, "params", "label_smoothing").a, _change(d, "params", "label_smoothing").b) == \
        ("0  (in [0, 0.5))", "0.1  (in [0, 0.5))")
    assert _change(d, "header", "extends").b == "dpo"
    added = [n for n in d.nodes if n.kind == "added"]
    assert [(n.where, n.b) for n in added] == [("dpo.ptdsl:18:52", "0.1 * logsigmoid(-z)")]
    loss = next(n for n in d.nodes if n.label == "loss")
    assert loss.a == "mean(-1 * logsigmoid(z))" and loss.b == "mean(-0.9 * logsigmoid(z) - 0.1 * logsigmoid(-z))"
    assert not any(n.kind == "removed" for n in d.nodes)


def test_grpo_to_dapo_is_token_mean_and_epsilon_high():
    d = _diff("grpo", "dapo")
    eps = _change(d, "params", "epsilon_high")
    assert (eps.a, eps.b) == ("0.2  (>= epsilon)", "0.28  (>= epsilon)")
    assert "mask_truncated = true" in _change(d, "rollouts", "y").b
    changed = {n.label: n for n in d.nodes if n.kind == "changed"}
    assert changed["clipped"].b == "clip(ratio, 0.8, 1.28)" and changed["clipped"].where == "grpo.ptdsl:28:15"
    assert changed["loss"].b == "token_mean(per_token)" and changed["loss"].where == "dapo.ptdsl:12:6"
    assert "per_token" in d.consequences and "metric clip_ratio" in d.consequences
    text = to_text(d)
    assert "~ epsilon_high" in text and "→ token_mean(per_token)" in text


def test_identical_methods_and_parameter_variants():
    assert _diff("dpo", "dpo").same
    assert "no differences" in to_text(_diff("dpo", "dpo"))
    d = _diff("cdpo", "dpo", pa={"label_smoothing": 0})  # the term folds away: same graph
    assert [c.name for c in d.changes if c.section != "header"] == [] and not d.nodes


def test_inputs_and_metrics_only_one_side_has():
    d = _diff("sft", "orpo")
    inputs = {c.name: (c.a, c.b) for c in d.changes if c.section == "inputs"}
    assert inputs["logprobs(policy, completion)"][1] is None and inputs["logprobs(policy, chosen)"][0] is None
    assert _change(d, "metrics", "nll").a is None


def test_json_round_trips():
    data = json.loads(to_json(_diff("grpo", "dapo")))
    assert data["a"] == "grpo" and not data["same"] and any(n["label"] == "loss" for n in data["nodes"])


def test_structural_hash_ignores_node_ids_and_operand_order(tmp_path):
    base = ('method m "x"\ndata preference\npolicy\nreference = frozen(policy)\n'
            'let h = logp(policy, chosen) - logp(reference, chosen)\n')
    (tmp_path / "m1.ptdsl").write_text(base + "loss mean(-logsigmoid(h + logp(policy, rejected)))\n")
    (tmp_path / "m2.ptdsl").write_text(base + "let unused = 2 * h\nloss mean(-logsigmoid(logp(policy, rejected) + h))\n")
    g1, g2 = (ptdsl.compile(str(tmp_path / f"m{i}.ptdsl")).graph for i in (1, 2))
    assert structural_hashes(g1)[g1.graph["loss"]] == structural_hashes(g2)[g2.graph["loss"]]
    assert expr_text(g1, g1.graph["loss"]) == "mean(-logsigmoid(h + logp(policy, rejected)))"
