"""Messages for common mistakes (issue 9, item 8): a byte-order mark is not a mistake,
a chained comparison and a missing `reference` get targeted help, and errors in lines
a child inherits also point at the child's line that caused them."""
import pytest

import ptdsl
from ptdsl.syntax.parse import parse

SFT = 'method bom_sft "BOM"\ndata sft\npolicy\nloss mean(-logp(policy, completion))\n'


def test_byte_order_mark_is_accepted_by_files_and_parse(tmp_path):
    f = tmp_path / "bom.ptdsl"
    f.write_bytes(b"\xef\xbb\xbf" + SFT.encode())
    assert ptdsl.load(str(f)).name == "bom_sft"
    spec = parse("\ufeff" + SFT, "x.ptdsl")
    assert spec.statements[0].span.col == 1 and spec.text == SFT


def test_columns_on_the_first_line_ignore_the_byte_order_mark(tmp_path):
    f = tmp_path / "bom.ptdsl"
    f.write_bytes(b'\xef\xbb\xbfmethod m extends "title"\n')
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(str(f))
    d = info.value.diagnostics[0]
    assert (d.span.line, d.span.col) == (1, 18) and "\ufeff" not in str(info.value)


def _error(tmp_path, text):
    f = tmp_path / "m.ptdsl"
    f.write_text(text)
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(str(f))
    return info.value.diagnostics


HEAD = 'method m "m"\ndata preference\npolicy\nreference = frozen(policy)\nlet d = logp(policy, chosen)\n'


@pytest.mark.parametrize("expr,fix", [
    ("mean(0 < d < 1)", "`0 < d and d < 1`"),
    ("mean(-1 <= d * (2 + 1) < exp(d) + 1)", "`-1 <= d * (2 + 1) and d * (2 + 1) < exp(d) + 1`"),
    ("mean(d == d == d)", "`d == d and d == d`"),
    ("mean(f(d, 0 < d < 1))", "`0 < d and d < 1`"),
])
def test_chained_comparison(tmp_path, expr, fix):
    (d,) = _error(tmp_path, HEAD + f"metric x = {expr}\nloss -mean(d)\n")
    assert d.code == "E0102" and d.message == "comparisons do not chain"
    assert d.help.endswith(f"write {fix}"), d.help
    assert len(d.labels) == 2 and d.labels[1].span.col < d.labels[0].span.col


@pytest.mark.parametrize("constraint,fix", [("> 0 < 1", "in (0, 1)"), (">= 0 <= 1", "in [0, 1]"),
                                            ("< 0 < 1", "an interval")])
def test_two_bounds_on_a_parameter(tmp_path, constraint, fix):
    (d,) = _error(tmp_path, HEAD + f"param eps = 0.1 {constraint}\nloss -mean(d)\n")
    assert d.message == "a parameter takes one constraint" and fix in d.help


def test_a_lone_comparison_operator_is_not_called_a_chain(tmp_path):
    (d,) = _error(tmp_path, HEAD + "let x = < 3\nloss -mean(d)\n")
    assert d.message.startswith("expected an expression")


@pytest.mark.parametrize("line", ["let r = logp(reference, chosen)",
                                  "let r = logp(teacher, chosen)"])
def test_undeclared_role_suggests_declaring_it(tmp_path, line):
    name = line.split("(")[1].split(",")[0]
    text = 'method m "m"\ndata preference\npolicy\n' + line + "\nloss -mean(logp(policy, chosen) - r)\n"
    (d,) = _error(tmp_path, text)
    assert d.code == "E0210" and f"`{name} = frozen(policy)`" in d.help


def test_undeclared_sampler_suggests_declaring_it(tmp_path):
    text = ('method m "m"\ndata prompts\npolicy\nreward r = verifier("accuracy")\n'
            "rollout y = sample(reference, n = 2)\nloss -mean(logp(policy, y) * r(y))\n")
    (d,) = _error(tmp_path, text)
    assert "`reference = frozen(policy)`" in d.help


def test_a_set_used_as_a_model_is_not_told_to_become_a_role(tmp_path):
    (d,) = _error(tmp_path, 'method m "m"\ndata preference\npolicy\nloss -mean(logp(chosen, chosen))\n')
    assert "frozen" not in d.help and "model roles here" in d.help


def test_errors_in_inherited_lines_point_at_the_childs_let(tmp_path):
    """A child of dpo whose `let` moves a value to token level: each error sits in dpo.ptdsl,
    and each also labels the child's overriding line."""
    f = tmp_path / "child.ptdsl"
    f.write_text('method dpo_tok extends dpo "token-level"\n'
                 "let chosen_reward = beta * (logprobs(policy, chosen) - logprobs(reference, chosen))\n")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(str(f))
    diags = info.value.diagnostics
    assert len(diags) == 4
    for d in diags:
        assert d.span.file.endswith("dpo.ptdsl")
        child = [label for label in d.labels if label.span.file == str(f)]
        assert [(label.span.line, label.primary) for label in child] == [(2, False)]
        assert "`chosen_reward` is redefined here" == child[0].text
    assert "child.ptdsl:2:1" in str(info.value)


def test_a_childs_default_that_breaks_the_parents_constraint(tmp_path):
    f = tmp_path / "child.ptdsl"
    f.write_text('method d2 extends dpo "negative beta"\nparam beta = -1.0\n')
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(str(f))
    (d,) = info.value.diagnostics
    assert d.code == "E0401" and d.span.file.endswith("dpo.ptdsl")
    assert [(label.span.file, label.span.line) for label in d.labels[1:]] == [(str(f), 2)]


def test_errors_in_the_childs_own_lines_get_no_extra_labels(tmp_path):
    f = tmp_path / "child.ptdsl"
    f.write_text('method d3 extends dpo "own loss"\nloss mean(logprobs(policy, chosen))\n')
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(str(f))
    (d,) = info.value.diagnostics
    assert d.span.file == str(f) and len(d.labels) == 1
