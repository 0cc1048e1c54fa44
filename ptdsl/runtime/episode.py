"""Multi-turn episodes between the policy and an environment, batched, on any generator.

`run_episodes` plays one episode per dataset row: the environment (a fresh instance, TRL's
convention: runtime/environments.py) is reset with the row, the conversation is rendered with its
tools' schemas, and each turn every still-running episode is extended by ONE `generate` call for
all of them. A turn with tool calls runs them (ptdsl/runtime/tools.py), appends the results as
`tool` messages and continues; an episode ends when the policy answers without a tool call, at
`max_turns` policy turns, or when its completion would pass `max_tokens` (generated tokens plus
the tokens the template inserts). The token sequence is built as ptdsl/runtime/episode_tokens.py
describes; `token_mask` marks the policy's own tokens (TRL's tool mask).

The generator interface is plain data, so that a transformers backend now and a vLLM backend
(or a remote worker) later can implement it without either side importing the other:
`generate(prompts: list[list[int]], max_new_tokens: list[int]) -> list[Generation]`. Each
Generation holds the new token ids only (no prompt, no padding), ending with the stop token when
the turn ended, and optionally the sampler's log-prob of each. A generator may return more than
`max_new_tokens[i]` (e.g. one limit for a whole batch), or padding after the stop token; both are
cut here.

The environment's failures never stop the run: a factory or `reset` that raises or hangs, or an
observation that is not a string, ends that episode before its first turn (`truncated =
"env_error"`, no completion tokens); a `get_reward` that raises, hangs or returns a non-number
leaves `reward` None; a NaN reward also becomes None — the same rule ptdsl/runtime/rewards.py
applies to a verifier's NaN: no score, counted and reported. Each is counted in `errors` and
reported with the environment's own traceback, naming the environment and the row (the first
report of each kind per call is also logged as a warning on the `ptdsl.episodes` logger).
"""
from __future__ import annotations

import logging
import math
import numbers
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple, Sequence

from ptdsl.runtime import env_calls, tools
from ptdsl.runtime.episode_tokens import check_template, extension, render
from ptdsl.runtime.errors import RuntimeSetupError

ENV_ERROR_KINDS = ("reset_error", "bad_observation", "reward_error", "reward_nan")
_log = logging.getLogger("ptdsl.episodes")


class Generation(NamedTuple):
    """One prompt's new tokens from a generator, and their sampler log-probs (or None)."""
    ids: list[int]
    logprobs: list[float] | None = None


Generate = Callable[[list[list[int]], list[int]], Sequence[Generation]]


@dataclass
class Episode:
    """One finished episode. `completion_ids`, `token_mask` (1: sampled by the policy; 0: inserted
    by the template or the environment — context, never trained on), `turn_ids` (the policy turn,
    from 0, each token belongs to; inserted tokens belong to the turn whose calls produced them)
    and `logprobs` (the sampler's, 0.0 where masked; None when the generator gives none) are
    aligned. `truncated` is None (the policy answered), "max_turns", "budget" or "env_error" (the
    environment could not start the episode: it has its prompt but no completion, and no reward).
    `tool_calls` counts the calls run, a turn whose calls could not be read counting as one;
    `errors` counts tools.ERROR_KINDS and ENV_ERROR_KINDS; `reports` are the environment's
    failures in words, with its traceback; `refitted` counts turns whose inserted tokens came from
    TRL's stand-in rendering (ptdsl/runtime/episode_tokens.py)."""
    row: int
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    token_mask: list[int] = field(default_factory=list)
    turn_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = field(default_factory=list)
    turns: int = 0
    tool_calls: int = 0
    errors: Counter = field(default_factory=Counter)
    truncated: str | None = None
    reward: float | None = None
    messages: list[dict] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    refitted: int = 0
    prompt_messages: int = 0  # how many of `messages` are the prompt (with reset's observation)

    @property
    def completion_messages(self) -> list[dict]:
        """The conversation after the prompt — what TRL passes a reward function as a
        conversational row's completion: the assistant turns and tool results."""
        return self.messages[self.prompt_messages:]


@dataclass
class _Live:
    """An episode in play: its record, environment instance and tools."""
    episode: Episode
    env: object = None
    box: tools.Toolbox | None = None
    done: bool = False

    @property
    def sequence(self) -> list[int]:
        return self.episode.prompt_ids + self.episode.completion_ids


@dataclass(frozen=True)
class _Settings:
    tokenizer: object
    env_name: str
    max_turns: int
    max_tokens: int
    tool_timeout: float | None
    stop_ids: set[int]
    template_kwargs: dict | None
    labels: list[str]
    logged: set = field(default_factory=set)


def run_episodes(generate: Generate, tokenizer, env: Callable[[], object], rows: Sequence[dict], *,
                 max_turns: int, max_tokens: int, tool_timeout: float | None = 30.0,
                 stop_ids: Sequence[int] | None = None, row_labels: Sequence[str] | None = None,
                 template_kwargs: dict | None = None) -> list[Episode]:
    """Play one episode per row (rows repeat for several episodes per prompt); see the module
    docstring. `env` is a factory (an `environments.Environment` names itself in reports);
    `max_tokens` bounds each episode's completion (generated and inserted tokens); `tool_timeout`
    bounds each call into the environment — the factory, reset, a tool, get_reward — in seconds
    (None: unbounded, in this thread); `stop_ids` are the tokens that end a policy turn (default:
    the tokenizer's EOS); `row_labels` name the rows in reports (default `row i`);
    `template_kwargs` go to `apply_chat_template` (e.g. `enable_thinking`)."""
    if max_turns < 1 or max_tokens < 1:
        raise RuntimeSetupError(f"episodes need max_turns ≥ 1 and max_tokens ≥ 1, got {max_turns} and {max_tokens}")
    _check_rows(rows, row_labels)
    check_template(tokenizer, template_kwargs)
    stops = set(stop_ids) if stop_ids is not None else {tokenizer.eos_token_id}
    cfg = _Settings(tokenizer, getattr(env, "name", None) or getattr(env, "__qualname__", repr(env)), max_turns,
                    max_tokens, tool_timeout, stops, template_kwargs,
                    list(row_labels) if row_labels is not None else [f"row {i}" for i in range(len(rows))])
    lives = [_start(cfg, env, i, row) for i, row in enumerate(rows)]
    for turn in range(max_turns):
        running = [live for live in lives if not live.done]
        if not running:
            break
        limits = [max_tokens - len(live.episode.completion_ids) for live in running]
        outs = generate([live.sequence for live in running], limits)
        if len(outs) != len(running):
            raise RuntimeError(f"generate returned {len(outs)} results for {len(running)} prompts")
        for live, out, limit in zip(running, outs, limits):
            _play_turn(cfg, live, Generation(*out) if isinstance(out, tuple) else Generation(list(out)), limit, turn)
    for live in lives:
        if live.episode.truncated != "env_error":  # an environment that did not start is not asked to score
            _score(cfg, live)
    return [live.episode for live in lives]


def _check_rows(rows: Sequence, labels: Sequence[str] | None) -> None:
    """Every row is a mapping whose `prompt`, if any, is a string or a list of {role, content}
    messages (all rows checked). As in TRL, a row may leave the prompt to the environment: without
    one the conversation starts with an empty user message that `reset`'s observation fills."""
    bad = []
    for i, row in enumerate(rows):
        where = labels[i] if labels is not None else f"row {i}"
        prompt = row.get("prompt", "") if isinstance(row, Mapping) else None
        ok = isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(
            isinstance(m, dict) and "role" in m and "content" in m for m in prompt))
        if not ok:
            bad.append(f"{where}: " + (f"`prompt` is {type(prompt).__name__} {prompt!r:.40}" if isinstance(row, Mapping)
                                       else f"a {type(row).__name__}, not a mapping of columns"))
    if bad:
        raise RuntimeSetupError(f"{len(bad)} episode row(s) without a usable prompt: " + "; ".join(bad[:5])
                                + ("; …" if len(bad) > 5 else ""),
                                help="`prompt` is a string or a non-empty list of {role, content} messages")


def _start(cfg: _Settings, env: Callable, i: int, row: dict) -> _Live:
    """Make the environment, reset it with the row and render the first prompt."""
    prompt = row.get("prompt", "")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    live = _Live(Episode(row=i, prompt_ids=[], messages=messages, prompt_messages=len(messages)))
    made = env_calls.call(env, {}, cfg.tool_timeout)
    if not made.ok:
        return _stop(cfg, live, "reset_error", "could not be created", made)
    live.env, live.box = made.value, tools.toolbox(made.value, cfg.env_name)
    reset = env_calls.call(live.env.reset, dict(row), cfg.tool_timeout)  # the whole row, as TRL passes it
    if not reset.ok:
        return _stop(cfg, live, "reset_error", "failed in reset", reset)
    observation = reset.value
    if isinstance(observation, numbers.Number) and not isinstance(observation, bool):
        observation = str(observation)
    if observation is not None and not isinstance(observation, str):
        _report(cfg, live, "bad_observation", f"reset returned a {type(observation).__name__} "
                f"({observation!r:.80}), not a string or None")
        return _end_before_start(cfg, live)
    if observation:  # TRL appends it to the last message (as a text part to a list of parts)
        content = messages[-1]["content"]
        messages[-1]["content"] = content + [{"type": "text", "text": observation}] if isinstance(content, list) \
            else content + observation
    live.episode.prompt_ids = render(cfg.tokenizer, messages, live.box.schemas, True, cfg.template_kwargs)
    return live


def _stop(cfg: _Settings, live: _Live, kind: str, what: str, out: env_calls.Outcome) -> _Live:
    """End the episode before its first turn: the environment could not start it."""
    _failed_call(cfg, live, kind, what, out)
    return _end_before_start(cfg, live)


def _end_before_start(cfg: _Settings, live: _Live) -> _Live:
    """The episode keeps its prompt (so that batches keep their shape) and has no completion."""
    schemas = live.box.schemas if live.box else []
    live.episode.prompt_ids = render(cfg.tokenizer, live.episode.messages, schemas, True, cfg.template_kwargs)
    live.episode.truncated, live.done = "env_error", True
    return live


def _failed_call(cfg: _Settings, live: _Live, kind: str, what: str, out: env_calls.Outcome) -> None:
    how = f"did not return within {cfg.tool_timeout:g} s" if out.timed_out else \
        f"raised {env_calls.describe(out.error)}:\n" + env_calls.indent(out.trace)
    _report(cfg, live, kind, f"{what}: {how}")


def _play_turn(cfg: _Settings, live: _Live, out: Generation, limit: int, turn: int) -> None:
    """Add the policy's turn, then end the episode or run its tool calls and insert the results."""
    ep = live.episode
    before = live.sequence
    ids, lps = list(out.ids[:limit]), out.logprobs
    if lps is not None and len(lps) != len(out.ids):
        raise RuntimeError(f"generate returned {len(lps)} log-probs for {len(out.ids)} tokens")
    end = next((k for k, t in enumerate(ids) if t in cfg.stop_ids), None)
    ids = ids if end is None else ids[:end + 1]  # a turn ends at its first stop token (drops any padding)
    ep.completion_ids += ids
    ep.token_mask += [1] * len(ids)
    ep.turn_ids += [turn] * len(ids)
    if lps is None or ep.logprobs is None:
        ep.logprobs = None
    else:
        ep.logprobs += [float(x) for x in list(lps)[:len(ids)]]
    ep.turns += 1
    parsed = tools.parse_turn(cfg.tokenizer, ids, before, live.box.schemas)
    ep.messages.append(parsed.message)
    if not ids or ids[-1] not in cfg.stop_ids:
        ep.truncated, live.done = "budget", True  # cut off mid-turn
    elif parsed.malformed is None and not parsed.calls:
        live.done = True  # the policy answered
    elif turn + 1 >= cfg.max_turns:
        ep.truncated, live.done = "max_turns", True  # no turn left to read the results: calls not run
    else:
        _run_calls(cfg, live, parsed, turn)


def _run_calls(cfg: _Settings, live: _Live, parsed: tools.ParsedTurn, turn: int) -> None:
    ep = live.episode
    results = [tools.malformed(parsed.malformed)] if parsed.malformed else \
        [tools.run(live.box, name, args, cfg.tool_timeout) for name, args in parsed.calls]
    ep.tool_calls += len(results)
    for r in results:
        if r.error:
            _report(cfg, live, r.error, r.report, count_only=r.error in tools.MODEL_KINDS)
    n_before = len(ep.messages)
    ep.messages += [r.message for r in results]
    inserted, exact = extension(cfg.tokenizer, live.sequence, ep.messages, n_before, live.box.schemas,
                                cfg.stop_ids, cfg.template_kwargs)
    if len(ep.completion_ids) + len(inserted) >= cfg.max_tokens:  # no room for another turn: as TRL, drop them
        del ep.messages[n_before:]
        ep.truncated, live.done = "budget", True
        return
    ep.completion_ids += inserted
    ep.token_mask += [0] * len(inserted)
    ep.turn_ids += [turn] * len(inserted)
    if ep.logprobs is not None:
        ep.logprobs += [0.0] * len(inserted)
    ep.refitted += not exact


def _score(cfg: _Settings, live: _Live) -> None:
    """`get_reward()` when the environment has one: a real number, or None with a report."""
    get_reward = getattr(live.env, "get_reward", None)
    if not callable(get_reward):
        return
    out = env_calls.call(get_reward, {}, cfg.tool_timeout)
    if not out.ok:
        _failed_call(cfg, live, "reward_error", "failed in get_reward", out)
        return
    value = out.value
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isinf(value):
        _report(cfg, live, "reward_error", f"get_reward returned {value!r:.80}, not a finite number")
    elif math.isnan(value):
        _report(cfg, live, "reward_nan", "get_reward returned NaN: the episode has no environment reward")
    else:
        live.episode.reward = float(value)


def _report(cfg: _Settings, live: _Live, kind: str, text: str, count_only: bool = False) -> None:
    """Count `kind`; keep the report on the episode and log the first of each kind per call,
    unless it is the model's own mistake (`count_only`), which its tool result already told it."""
    ep = live.episode
    ep.errors[kind] += 1
    if count_only:
        return
    message = f"environment `{cfg.env_name}` on {cfg.labels[ep.row]}: {text}"
    ep.reports.append(message)
    if kind not in cfg.logged:
        cfg.logged.add(kind)
        _log.warning("[%s; later ones are only counted in Episode.errors] %s", kind, message)

