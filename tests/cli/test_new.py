"""`ptdsl new NAME --from METHOD`: the file it writes is a valid, experimental method that means
what its parent means, and editing one commented line overrides exactly that line."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import ptdsl
from ptdsl import library
from ptdsl.cli.main import main
from ptdsl.equivalence.strategies import inputs as input_strategy


def _new(tmp_path, *args) -> str:
    out = tmp_path / f"{args[0]}.ptdsl"
    assert main(["new", *args, "--output", str(out)]) == 0
    return str(out)


def _same_loss(a, b, data, **params_b):
    ca, cb = ptdsl.compile(a), ptdsl.compile(b, **params_b)
    x = data.draw(input_strategy([ca.graph]))
    torch.testing.assert_close(ca.loss(x)[0], cb.loss(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("parent", ["dpo", "cdpo", "grpo", "kto", "ppo"])
@pytest.mark.parametrize("copy", [False, True])
def test_the_new_method_is_experimental_and_means_its_parent(tmp_path, parent, copy):
    path = _new(tmp_path, "mine", "--from", parent, *(["--copy"] if copy else []))
    m = ptdsl.load(path)
    assert m.name == "mine" and m.stability == "experimental"
    assert main(["check", "--strict", path]) == 0

    @settings(max_examples=5)
    @given(data=st.data())
    def agree(data):
        _same_loss(path, parent, data)
    agree()


def test_uncommenting_a_param_line_overrides_that_param(tmp_path):
    path = tmp_path / "my_dpo.ptdsl"
    assert main(["new", "my_dpo", "--from", "dpo", "--output", str(path)]) == 0
    text = path.read_text()
    line = next(line for line in text.splitlines() if line.startswith("# param beta"))
    path.write_text(text.replace(line, line[2:].replace("0.1", "0.25", 1)))

    @settings(max_examples=5)
    @given(data=st.data())
    def agree(data):
        _same_loss(str(path), "dpo", data, beta=0.25)
    agree()


def test_every_library_method_can_be_a_parent(tmp_path):
    for i, name in enumerate(library.all_names()):
        out = tmp_path / f"m{i}.ptdsl"
        assert main(["new", f"m{i}", "--from", name, "--output", str(out)]) == 0, name
        assert ptdsl.load(str(out)).stability == "experimental"


@pytest.mark.parametrize("args,message", [
    (["new", "9lives", "--from", "dpo"], "is not a method name"),
    (["new", "loss", "--from", "dpo"], "is not a method name"),
])
def test_bad_names_are_usage_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_existing_file_is_kept_unless_forced(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.ptdsl").write_text("keep me")
    with pytest.raises(SystemExit):
        main(["new", "mine", "--from", "dpo"])
    assert "exists" in capsys.readouterr().err and (tmp_path / "mine.ptdsl").read_text() == "keep me"
    assert main(["new", "mine", "--from", "dpo", "--force"]) == 0
    assert ptdsl.load(str(tmp_path / "mine.ptdsl")).name == "mine"


def test_an_unknown_parent_is_a_spec_error_with_a_suggestion(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["new", "mine", "--from", "dpoo"]) == 1
    assert "dpo" in capsys.readouterr().err and not list(tmp_path.iterdir())
