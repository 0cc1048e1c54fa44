"""ptdsl: a compiler for LLM post-training methods.

The stable API is `__all__` (keep these names; code outside this repository calls them):
`load`, `compile`, `equivalent`, `train`, `SpecError`, `Diagnostic`, `Method`, `CompiledMethod`,
`Input`, `Param`, `InputError`, `RuntimeSetupError` (what `train` raises for a problem the user
can fix: data, options, reward functions, a non-finite loss); tests/contract/surface.json snapshots it with the signatures
(stability contract C3, docs/stability.md#c3-names).
Importing ptdsl does not import torch (nor hypothesis: `equivalent` loads it on use).
"""
from ptdsl import rewards  # `@ptdsl.rewards.register("name")` after a plain `import ptdsl` (no torch)
from ptdsl import environments  # `@ptdsl.environments.register("name")`, likewise (no torch)
from ptdsl.api import CompiledMethod, Input, InputError, Method, Param, compile, load
from ptdsl.diagnostics import Diagnostic, SpecError
from ptdsl.equivalence import equivalent
from ptdsl.runtime.errors import RuntimeSetupError  # a plain exception module: no torch
from ptdsl.version import __version__  # ptdsl/version.py: the single source



def train(method, model=None, data=None, **options):
    """Train `method` with a compiled step (options: ptdsl/runtime/loop.TrainOptions; an unknown
    one is a TypeError naming the valid ones); with no `model` and `data`, on the embedded
    default. `model` is a path or hub id, or a loaded transformers model (trained in place;
    `tokenizer=` an object or path, default the one beside it); `data` is a path or a
    `datasets.Dataset` / `DatasetDict` (its train split), or for a method with several sources
    `{source: data}`. `eval_data=` (default: a DatasetDict's test split), `eval_steps=` and
    `log_samples=` evaluate on held-out rows (ptdsl/runtime/evaluate.py). Returns the last metrics
    (a dict, with the final evaluation's `eval/…` when the run evaluates) with `.model` (the
    trained policy) and `.tokenizer`.

    `callbacks=[obj, …]` observes the loop's own optimizer steps: `obj.on_step_begin(step)`
    at the start of each (before its experience or mini-batch is fetched; `step` counts from
    0) and `obj.on_step_end(step, metrics)` after its metrics are logged (a copy of the row
    written to metrics.jsonl); either method may be left out (ptdsl/runtime/callbacks.py)."""
    from ptdsl.runtime.loop import train as _train
    return _train(method, model=model, data=data, **options)


__all__ = ["load", "compile", "equivalent", "train", "SpecError", "Diagnostic", "Method", "CompiledMethod", "Input", "Param",
           "InputError", "RuntimeSetupError"]
