"""Step callbacks: a public way to observe `ptdsl.train`'s own optimizer steps.

A callback is any object with `on_step_begin(step)` and/or `on_step_end(step, metrics)`
(the names of transformers' TrainerCallback, which TRL users know; there is no base
class to inherit). The loop calls `on_step_begin` at the start of each optimizer step,
before its experience or mini-batch is fetched (so sampling and scoring count as part of
the step), and `on_step_end` once the step's metrics are logged, with a copy of the
record written to metrics.jsonl. `step` counts from 0 (the record's `step` is step + 1);
after `--resume` the first step seen is the checkpoint's. Every process calls its
callbacks with the same (reduced) metrics. Benchmarks time the product through this.
"""
from __future__ import annotations

from ptdsl.runtime.errors import RuntimeSetupError

HOOKS = ("on_step_begin", "on_step_end")


def check_callbacks(callbacks) -> None:
    """Before anything loads: `callbacks` is a sequence of objects each with a callable hook."""
    if not isinstance(callbacks, (list, tuple)):
        raise RuntimeSetupError(f"callbacks must be a list or tuple of objects, got {type(callbacks).__name__}",
                                help="e.g. ptdsl.train(..., callbacks=[my_timer])")
    for i, cb in enumerate(callbacks):
        if isinstance(cb, type):  # its hooks would be unbound functions, called without `self`
            raise RuntimeSetupError(f"callbacks[{i}] is the class `{cb.__name__}`, not an object",
                                    help=f"pass an instance: callbacks=[{cb.__name__}()]")
        hooks = [h for h in HOOKS if callable(getattr(cb, h, None))]
        if not hooks:
            raise RuntimeSetupError(f"callbacks[{i}] ({type(cb).__name__}) has neither `on_step_begin(step)` "
                                    "nor `on_step_end(step, metrics)`",
                                    help="define one or both methods")


def notify(callbacks, hook: str, step: int, *args) -> None:
    """Call `hook` on every callback that has it; the metrics are a copy, so a callback
    cannot change what the loop returns."""
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(step, *(dict(a) if isinstance(a, dict) else a for a in args))
