"""An environment's tools: their schemas, reading tool calls out of a policy turn, running them.

Tools follow TRL 1.16's `environment_factory` convention (runtime/environments.py): the public
methods of the environment instance, each with a typed signature and a Google-style docstring,
turned into the chat template's JSON schema by transformers' `get_json_schema`.

Reading a turn: where the tokenizer carries a transformers `response_template` (transformers 5;
TRL's `add_response_schema` attaches one for the families it knows), the turn is parsed by
`tokenizer.parse_response` — the model family's own format, not ours. Only a tokenizer without
one falls back to ptdsl's convention, Qwen 2.5 / Hermes style: each call is
`<tool_call>{"name": …, "arguments": {…}}</tool_call>` in the decoded text. `parser_name` says
which is used. (The legacy `response_schema` attribute is not read: transformers 5 drops it.)

Nothing the model or a tool does crashes the run. Each problem becomes the tool result the model
reads next, and is counted under one of ERROR_KINDS.
"""
from __future__ import annotations

import inspect
import json
import numbers
import re
from dataclasses import dataclass, field
from typing import Callable

from ptdsl.runtime import env_calls
from ptdsl.runtime.errors import RuntimeSetupError

ERROR_KINDS = ("malformed", "unknown_tool", "bad_arguments", "tool_raised", "timeout", "bad_result")
MODEL_KINDS = ("malformed", "unknown_tool", "bad_arguments")  # the policy's mistakes; the rest are the tool's
NOT_TOOLS = ("reset", "get_reward")
FALLBACK = "ptdsl <tool_call>{json}</tool_call>"
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_JSON_TYPES = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
               "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool)}


@dataclass(frozen=True)
class Toolbox:
    """One environment instance's tools: `schemas` for `apply_chat_template(tools=…)`, and the
    bound `methods` by name."""
    schemas: list[dict]
    methods: dict[str, Callable]


@dataclass(frozen=True)
class ParsedTurn:
    """A policy turn read as an assistant message; `calls` are its well-formed tool calls as
    (name, arguments); `malformed` is why the turn's calls could not be read (then no call runs)."""
    message: dict
    calls: list[tuple[str, object]] = field(default_factory=list)
    malformed: str | None = None


@dataclass(frozen=True)
class ToolResult:
    """The `tool` message the model reads next; `error` is its ERROR_KINDS entry (None when the
    call worked) and `report` the longer text (the environment's traceback) for the run's log."""
    message: dict
    error: str | None = None
    report: str | None = None


def toolbox(env: object, env_name: str) -> Toolbox:
    """TRL's discovery: functions on the instance's class, public, not reset/get_reward (listed on
    the class so that properties are not evaluated). A tool get_json_schema cannot describe is a
    RuntimeSetupError naming the method."""
    from transformers.utils import get_json_schema
    cls = type(env)
    if not callable(getattr(env, "reset", None)):
        raise RuntimeSetupError(f"environment `{env_name}` ({cls.__qualname__}) has no `reset` method",
                                help="define `reset(self, **row)`; it receives the episode's dataset row")
    methods = {name: getattr(env, name) for name, _ in inspect.getmembers(cls, predicate=inspect.isfunction)
               if not name.startswith("_") and name not in NOT_TOOLS}
    schemas = []
    for name, method in methods.items():
        try:
            schemas.append(get_json_schema(method))
        except Exception as exc:  # noqa: BLE001 — transformers' TypeHint/DocstringParsingException
            raise RuntimeSetupError(
                f"environment `{env_name}`: tool `{cls.__qualname__}.{name}` has no usable schema: "
                f"{env_calls.describe(exc)}",
                help="a tool needs a type hint on every argument and a Google-style docstring with an "
                     "`Args:` line per argument (or a leading underscore, if it is not a tool)") from None
    return Toolbox(schemas, methods)


def parser_name(tokenizer) -> str:
    """Which reader `parse_turn` uses for this tokenizer."""
    return "transformers response_template" if _template(tokenizer) is not None else FALLBACK


def parse_turn(tokenizer, ids: list[int], prefix: list[int], schemas: list[dict]) -> ParsedTurn:
    """The turn `ids` (generated after `prefix`) as an assistant message and its tool calls."""
    if _template(tokenizer) is None:
        return _parse_fallback(_text(tokenizer, ids))
    try:
        message = tokenizer.parse_response(ids, prefix=prefix, tools=schemas or None)
    except Exception as exc:  # noqa: BLE001 — transformers raises ValueError on unparseable JSON and the like
        lines = env_calls.describe(exc).splitlines()  # transformers: what failed, the region, then why
        reason = lines[0] + (f" {lines[-1]}" if len(lines) > 1 else "")
        return ParsedTurn({"role": "assistant", "content": _text(tokenizer, ids)}, malformed=reason)
    return _calls_of(message, _text(tokenizer, ids))


def _template(tokenizer):
    return getattr(tokenizer, "response_template", None)


def _text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def _calls_of(message: dict, text: str) -> ParsedTurn:
    """Check each parsed call is a function call with a name and an object of arguments."""
    calls = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or call.get("type", "function") != "function":
            return ParsedTurn({"role": "assistant", "content": text}, malformed=f"not a function call: {call!r}")
        name, args = fn.get("name"), fn.get("arguments", {})
        if isinstance(args, str):  # some formats carry the arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError as exc:
                return ParsedTurn({"role": "assistant", "content": text}, malformed=f"arguments are not JSON: {exc}")
        if not isinstance(name, str) or not name:
            return ParsedTurn({"role": "assistant", "content": text}, malformed=f"a call without a name: {call!r}")
        calls.append((name, args))
    return ParsedTurn(message, calls)


def _parse_fallback(text: str) -> ParsedTurn:
    """ptdsl's own convention (module docstring); an opened but unclosed block is malformed."""
    calls, bodies = [], _CALL.findall(text)
    if text.count("<tool_call>") != len(bodies):
        return ParsedTurn({"role": "assistant", "content": text}, malformed="a <tool_call> without </tool_call>")
    for body in bodies:
        try:
            data = json.loads(body)
        except ValueError as exc:
            return ParsedTurn({"role": "assistant", "content": text}, malformed=f"the call is not JSON: {exc}")
        if not isinstance(data, dict):
            return ParsedTurn({"role": "assistant", "content": text}, malformed="the call is not a JSON object")
        fn = {"name": data.get("name"), "arguments": data.get("arguments", {})}
        calls.append({"type": "function", "function": fn})
    content = _CALL.sub("", text).strip()
    return _calls_of({"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}, text)


def malformed(reason: str) -> ToolResult:
    """The result the model reads for a turn whose calls could not be read."""
    return _error("malformed", "error", f"the tool call could not be read ({reason})")


def run(box: Toolbox, name: str, arguments: object, timeout: float | None) -> ToolResult:
    """Call tool `name` with `arguments`; every failure is a ToolResult with its error kind."""
    method = box.methods.get(name)
    if method is None:
        return _error("unknown_tool", name, f"unknown tool `{name}`; the tools are: {', '.join(box.methods) or 'none'}")
    problem = _argument_problem(method, name, arguments, box)
    if problem:
        return _error("bad_arguments", name, f"wrong arguments for `{name}`: {problem}")
    out = env_calls.call(method, arguments, timeout)
    if out.timed_out:
        return _error("timeout", name, f"`{name}` did not return within {timeout:g} s",
                      report=f"tool `{name}` did not return within {timeout:g} s (its thread is abandoned)")
    if out.error is not None:
        return _error("tool_raised", name, f"`{name}` raised {env_calls.describe(out.error)}",
                      report=f"tool `{name}` raised {env_calls.describe(out.error)}:\n" + env_calls.indent(out.trace))
    value = out.value
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return _error("bad_result", name, f"`{name}` returned a {type(value).__name__}, not a string",
                      report=f"tool `{name}` returned {value!r:.200}; a tool returns a string (or a number)")
    return ToolResult({"role": "tool", "name": name, "content": value})


def _argument_problem(method: Callable, name: str, arguments: object, box: Toolbox) -> str | None:
    """Why `arguments` cannot be passed to the tool: not an object, not bindable, or of the wrong
    JSON type for its schema (checked before calling, so that a TypeError the tool itself raises
    is counted as the tool's)."""
    if not isinstance(arguments, dict):
        return f"expected an object of arguments, got {type(arguments).__name__}"
    try:
        inspect.signature(method).bind(**arguments)
    except TypeError as exc:
        return str(exc)
    props = next((s["function"]["parameters"].get("properties", {}) for s in box.schemas
                  if s["function"]["name"] == name), {})
    for arg, value in arguments.items():
        check = _JSON_TYPES.get(props.get(arg, {}).get("type"))
        if check is not None and value is not None and not check(value):
            return f"`{arg}` should be {props[arg]['type']}, got {type(value).__name__} {value!r:.40}"
    return None


def _error(kind: str, name: str, text: str, report: str | None = None) -> ToolResult:
    return ToolResult({"role": "tool", "name": name, "content": f"Error: {text}"}, kind, report or text)
