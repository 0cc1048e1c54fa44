"""Reward functions and verifier binding: every mistake in a user's reward module is
a user error showing the user's own frames; --reward-fn binds each verifier of the
spec once; unscored completions are counted, not turned into NaN losses."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ptdsl
from ptdsl.runtime import embedded, rewards
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.loop import train
from ptdsl.runtime.rewards import RewardSources, verifier_uses

ROOT = Path(__file__).resolve().parents[2]
PROMPTS, COMPLETIONS = ["1+1=", "2+2=", "3+3=", "4+4="], ["2", "4", "7", "x"]


@pytest.fixture
def module(tmp_path, monkeypatch):
    """Write a reward module under a fresh name on sys.path; returns (name, path)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    count = [0]

    def write(source: str):
        count[0] += 1
        name = f"user_rewards_{tmp_path.name}_{count[0]}".replace("-", "_")
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return name, path
    return write


def _sources(method="grpo", refs=(), log=print, embedded_default=False):
    c = ptdsl.compile(method)
    return RewardSources(c.plan, list(refs), embedded_default=embedded_default,
                         uses=verifier_uses(c.method.definition), log=log)


def _user_error(refs, call=False) -> RuntimeSetupError:
    with pytest.raises(RuntimeSetupError) as info:
        src = _sources(refs=refs)
        if call:
            src.evaluate("r", PROMPTS, COMPLETIONS, {"answer": ["2", "4", "6", "8"]})
    return info.value


def test_a_syntax_error_shows_the_users_file_and_line(module):
    name, path = module("def f(prompts, completions, **kw):\n    return [1.0 for c in completions\n")
    msg = str(_user_error([f"accuracy={name}:f"]))
    assert f"importing `{name}` for --reward-fn" in msg and "SyntaxError" in msg
    assert str(path) in msg and "line 2" in msg
    assert "importlib" not in msg and "ptdsl/runtime" not in msg


def test_an_error_on_import_shows_only_the_users_frames(module):
    name, path = module("""\
        import os

        def helper():
            raise ValueError("no config found")

        helper()
        """)
    msg = str(_user_error([f"accuracy={name}:f"]))
    assert "ValueError: no config found" in msg
    assert f'File "{path}", line 6, in <module>' in msg and f'File "{path}", line 4, in helper' in msg
    assert "importlib" not in msg and "ptdsl/runtime" not in msg


def test_a_missing_module_attribute_or_dependency(module):
    assert "no module `no_such_rewards`" in str(_user_error(["accuracy=no_such_rewards:f"]))
    name, _ = module("def score(prompts, completions, **kw):\n    return [0.0] * len(completions)\n")
    err = _user_error([f"accuracy={name}:scor"])
    assert f"`{name}` has no `scor`" in str(err) and err.help == "did you mean `score`?"
    name, path = module("import no_such_dependency\n")
    msg = str(_user_error([f"accuracy={name}:f"]))
    assert "ModuleNotFoundError" in msg and f'File "{path}", line 1' in msg


def test_a_function_without_kwargs_is_rejected_before_training(module):
    name, path = module("def f(prompts, completions, answer):\n    return [1.0] * len(completions)\n")
    err = _user_error([f"accuracy={name}:f"])
    assert f"verifier `accuracy` ({name}:f), defined at {path}:1, does not take `**kwargs`" in str(err)


def test_an_error_inside_the_call_shows_the_users_frame(module):
    name, path = module("""\
        def f(prompts, completions, **kw):
            return [1 / len(c.strip("x")) for c in completions]
        """)
    msg = str(_user_error([f"accuracy={name}:f"], call=True))
    assert f"verifier `accuracy` ({name}:f) raised ZeroDivisionError" in msg
    assert f'File "{path}", line 2' in msg and "ptdsl/runtime" not in msg


@pytest.mark.parametrize("body, expected", [
    ("return [str(len(c)) for c in completions]", "returned str '1' for completion 1 ('2'), not a number"),
    ("return 0.5", "returned float 0.5, not a list of 4 numbers"),
    ("return [[1.0] for c in completions]", "returned list [1.0] for completion 1 ('2'), not a number"),
    ("return [1.0] * 3", "returned 3 values for 4 completions"),
    ("return [float('inf')] * 4", "returned inf for completion 1"),
])
def test_bad_return_values_are_named(module, body, expected):
    name, _ = module(f"def f(prompts, completions, **kw):\n    {body}\n")
    assert expected in str(_user_error([f"accuracy={name}:f"], call=True))


def test_arrays_are_accepted_and_unscored_completions_counted(module):
    name, _ = module("""\
        import numpy as np

        def f(prompts, completions, **kw):
            return np.array([1.0, float("nan"), 0.25, 0.5])

        def g(prompts, completions, **kw):
            return [None, None, 1, True]
        """)
    c = ptdsl.compile("gdpo")  # two rewards: correct = verifier("accuracy"), format = verifier("digits")
    logged = []
    src = RewardSources(c.plan, [f"accuracy={name}:f", f"digits={name}:g"],
                        uses=verifier_uses(c.method.definition), log=logged.append)
    assert src.evaluate("correct", PROMPTS, COMPLETIONS, {}) == [1.0, 0.0, 0.25, 0.5]
    assert src.evaluate("format", PROMPTS, COMPLETIONS, {}) == [0.0, 0.0, 1.0, 1.0]
    src.evaluate("format", PROMPTS, COMPLETIONS, {})
    assert len(logged) == 2 and "verifier `accuracy` gave no score (None or NaN) for 1 of 4" in logged[0]
    src.report()
    assert logged[2:] == ["accuracy: no score (None or NaN) for 1 completion in this run",
                          "digits: no score (None or NaN) for 4 completions in this run"]


def test_weighted_sums_skip_an_unscored_term_as_trl_does(tmp_path, module):
    name, _ = module("""\
        def a(prompts, completions, **kw):
            return [1.0, None, None, 0.5]

        def b(prompts, completions, **kw):
            return [2.0, 4.0, None, float("nan")]
        """)
    spec = tmp_path / "two.ptdsl"
    spec.write_text((ROOT / "methods" / "grpo.ptdsl").read_text()
                    .replace("method grpo", "method grpo_two")
                    .replace('verifier("accuracy")', '0.5 * verifier("a") + 2 * verifier("b")'))
    c = ptdsl.compile(str(spec))
    src = RewardSources(c.plan, [f"a={name}:a", f"b={name}:b"], uses=verifier_uses(c.method.definition),
                        log=lambda m: None)
    assert src.evaluate("r", PROMPTS, COMPLETIONS, {}) == [4.5, 8.0, 0.0, 0.25]  # TRL: nansum(w · r)


def test_reward_fn_bindings_must_match_the_specs_verifiers(module):
    name, _ = module("def f(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    err = _user_error([f"acuracy={name}:f"])
    assert "the method has no verifier `acuracy` (its verifiers: `accuracy`)" in str(err)
    assert err.help == "did you mean `accuracy`?"
    err = _user_error([f"accuracy={name}:f", f"{name}:f"])
    assert f"binds verifier `accuracy` twice: `accuracy={name}:f` and `{name}:f`" in str(err)
    with pytest.raises(RuntimeSetupError, match="it uses no verifier"):
        _sources("dpo", [f"{name}:f"])
    with pytest.raises(RuntimeSetupError, match=r"`f` \(its verifiers: `accuracy`, `digits`\)"):
        _sources("gdpo", [f"{name}:f"])  # unnamed, two verifiers: binds by the function's name


def test_an_unknown_verifier_fails_training_with_its_line(tmp_path):
    spec = tmp_path / "typo.ptdsl"
    spec.write_text((ROOT / "methods" / "grpo.ptdsl").read_text()
                    .replace("method grpo", "method grpo_typo").replace('"accuracy"', '"acuracy"'))
    with pytest.raises(RuntimeSetupError) as info:
        train(str(spec), output=str(tmp_path / "o"), steps=1, quiet=True)
    assert f"verifier `acuracy` at {spec}:12:12" in str(info.value)
    assert info.value.help.startswith("did you mean `accuracy`?")
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_columns_read_come_from_signatures(module):
    assert _sources(embedded_default=True).columns == ("answer",)  # the built-in accuracy
    name, _ = module("def f(prompts, completions, solution, difficulty=1, *, lang, **kw):\n    return []\n")
    assert _sources(refs=[f"accuracy={name}:f"]).columns == ("lang", "solution")


def test_accuracy_reads_numeric_answers_as_text():
    assert embedded.accuracy(PROMPTS, ["2", " 8", "12", "9"], answer=[2, 8, 12.5, None]) == [1.0, 1.0, 0.5, 0.0]
    with pytest.raises(TypeError):
        embedded.accuracy(PROMPTS, COMPLETIONS)  # `answer` is required: rows without it are rejected


def test_cli_reward_module_errors_exit_1_without_blaming_ptdsl(tmp_path):
    (tmp_path / "broken.py").write_text("def f(prompts, completions, **kw)\n    return []\n")
    r = subprocess.run([sys.executable, "-m", "ptdsl", "train", "grpo", "--reward-fn", "broken:f", "--steps", "1",
                        "--output", str(tmp_path / "o")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert r.returncode == 1, r.stderr
    assert "E0901" not in r.stderr and "bug in ptdsl" not in r.stderr
    assert f'File "{tmp_path / "broken.py"}", line 1' in r.stderr and "SyntaxError" in r.stderr


def test_check_warns_about_a_verifier_until_it_is_registered(tmp_path, monkeypatch):
    spec = tmp_path / "tests.ptdsl"
    spec.write_text((ROOT / "methods" / "grpo.ptdsl").read_text()
                    .replace("method grpo", "method grpo_tests").replace('"accuracy"', '"unit_tests"'))
    definition = ptdsl.load(str(spec)).definition
    [w] = rewards.unknown_verifiers(definition)
    assert (w.severity, w.code, w.span.line, w.span.col, w.span.end_col) == ("warning", "W0201", 12, 12, 34)
    monkeypatch.setitem(rewards._REGISTRY, "unit_tests", embedded.digits)
    assert rewards.unknown_verifiers(definition) == []


# ---- conversational rows: what TRL's GRPOTrainer passes ----------------------------------------

CHATS = [[{"role": "user", "content": p}] for p in PROMPTS]


def test_conversational_rows_give_reward_functions_message_lists(module):
    name, _ = module("""\
        SEEN = []

        def f(prompts, completions, **kw):
            SEEN.append((prompts, completions))
            return [float((c[0]["content"] if isinstance(c, list) else c) == "4") for c in completions]
        """)
    src = _sources(refs=[f"accuracy={name}:f"])
    chats = CHATS[:2] + [None, None]   # rows of one dataset may mix; each gets its own layout
    assert src.evaluate("r", PROMPTS, COMPLETIONS, {"answer": ["2"] * 4}, chats) == [0.0, 1.0, 0.0, 0.0]
    (prompts, completions), = __import__(name).SEEN
    assert prompts == CHATS[:2] + PROMPTS[2:]
    assert completions == [[{"role": "assistant", "content": "2"}], [{"role": "assistant", "content": "4"}],
                           "7", "x"]


def test_a_reward_function_that_raises_names_the_row_it_fails_on(module):
    name, path = module("""\
        def f(prompts, completions, **kw):
            return [float(c[0]["content"]) for c in completions]
        """)
    rows = [f"row {i} (line {i}) of `d.jsonl`" for i in (1, 2, 3, 4)]
    with pytest.raises(RuntimeSetupError) as e:  # "x" is no number: the 4th completion, alone, fails too
        _sources(refs=[f"accuracy={name}:f"]).evaluate("r", PROMPTS, COMPLETIONS, {"answer": ["2"] * 4}, CHATS, rows)
    msg = e.value.render()
    assert f"verifier `accuracy` ({name}:f) raised ValueError on row 4 (line 4) of `d.jsonl`, completion" in msg
    assert f'File "{path}", line 2' in msg and "E0901" not in msg and "bug in ptdsl" not in msg


@pytest.mark.integration
def test_a_trl_style_reward_function_trains_on_conversational_data(module, tmp_path):
    """GRPO on conversational prompts with a tokenizer that has a chat template: the reward
    function indexes messages as TRL's do, and sees the prompts' messages."""
    from tests.chat_tokenizers import chat_tokenizer
    tok = chat_tokenizer("chatml")
    tok.padding_side = "left"
    embedded.model(tok).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(__import__("json").dumps({"prompt": c}) for c in CHATS * 2) + "\n")
    name, _ = module("""\
        SEEN = []

        def f(prompts, completions, completion_ids, **kw):  # completion_ids: TRL passes them too
            assert len(completion_ids) == len(completions) and all(isinstance(t, int) for t in completion_ids[0])
            SEEN.extend(p[-1]["content"] for p in prompts)
            return [float(len(c[0]["content"])) for c in completions]
        """)
    train("grpo", model=str(tmp_path / "m"), data=str(data), reward_fns=[f"{name}:f"], steps=1, batch_size=4,
          output=str(tmp_path / "out"), rollout={"max_tokens": 4}, quiet=True)
    seen = __import__(name).SEEN
    assert seen and set(seen) <= set(PROMPTS)
