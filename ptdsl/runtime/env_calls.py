"""Calling an environment's code (reset, a tool, get_reward) so that nothing it does — raise,
hang, return an async coroutine — escapes as a crash of the run.

A Python call cannot be interrupted from outside, so a call with a timeout runs in a daemon
worker thread that the caller waits for. The worker is reused from call to call (one per calling
thread): starting a thread per call cost about 1 ms on a loaded machine, 14% of a grpo_tools step
with its ~40 calls. When a call times out its worker is *abandoned*, not killed: it keeps running
until the environment's code returns (it may still mutate the environment instance, which is why
a timed-out episode's tool results after that point deserve suspicion) and then ends; being a
daemon it never keeps the interpreter alive at exit. The next call starts a fresh worker. Async
methods (TRL accepts `async def` tools and `get_reward`) run with `asyncio.run` in the worker.
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import queue
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# frames from ptdsl, threading and the import machinery are not the environment's
_NOT_THEIRS = (str(Path(__file__).resolve().parents[1]), str(Path(importlib.__file__).parent),
               str(Path(threading.__file__).resolve()), str(Path(asyncio.__file__).resolve().parent),
               "<frozen importlib")


@dataclass(frozen=True)
class Outcome:
    """What a call did: `value` when it returned; `error` (the exception) and `trace` (its
    traceback cut to the environment's frames) when it raised; `timed_out` when it was abandoned."""
    value: Any = None
    error: BaseException | None = None
    trace: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out


class _Worker:
    """A daemon thread running calls one at a time until it is abandoned (module docstring)."""

    def __init__(self):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.abandoned = False
        threading.Thread(target=self._serve, daemon=True, name="ptdsl-env").start()

    def _serve(self) -> None:
        while not self.abandoned:
            fn, kwargs, box, done = self.jobs.get()
            box.append(_run(fn, kwargs))
            done.set()


_local = threading.local()  # each calling thread's worker: calls never queue behind another thread's


def call(fn: Callable, kwargs: dict, timeout: float | None) -> Outcome:
    """`fn(**kwargs)`, within `timeout` seconds when one is given (None: in this thread, unbounded)."""
    if timeout is None:
        return _run(fn, kwargs)
    worker = getattr(_local, "worker", None)
    if worker is None:
        worker = _local.worker = _Worker()
    box: list[Outcome] = []
    done = threading.Event()
    worker.jobs.put((fn, kwargs, box, done))
    if not done.wait(timeout):  # abandoned: see the module docstring
        worker.abandoned, _local.worker = True, None
        return Outcome(timed_out=True)
    return box[0]


def _run(fn: Callable, kwargs: dict) -> Outcome:
    try:
        value = fn(**kwargs)
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        return Outcome(value=value)
    except Exception as exc:  # noqa: BLE001 — the environment's code failed: kept, reported by the caller
        return Outcome(error=exc, trace=their_traceback(exc))


def their_traceback(exc: BaseException) -> str:
    """The traceback cut down to the environment's own frames, then the exception line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_NOT_THEIRS)]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip("\n")


def describe(exc: BaseException) -> str:
    """`ValueError: text` — what the model (or a report) is told an exception was."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
