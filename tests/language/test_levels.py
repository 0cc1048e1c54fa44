"""Feature levels, language versions and deprecation (the stability contract's rule C2):
every table entry has a level and a version; a stable method may not use an experimental
feature (E0214, where the use is written, a parent's line included); a file's `requires`
bounds the features it may use (E0215) and the ptdsl it runs on (E0216); deprecated forms
warn (W0203), fail `check --strict`, and `ptdsl migrate` rewrites the mechanical ones into a
spec with the same loss."""
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import ptdsl
from ptdsl.cli.main import main
from ptdsl.equivalence.strategies import inputs as input_strategy
from ptdsl.ir import builtins as B
from ptdsl.ir.datakinds import DATA_KINDS
from ptdsl.ir.ops import OPS
from ptdsl.resources import grammar_path
from ptdsl.syntax import ast
from ptdsl.syntax.features import EXPERIMENTAL, STABLE, Deprecation, Feature, FeatureTable, version_key
from tests.helpers import assert_close, loss_and_grads, trainable

GRPO = (Path(ptdsl.__file__).parents[1] / "methods" / "grpo.ptdsl").read_text()
DPO = """method my_dpo "DPO"
{header}data preference
policy
reference = frozen(policy)
param beta = 0.1 > 0
let z = beta * ((logp(policy, chosen) - logp(reference, chosen)) - (logp(policy, rejected) - logp(reference, rejected)))
loss -mean(logsigmoid(z)){extra}
"""


def _spec(tmp_path, text: str, name: str = "spec") -> str:
    path = tmp_path / f"{name}.ptdsl"
    path.write_text(text)
    return str(path)


def _errors(path: str) -> list:
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(path)
    return info.value.diagnostics


# ---- every table entry has a level and a version ---------------------------------------------

def _valid(f) -> bool:
    return isinstance(f, Feature) and f.level in (STABLE, EXPERIMENTAL) and version_key(f.since) is not None


def test_every_entry_of_every_feature_table_has_a_level_and_a_since():
    tables = [t for _, t in B.FEATURE_TABLES]
    module_tables = [v for v in vars(B).values() if isinstance(v, FeatureTable)]
    assert all(any(t is m for m in tables) for t in module_tables), "a FeatureTable missing from FEATURE_TABLES"
    for t in tables:
        assert set(t.features) == set(t) and all(_valid(f) for f in t.features.values())
    named = set().union(*(t.features for t in tables))
    assert set(B.ALL) <= named, f"builtins without a feature: {set(B.ALL) - named}"
    assert all(_valid(k.feature) for k in DATA_KINDS.values())
    assert all(_valid(op.feature) for op in OPS.values())


def test_every_statement_form_of_the_grammar_has_a_level():
    grammar = grammar_path().read_text()
    block = re.search(r"\?statement:(.*?)\n\n", grammar, re.S).group(1)
    forms = set(re.findall(r"(\w+_decl)", block))
    assert forms | {"data_source"} == set(ast.STATEMENT_FORMS)
    assert all(_valid(f) for f in ast.STATEMENT_FORMS.values())


def test_the_training_graph_features_arrived_in_0_2():
    assert ast.STATEMENT_FORMS["update_decl"].since == "0.2"
    assert {B.TIME.features[n].since for n in ("step", "progress", "epoch")} == {"0.2"}
    assert B.RANDOM.features["uniform"].since == B.ROLES.features["sampler"].since == "0.2"
    assert B.ROLE_SOURCES.features["critic"].level == EXPERIMENTAL
    assert B.QUERIES.features["logprobs"] == Feature(STABLE, "0.1")


# ---- a stable method uses only stable features ---------------------------------------------

def test_a_stable_spec_using_an_experimental_feature_is_e0214_at_the_use(tmp_path):
    text = DPO.format(header="stable\n", extra="\nmetric t = mean(0 * z) + progress")
    (d,) = _errors(_spec(tmp_path, text))
    assert d.code == "E0214" and "time name `progress`" in d.message and "my_dpo" in d.message
    span = d.labels[0].span
    assert (span.line, text.splitlines()[span.line - 1][span.col - 1:span.end_col - 1]) == (9, "progress")
    assert "mark the method `experimental`" in d.help


def test_the_same_spec_marked_experimental_compiles(tmp_path):
    text = DPO.format(header="experimental\n", extra="\nmetric t = mean(0 * z) + progress")
    assert ptdsl.load(_spec(tmp_path, text)).stability == "experimental"


def test_a_stable_child_of_an_experimental_parent_is_reported_in_the_parent(tmp_path):
    (d,) = [d for d in _errors(_spec(tmp_path, 'method my_beta extends beta_dpo "x"\nstable\n'))
            if "uniform" in d.message]
    assert d.code == "E0214" and d.labels[0].span.file.endswith("beta_dpo.ptdsl")
    assert any("inherits this line" in n for n in d.notes)


def test_options_of_an_experimental_call_are_not_reported_again(tmp_path):
    ppo_critic = (Path(ptdsl.__file__).parents[1] / "methods" / "ppo_critic.ptdsl").read_text()
    codes = [d.message for d in _errors(_spec(tmp_path, ppo_critic.replace("\nexperimental\n", "\nstable\n")))]
    assert any("role source `critic`" in m for m in codes) and not any("lr_scale" in m for m in codes)


# ---- requires ------------------------------------------------------------------------------

def test_requires_older_than_a_used_feature_is_e0215(tmp_path):
    text = GRPO.replace('family "online RL"', 'family "online RL"\nrequires ptdsl >= 0.1')
    (d,) = _errors(_spec(tmp_path, text))
    assert d.code == "E0215" and "statement `update`" in d.message and "0.2" in d.help
    assert ptdsl.load(_spec(tmp_path, text.replace(">= 0.1", ">= 0.2"))).name == "grpo"


def test_requires_is_per_file_not_inherited(tmp_path):
    """grpo states no version, so a child requiring 0.1 may extend it; its own lines are held to 0.1."""
    child = 'method my_grpo extends grpo "x"\nrequires ptdsl >= 0.1\nparam epsilon = 0.3\n'
    assert ptdsl.load(_spec(tmp_path, child)).name == "my_grpo"
    (d,) = _errors(_spec(tmp_path, child + "update passes = 3\n"))
    assert d.code == "E0215" and d.labels[0].span.file.endswith("spec.ptdsl")


@pytest.mark.parametrize("line,what", [("requires ptdsl >= 9.0", "this is ptdsl 0.2.0"),
                                       ("requires ptdsl > 0.1", "not a version requirement"),
                                       ("requires ptdsl >= 1", "not a version requirement"),
                                       ("requires torch >= 0.1", "only `ptdsl`")])
def test_a_requirement_this_ptdsl_cannot_meet_is_e0216(tmp_path, monkeypatch, line, what):
    monkeypatch.setattr(ptdsl.version, "__version__", "0.2.0")
    (d,) = _errors(_spec(tmp_path, DPO.format(header=line + "\n", extra="")))
    assert d.code == "E0216" and what in d.message


def test_the_installed_version_is_read_from_the_version_module(tmp_path, monkeypatch):
    path = _spec(tmp_path, DPO.format(header="requires ptdsl >= 0.7\n", extra=""))
    monkeypatch.setattr(ptdsl.version, "__version__", "0.7.1")
    assert ptdsl.load(path).name == "my_dpo"
    monkeypatch.setattr(ptdsl.version, "__version__", "0.6.9")
    assert "this is ptdsl 0.6.9" in _errors(path)[0].message


@pytest.mark.parametrize("line,message", [("requires 0.2", "`requires` takes `ptdsl >= VERSION`"),
                                          ("let requires = 1", "`requires` is a keyword")])
def test_requires_mistakes_get_their_own_message(tmp_path, line, message):
    (d,) = _errors(_spec(tmp_path, DPO.format(header=line + "\n", extra="")))
    assert d.code == "E0102" and message in d.message


def test_requires_twice_is_defined_twice(tmp_path):
    (d,) = _errors(_spec(tmp_path, DPO.format(header="requires ptdsl >= 0.1\nrequires ptdsl >= 0.2\n", extra="")))
    assert d.code == "E0202"


# ---- deprecation, --strict and migrate -----------------------------------------------------

LONG = GRPO.replace("logprobs(old, y)", "logprobs(old(policy), y)")


def test_the_library_uses_no_deprecated_feature():
    from ptdsl import library
    from ptdsl.compiler import define
    from ptdsl.passes.feature_uses import feature_uses
    used = {(name, u.title) for name in library.all_names() for u in feature_uses(define(name))
            if u.feature.deprecated is not None}
    assert not used
    assert "old(policy)" not in GRPO and LONG.count("old(policy)") >= 1


def test_a_deprecated_form_warns_w0203_with_its_replacement_and_removal(tmp_path):
    (w,) = ptdsl.load(_spec(tmp_path, LONG)).warnings
    assert w.code == "W0203" and "0.4" in w.message and "`old`" in w.help


def test_check_strict_turns_warnings_into_errors(tmp_path, capsys):
    path = _spec(tmp_path, LONG)
    assert main(["check", path]) == 0
    assert main(["check", "--strict", path]) == 1
    assert "error[W0203]" in capsys.readouterr().err
    assert main(["check", "--strict", "grpo"]) == 0


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """LONG migrated in place by `ptdsl migrate --write`, and both specs compiled (with a live KL term)."""
    tmp = tmp_path_factory.mktemp("migrate")
    long_path, path = _spec(tmp, LONG, "long"), _spec(tmp, LONG)
    assert main(["migrate", path, "--write"]) == 0
    return Path(path).read_text(), ptdsl.compile(long_path, beta=0.04), ptdsl.compile(path, beta=0.04)


def test_migrate_rewrites_exactly_the_deprecated_spelling(migrated):
    text, _, b = migrated
    assert text == GRPO and not b.warnings


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_the_migrated_spec_has_the_same_loss_gradients_and_metrics(migrated, data):
    _, a, b = migrated
    x = data.draw(input_strategy([a.graph, b.graph]))
    names = trainable(a)
    assert names == trainable(b)
    (la, ga), (lb, gb) = (loss_and_grads(lambda i, c=c: c.loss(i)[0], x, names) for c in (a, b))
    assert_close(la, lb, what="loss")
    for n in names:
        assert_close(ga[n], gb[n], what=f"grad {n}")
    ma, mb = a.loss(x)[1], b.loss(x)[1]
    assert ma.keys() == mb.keys()
    for k in ma:
        assert_close(ma[k], mb[k], what=k, nonfinite_agree=True)


def test_migrate_without_write_prints_a_diff_and_changes_nothing(tmp_path, capsys):
    path = _spec(tmp_path, LONG)
    assert main(["migrate", path]) == 0
    out = capsys.readouterr().out
    assert "-let ratio = exp(logprobs(policy, y) - logprobs(old(policy), y))" in out
    assert "+let ratio = exp(logprobs(policy, y) - logprobs(old, y))" in out
    assert Path(path).read_text() == LONG


def test_non_mechanical_deprecations_are_listed_not_rewritten(tmp_path, monkeypatch, capsys):
    """A test-local entry: `clip` deprecated in favour of a hand-written min/max."""
    monkeypatch.setitem(B.OPS.features, "clip", Feature(STABLE, "0.1", Deprecation("min(max(x, lo), hi)", "0.4")))
    path = _spec(tmp_path, LONG)
    assert main(["migrate", path, "--write"]) == 0
    err = capsys.readouterr().err
    assert "builtin `clip` is deprecated" in err and "not a mechanical rewrite" in err
    text = Path(path).read_text()
    assert "clip(" in text and "old(policy)" not in text


# ---- show ----------------------------------------------------------------------------------

def test_show_lists_the_experimental_features_a_method_uses(capsys):
    assert main(["show", "dpo"]) == 0
    assert "  experimental features  none\n" in capsys.readouterr().out
    assert main(["show", "beta_dpo"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "experimental features" in x)
    assert "random draw `uniform`" in line and "scan `ema`" in line


# ---- the docs' table of the features that are not stable-since-0.1 --------------------------

DOCS = Path(ptdsl.__file__).parents[1] / "docs" / "language.md"
BLOCK = re.compile(r"(<!-- features:begin -->\n)(.*?)(<!-- features:end -->)", re.S)


def _notable() -> list[tuple[str, str, Feature]]:
    """(what, name, Feature) for every feature that is experimental, newer than 0.1 or deprecated."""
    rows = [("statement", "data NAME: KIND" if form == "data_source" else form.removesuffix("_decl"), f)
            for form, f in ast.STATEMENT_FORMS.items()]
    rows += [(label, name, f) for label, t in B.FEATURE_TABLES for name, f in t.features.items()]
    rows += [("data kind", k.name, k.feature) for k in DATA_KINDS.values()]
    rows += [(f"`{scan}` with options the loss computes, operation", op, OPS[op].feature)
             for scan, op in B.VARYING_SCANS.items()]  # the ops no builtin spells
    return [r for r in rows if r[2] != Feature(STABLE, "0.1")]


def features_markdown() -> str:
    lines = ["| feature | level | since | deprecated |", "|---|---|---|---|"]
    for what, name, f in _notable():
        dep = f"use `{f.deprecated.replacement}`; removed in {f.deprecated.removal}" if f.deprecated else ""
        lines.append(f"| {what} `{name}` | {f.level} | {f.since} | {dep} |")
    return "\n".join(lines) + "\n"


def test_the_docs_list_every_feature_that_is_not_stable_since_0_1():
    text = DOCS.read_text(encoding="utf-8")
    m = BLOCK.search(text)
    expected = features_markdown()
    if os.environ.get("PTDSL_UPDATE_DOCS") and m.group(2) != expected:
        DOCS.write_text(text[:m.start(2)] + expected + text[m.end(2):], encoding="utf-8")
        return
    assert m.group(2) == expected, "docs/language.md's feature table is stale (PTDSL_UPDATE_DOCS=1 rewrites it)"
