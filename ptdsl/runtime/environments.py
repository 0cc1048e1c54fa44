"""Environments for episodes: `@ptdsl.environments.register("name")`, `--env NAME=module:factory`.

An environment follows TRL 1.16's `environment_factory` convention, so a class written for
TRL's GRPOTrainer works unchanged:

* the factory (a class, or any callable taking no arguments) makes one instance per episode;
* `reset(**row)` receives the episode's dataset row and returns None or a string; a string is
  appended to the last user message before the first turn (TRL does the same);
* every other public method (no leading underscore, not `reset` / `get_reward`) is a tool: its
  typed signature and Google-style docstring give the JSON schema the chat template shows
  (transformers' `get_json_schema`, as TRL uses);
* an optional `get_reward()` (no arguments) scores the finished episode from the instance's state.

As with reward verifiers, a spec only names an environment: the Python that runs is registered
by the user or named explicitly (`module:factory`) — a module is imported only because the user
named it, never found by guessing. The built-in `calculator` (ptdsl/runtime/calculator.py) is
named here and imported on use. This module does not import torch or transformers.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ptdsl.diagnostics import did_you_mean
from ptdsl.runtime.errors import RuntimeSetupError

_REGISTRY: dict[str, Callable[[], object]] = {}
BUILTIN = {"calculator": "ptdsl.runtime.calculator:Calculator"}
_CONVENTION = ("an environment factory is a class (or a callable with no arguments) whose instances have "
               "`reset(**row)`, public tool methods and optionally `get_reward()` (TRL's environment_factory)")


@dataclass(frozen=True)
class Environment:
    """A resolved environment: `name` is how the user named it (for messages), `factory` makes
    one instance per episode."""
    name: str
    factory: Callable[[], object]

    def __call__(self) -> object:
        return self.factory()


def register(name: str):
    """Decorator: `@ptdsl.environments.register("calculator")` binds an environment name to a
    factory (the decorated class or function, returned unchanged)."""
    def bind(factory):
        if not callable(factory):
            raise RuntimeSetupError(f"@ptdsl.environments.register({name!r}) decorates a "
                                    f"{type(factory).__name__}, not a class or function", help=_CONVENTION)
        _REGISTRY[name] = factory
        return factory
    return bind


def known_names() -> list[str]:
    """Environment names that resolve without `module:factory`: built-in and registered."""
    return sorted(set(BUILTIN) | set(_REGISTRY))


def resolve(spec: str, bound: dict[str, Environment] | None = None) -> Environment:
    """`spec` is a name (bound with --env, registered, or built-in, in that order) or
    `module:factory`. Anything missing is a RuntimeSetupError naming `spec`."""
    if bound and spec in bound:
        return bound[spec]
    if spec in _REGISTRY:
        return Environment(spec, _REGISTRY[spec])
    if spec in BUILTIN:
        return Environment(spec, _load(BUILTIN[spec], spec))
    if ":" in spec:
        return Environment(spec, _load(spec, spec))
    names = sorted(set(known_names()) | set(bound or {}))
    raise RuntimeSetupError(f"unknown environment `{spec}`" + (f" (known: {', '.join(names)})" if names else ""),
                            help=did_you_mean(spec, names) or "register it with `@ptdsl.environments.register"
                            f"({spec!r})`, or bind it with `--env {spec}=module:factory`")


def parse_env_flags(flags: list[str]) -> dict[str, Environment]:
    """`["NAME=module:factory", …]` (the --env flag) → {NAME: Environment}, each target imported
    and checked now, so a typo fails before step 1. A name bound twice is an error."""
    out: dict[str, Environment] = {}
    for flag in flags:
        name, sep, target = flag.partition("=")
        if not sep or not name or ":" not in target:
            raise RuntimeSetupError(f"--env takes `NAME=module:factory`, got `{flag}`",
                                    help="e.g. `--env calculator=my_envs:Calculator`")
        if name in out:
            raise RuntimeSetupError(f"--env binds `{name}` twice (`{out[name].name}` and `{target}`)")
        out[name] = Environment(target, _load(target, flag))
    return out


def _load(target: str, spec: str) -> Callable[[], object]:
    """Import `module:attr` (only because the user named it) and check it is callable."""
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise RuntimeSetupError(f"environment `{spec}`: expected `module:factory`, got `{target}`")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise RuntimeSetupError(f"cannot load environment `{spec}`: no module `{exc.name}`",
                                    help="put its directory on PYTHONPATH, or run from it") from None
        raise RuntimeSetupError(f"importing `{module}` for environment `{spec}` failed: "
                                f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 — the user's module failed to import: say so, with its error
        raise RuntimeSetupError(f"importing `{module}` for environment `{spec}` failed: "
                                f"{type(exc).__name__}: {exc}") from None
    factory = getattr(mod, attr, None)
    if factory is None:
        public = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]
        raise RuntimeSetupError(f"cannot load environment `{spec}`: `{module}` has no `{attr}`",
                                help=did_you_mean(attr, public))
    if not callable(factory):
        raise RuntimeSetupError(f"environment `{spec}`: `{target}` is a {type(factory).__name__}, "
                                f"not a class or function", help=_CONVENTION)
    return factory
