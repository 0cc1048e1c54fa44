"""The environment registry: names, `module:factory`, `--env NAME=module:factory`, and the
messages a user gets for each mistake."""
from __future__ import annotations

import sys
import textwrap

import pytest

from ptdsl.runtime import environments
from ptdsl.runtime.calculator import Calculator
from ptdsl.runtime.errors import RuntimeSetupError


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.setattr(environments, "_REGISTRY", {})


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module `my_envs` on the path, as a user's own file would be."""
    (tmp_path / "my_envs.py").write_text(textwrap.dedent('''
        class Counter:
            def reset(self, **row):
                self.n = 0
        NOT_CALLABLE = 3
        def make_counter():
            return Counter()
    '''))
    (tmp_path / "broken_envs.py").write_text("import json\nraise ValueError('config missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("my_envs", "broken_envs"):
        sys.modules.pop(name, None)


def test_registered_name_resolves_to_its_factory_and_each_call_makes_a_new_instance():
    @environments.register("counter")
    class Counter:
        def reset(self, **row):
            pass
    env = environments.resolve("counter")
    assert env.name == "counter" and env.factory is Counter
    a, b = env(), env()
    assert isinstance(a, Counter) and a is not b
    assert "counter" in environments.known_names()


def test_builtin_calculator_resolves_without_registration():
    env = environments.resolve("calculator")
    assert env.factory is Calculator


def test_module_factory_is_imported_because_named(user_module):
    env = environments.resolve("my_envs:make_counter")
    assert env.name == "my_envs:make_counter" and type(env()).__name__ == "Counter"


def test_missing_module_names_the_spec(user_module):
    with pytest.raises(RuntimeSetupError, match=r"cannot load environment `nowhere:Env`: no module `nowhere`"):
        environments.resolve("nowhere:Env")


def test_missing_attribute_suggests_the_closest(user_module):
    with pytest.raises(RuntimeSetupError, match=r"`my_envs` has no `Countr`") as err:
        environments.resolve("my_envs:Countr")
    assert err.value.help == "did you mean `Counter`?"


def test_not_callable_attribute_is_an_error(user_module):
    with pytest.raises(RuntimeSetupError, match=r"`my_envs:NOT_CALLABLE` is a int, not a class or function"):
        environments.resolve("my_envs:NOT_CALLABLE")


def test_module_that_fails_to_import_reports_its_error(user_module):
    with pytest.raises(RuntimeSetupError, match=r"importing `broken_envs` .* failed: ValueError: config missing"):
        environments.resolve("broken_envs:Env")


def test_unknown_name_suggests_a_registered_one():
    environments.register("wordle")(Calculator)
    with pytest.raises(RuntimeSetupError, match=r"unknown environment `wordl` \(known: calculator, wordle\)") as err:
        environments.resolve("wordl")
    assert err.value.help == "did you mean `wordle`?"


def test_register_rejects_a_non_callable():
    with pytest.raises(RuntimeSetupError, match=r"register\('x'\) decorates a int"):
        environments.register("x")(3)


def test_env_flags_bind_names_that_win_over_the_registry(user_module):
    environments.register("counter")(Calculator)
    bound = environments.parse_env_flags(["counter=my_envs:Counter", "calc=my_envs:make_counter"])
    assert sorted(bound) == ["calc", "counter"]
    assert type(environments.resolve("counter", bound)()).__name__ == "Counter"
    assert environments.resolve("calc", bound).name == "my_envs:make_counter"


@pytest.mark.parametrize("flag, message", [
    ("my_envs:Counter", r"--env takes `NAME=module:factory`, got `my_envs:Counter`"),
    ("c=my_envs", r"--env takes `NAME=module:factory`, got `c=my_envs`"),
    ("c=my_envs:Nope", r"cannot load environment `c=my_envs:Nope`: `my_envs` has no `Nope`"),
])
def test_env_flag_mistakes(user_module, flag, message):
    with pytest.raises(RuntimeSetupError, match=message):
        environments.parse_env_flags([flag])


def test_env_flag_bound_twice(user_module):
    with pytest.raises(RuntimeSetupError, match=r"--env binds `c` twice"):
        environments.parse_env_flags(["c=my_envs:Counter", "c=my_envs:make_counter"])


def test_the_public_module_is_the_registry():
    import ptdsl
    assert ptdsl.environments.register is environments.register
    assert ptdsl.environments.resolve is environments.resolve
