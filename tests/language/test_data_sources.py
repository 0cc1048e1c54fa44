"""Several data sources in a spec: `data NAME: KIND(SET = NEW_NAME)`, `mix`, how they
parse, declare, inherit and fail, what the levels pass and the plan make of them."""
import pytest

import ptdsl
from ptdsl.syntax import ast
from ptdsl.syntax.parse import ParseFailed, parse

TWO = '''method m "two sources"
data forget: sft
data retain: sft(completion = retained, margin)
{mix}
policy
reference = frozen(policy)
param w = 2 > 0
let forget_ratio = logp(policy, completion) - logp(reference, completion)
loss mean(forget_ratio) - token_mean(logprobs(policy, retained)) + mean(margin)
'''


def _load(tmp_path, text, name="m"):
    f = tmp_path / f"{name}.ptdsl"
    f.write_text(text)
    return ptdsl.load(str(f))


def _errors(tmp_path, text):
    with pytest.raises(ptdsl.SpecError) as info:
        _load(tmp_path, text)
    return [(d.code, d.message, d.span.line, d.span.col) for d in info.value.diagnostics]


def test_a_named_source_parses_with_its_name_renames_fields_and_options():
    (_, stmt) = parse('method m "m"\ndata retain: ranked(responses = answers, size = 3, margin)\n', "m.ptdsl").statements
    assert isinstance(stmt, ast.DataDecl)
    assert (stmt.name.id, stmt.kind) == ("retain", "ranked")
    assert (stmt.name.span.line, stmt.name.span.col) == (2, 6)
    assert [(r.name, r.value.id) for r in stmt.renames] == [("responses", "answers")]
    assert [(o.name, o.value.value) for o in stmt.options] == [("size", 3)]
    assert [f.id for f in stmt.fields] == ["margin"]


def test_mix_parses_to_weights_and_is_a_keyword():
    (*_, stmt) = parse('method m "m"\nmix forget = 1, retain = w * 2\n', "m.ptdsl").statements
    assert isinstance(stmt, ast.MixDecl)
    assert [o.name for o in stmt.options] == ["forget", "retain"]
    with pytest.raises(ParseFailed) as info:
        parse('method m "m"\nlet mix = 1\n', "m.ptdsl")
    assert info.value.diagnostic.message == "`mix` is a keyword and cannot be used as a name"
    with pytest.raises(ParseFailed) as info:
        parse('method m "m"\nlet x: 1\n', "m.ptdsl")
    assert info.value.diagnostic.message == "unexpected `:`"


def test_each_source_is_its_own_row_space_with_its_sets_and_fields(tmp_path):
    c = ptdsl.compile(_load(tmp_path, TWO.format(mix="mix forget = 1, retain = w")))
    levels = {i.name: i.level for i in c.inputs}
    assert levels["logprobs(policy, completion)"] == "f32[token completion]"
    assert levels["margin"] == "f32[seq retain]"  # a data field belongs to its source
    sets = c.graph.graph["sets"]
    assert (sets["completion"].rows, sets["retained"].rows) == ("forget", "retain")
    forget, retain = c.plan.sources
    assert (forget.rows, forget.kind, forget.sets, forget.weight) == ("forget", "sft", (("completion", "completion"),), 1.0)
    assert (retain.sets, retain.extra, retain.weight) == ((("retained", "completion"),), ("margin",), 2.0)
    text = c.plan.describe()
    assert "data forget: sft\ndata retain: sft(margin, completion = retained)\nmix forget = 1, retain = 2" in text
    assert "retain 2 × --batch-size" in text
    # the forget set's reference log-probs depend on data only: precomputed, as on `examples`
    assert [q.leaf for q in c.plan.queries if q.precomputable] == ["logprobs(reference, completion)"]
    assert ptdsl.load(str(tmp_path / "m.ptdsl")).data == "forget: sft + retain: sft"


def test_without_a_mix_line_every_source_weighs_one(tmp_path):
    c = ptdsl.compile(_load(tmp_path, TWO.format(mix="")))
    assert [s.weight for s in c.plan.sources] == [1.0, 1.0]


def test_a_one_source_spec_is_unchanged_and_may_rename(tmp_path):
    (source,) = ptdsl.compile("dpo").plan.sources
    assert (source.rows, source.named, source.sets) == ("examples", False, (("chosen", "chosen"), ("rejected", "rejected")))
    c = ptdsl.compile(_load(tmp_path, 'method m "m"\ndata sft(completion = answer)\npolicy\n'
                                      'loss -token_mean(logprobs(policy, answer))\n'))
    assert c.graph.graph["sets"]["answer"].rows == "examples"
    assert "data sft" in c.plan.describe() and "mix" not in c.plan.describe()


def test_per_row_values_of_two_sources_do_not_combine_but_their_reductions_do(tmp_path):
    bad = TWO.format(mix="").replace("loss mean(forget_ratio)", "loss mean(forget_ratio + margin)")
    (err,) = _errors(tmp_path, bad)
    assert err[:2] == ("E0301", "values from different row spaces cannot be combined: f32[seq forget] and "
                                "f32[seq retain]")
    with pytest.raises(ptdsl.SpecError) as info:
        _load(tmp_path, bad)
    assert "rows of the sources `forget` and `retain` are different examples" in info.value.diagnostics[0].help


def test_source_errors(tmp_path):
    head = 'method m "m"\n'
    tail = 'policy\nloss -token_mean(logprobs(policy, completion))\n'
    assert _errors(tmp_path, head + "data a: sft\ndata b: sft\n" + tail) == [
        ("E0220", "`completion` is named by another source", 3, 1)]
    assert _errors(tmp_path, head + "data a: sft\ndata b: unpaired(completion = c2)\ndata c: unpaired(completion = c3)\n"
                   + tail)[0][:2] == ("E0220", "`label` is named by another source")
    assert _errors(tmp_path, head + "data sft\ndata b: sft(completion = c)\n" + tail) == [
        ("E0220", "a spec reads one unnamed dataset or several named sources, not both", 3, 1)]
    assert _errors(tmp_path, head + "data sft\ndata preference\n" + tail) == [("E0202", "`data` is defined twice", 3, 1)]
    assert _errors(tmp_path, head + "data a: sft\ndata a: preference\n" + tail) == [
        ("E0202", "data source `a` is defined twice", 3, 1)]
    assert _errors(tmp_path, head + "data examples: sft\ndata b: sft(completion = c)\n" + tail) == [
        ("E0220", "`examples` is the row space of a spec's one unnamed dataset", 2, 6)]
    assert _errors(tmp_path, head + "data a: sft(completions = c)\ndata b: sft(completion = d)\n" + tail) == [
        ("E0209", "`sft` has no set or field `completions` to rename", 2, 13)]
    assert _errors(tmp_path, head + "data a: sft\ndata b: ranked(responses = r)\n" + tail) == [
        ("E0220", "a `ranked` list cannot be one of several sources yet", 3, 1)]
    rollout = 'rollout y = sample(policy, n = 2)\nloss -token_mean(logprobs(policy, y))\n'
    assert _errors(tmp_path, head + "data a: prompts\ndata b: sft\npolicy\n" + rollout)[0][:2] == (
        "E0220", "a rollout samples the prompts of the one dataset; with several sources it would not know which")


def test_mix_errors(tmp_path):
    def mix(line):
        return _errors(tmp_path, TWO.format(mix=line))
    assert mix("mix forget = 1, retian = 2") == [("E0221", "`mix` names `retian`, which is not a data source", 4, 17)]
    assert mix("mix forget = 1, forget = 2")[0][:2] == ("E0221", "`mix` weighs `forget` twice")
    assert mix("mix forget = 0") == [("E0403", "the weight of `forget` must be a number > 0, got 0", 4, 5)]
    assert mix("mix forget = -w")[0][0] == "E0403"
    assert mix("mix forget = 1 > 0")[0][0] == "E0403"  # a comparison is no weight
    assert mix("mix forget = progress + 1")[0][0] == "E0405"  # fixed before training
    one = 'method m "m"\ndata sft\nmix sft = 2\npolicy\nloss -token_mean(logprobs(policy, completion))\n'
    assert _errors(tmp_path, one) == [
        ("E0221", "`mix` weighs several named sources, and this method reads one dataset", 3, 1)]


def test_a_child_that_states_data_lines_replaces_all_of_its_parents(tmp_path):
    _load(tmp_path, TWO.format(mix="mix forget = 1, retain = 3"), "parent")
    child = _load(tmp_path, 'method child extends parent "one source"\ndata sft\n'
                            'loss -token_mean(logprobs(policy, completion))\n', "child")
    assert child.definition.datasets == {} and child.data == "sft"
    kept = _load(tmp_path, 'method kept extends parent "inherits both"\nparam w = 4\n', "kept")
    assert list(kept.definition.datasets) == ["forget", "retain"]
    assert [s.weight for s in ptdsl.compile(kept).plan.sources] == [1.0, 3.0]
    assert child.definition.mix is None  # the parent's `mix` went with its data lines
