"""User reward functions: imported, checked and called so that every mistake in
them is the user's error, shown with the user's own traceback — never "a bug in
ptdsl".

A reward function has TRL's signature `fn(prompts, completions, **kwargs)` and
returns one number (or None: no score for that completion) per completion. Its
named parameters without defaults, other than `prompts` and `completions`, are
dataset columns it reads (`answer` for `accuracy`); every row must have them. As in
TRL's GRPOTrainer, a conversational row's prompt arrives as its list of messages and
its completion as `[{"role": "assistant", "content": text}]`; a text row's as text; and
`completion_ids` holds each completion's token ids."""
from __future__ import annotations

import importlib
import inspect
import math
import numbers
import traceback
from pathlib import Path
from typing import Callable

from ptdsl.diagnostics import did_you_mean
from ptdsl.runtime.errors import RuntimeSetupError

# frames from ptdsl and from the import machinery are not the user's
_NOT_THEIRS = (str(Path(__file__).resolve().parents[1]), str(Path(importlib.__file__).parent), "<frozen importlib")
_SIGNATURE = "a reward function is `fn(prompts, completions, **kwargs)` returning one number per completion"
_PASSED = ("prompts", "completions", "completion_ids")  # what the runtime passes, not dataset columns


def load(ref: str) -> tuple[str | None, Callable, str]:
    """`[name=]module:function` → (name or None, the function, `module:function`)."""
    name, _, target = ref.rpartition("=") if "=" in ref else (None, None, ref)
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise RuntimeSetupError(f"--reward-fn takes `module:function` or `name=module:function`, got `{ref}`")
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 — any failure in the user's module, a SyntaxError included
        missing = isinstance(exc, ModuleNotFoundError) and exc.name is not None
        if missing and (module == exc.name or module.startswith(exc.name + ".")):  # not one it imports
            raise RuntimeSetupError(f"cannot load reward function `{target}`: no module `{exc.name}`",
                                    help="put its directory on PYTHONPATH, or run from it") from None
        raise _user_error(f"importing `{module}` for --reward-fn {ref} failed", exc) from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise RuntimeSetupError(f"cannot load reward function `{target}`: `{module}` has no `{attr}`",
                                help=did_you_mean(attr, [n for n in dir(mod) if callable(getattr(mod, n))]))
    if not callable(fn):
        raise RuntimeSetupError(f"`{target}` is a {type(fn).__name__}, not a function", help=_SIGNATURE)
    return name, fn, target


def check(fn: Callable, label: str) -> None:
    """The function takes TRL's keyword arguments: prompts, completions and every other column."""
    sig = _signature(fn)
    if sig is None:
        return
    params = sig.parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        raise RuntimeSetupError(f"{label}, defined at {_where(fn)}, does not take `**kwargs`",
                                help=f"{_SIGNATURE}; the dataset's other columns arrive as keyword arguments")
    positional = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if positional:
        raise RuntimeSetupError(f"{label}, defined at {_where(fn)}, takes `{positional[0]}` by position only; "
                                f"arguments are passed by name", help=_SIGNATURE)


def columns_read(fn: Callable) -> tuple[str, ...]:
    """The dataset columns a reward function needs: named parameters without defaults."""
    sig = _signature(fn)
    if sig is None:
        return ()
    return tuple(p.name for p in sig.parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty
                 and p.name not in _PASSED)


def call(fn: Callable, label: str, prompts: list, completions: list, columns: dict,
         rows: list[str] | None = None) -> list[float | None]:
    """The function's scores, checked: one real number or None per completion. `rows` names
    each completion's dataset row, for the message when the function raises."""
    try:
        out = fn(prompts=prompts, completions=completions, **columns)
    except Exception as exc:  # noqa: BLE001 — the user's code failed: their traceback, not ours
        raise _user_error(f"{label} raised {type(exc).__name__}{_on_row(fn, prompts, completions, columns, rows)}",
                          exc) from None
    return _scores(out, len(completions), label, completions)


def _on_row(fn, prompts: list, completions: list, columns: dict, rows: list[str] | None) -> str:
    """` on row 3 (line 3) of data.jsonl, completion '…'`: the first completion the function
    fails on when called with it alone (it is called again, one completion at a time, only
    after it has failed), else the rows of the batch."""
    if not rows:
        return ""
    for i in range(len(completions)):
        try:
            fn(prompts=prompts[i:i + 1], completions=completions[i:i + 1],
               **{k: v[i:i + 1] for k, v in columns.items()})
        except Exception:  # noqa: BLE001 — the row it fails on
            return f" on {rows[i]}, completion {_shown(completions[i])}"
    return f" on a batch of {', '.join(dict.fromkeys(rows))}"


def _scores(out, n: int, label: str, completions: list) -> list[float | None]:
    if not isinstance(out, (list, tuple)) and hasattr(out, "tolist"):  # a numpy array or a tensor
        out = out.tolist()
    if not isinstance(out, (list, tuple)):
        raise RuntimeSetupError(f"{label} returned {_shown(out)}, not a list of {n} numbers", help=_SIGNATURE)
    if len(out) != n:
        raise RuntimeSetupError(f"{label} returned {len(out)} values for {n} completions", help=_SIGNATURE)
    scores = []
    for i, v in enumerate(out):
        if v is not None and not isinstance(v, numbers.Real):
            raise RuntimeSetupError(f"{label} returned {_shown(v)} for completion {i + 1} "
                                    f"({completions[i]!r}), not a number", help=_SIGNATURE)
        if v is not None and math.isinf(float(v)):
            raise RuntimeSetupError(f"{label} returned {float(v)} for completion {i + 1} ({completions[i]!r})",
                                    help="return a finite score, or None where it does not apply")
        scores.append(None if v is None else float(v))
    return scores


def _user_error(what: str, exc: BaseException) -> RuntimeSetupError:
    """`what`, then the traceback cut down to the user's frames (and the error itself)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_NOT_THEIRS)]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    shown = "".join(lines).rstrip("\n")
    return RuntimeSetupError(f"{what}:\n" + "\n".join("  " + line for line in shown.splitlines()),
                             help="fix the reward function; the traceback above shows its frames only")


def _signature(fn):
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C function: nothing to check
        return None


def _where(fn) -> str:
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (TypeError, OSError):
        return getattr(fn, "__module__", None) or "built-in"


def _shown(v) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 60 else text[:57] + '...'}"

