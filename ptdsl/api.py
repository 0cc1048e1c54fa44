"""The stable Python API: `load`, `compile`, `Method`, `CompiledMethod`.

Importing this module does not import torch; `CompiledMethod.loss` does, the
first time it runs.
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from functools import cached_property

from ptdsl.compiler import Compiled, compile_definition, define
from ptdsl.inputs import InputError  # re-exported by ptdsl/__init__

__all__ = ["load", "compile", "Method", "CompiledMethod", "Input", "Param", "InputError"]
from ptdsl.syntax.resolve import MethodDef, data_summary


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    constraint: str | None
    doc: str | None


@dataclass(frozen=True)
class Input:
    """One leaf tensor the loss reads."""

    name: str        # canonical query text, e.g. "logprobs(policy, chosen)"
    kind: str        # logprobs | entropy | logits | values | score | mask | reward | field | time | uniform
    level: str       # e.g. "f32[token chosen]"
    set: str | None
    model: str | None
    trainable: bool  # gradients of the loss flow into this input
    dtype: str       # real | bool


class Method:
    """A parsed, checked method definition (from `ptdsl.load`)."""

    def __init__(self, definition: MethodDef, default: Compiled):
        self.definition = definition
        self._default = default

    name = property(lambda self: self.definition.name)
    title = property(lambda self: self.definition.title)
    paper = property(lambda self: self.definition.paper)
    family = property(lambda self: self.definition.family)
    stability = property(lambda self: self.definition.stability)
    extends = property(lambda self: self.definition.extends)
    path = property(lambda self: self.definition.path)
    data = property(lambda self: data_summary(self.definition))

    @property
    def warnings(self) -> list:
        """Warnings (Diagnostics) of the method compiled with its defaults, e.g. W0202."""
        return list(self._default.warnings)

    @property
    def params(self) -> dict[str, Param]:
        from ptdsl.syntax.unparse import constraint_text
        return {n: Param(n, self._default.params[n], constraint_text(p.constraint), p.doc)
                for n, p in self.definition.params.items()}

    def __repr__(self) -> str:
        return f"<ptdsl.Method {self.name} ({self.stability}) from {self.path}>"


def load(name_or_path: str) -> Method:
    """Parse and check a method; raises SpecError (with `.diagnostics`) on any error."""
    m = define(name_or_path)
    return Method(m, compile_definition(m))


def compile(method_or_name, **params) -> "CompiledMethod":
    """Compile a method (a Method, a library name or a path) with parameter overrides."""
    method = method_or_name if isinstance(method_or_name, Method) else load(method_or_name)
    if not params:  # `load` compiled the defaults already: compiling them again gives the same result
        return CompiledMethod(method, method._default)
    return CompiledMethod(method, compile_definition(method.definition, params))


class CompiledMethod:
    def __init__(self, method: Method, compiled: Compiled):
        self.method = method
        self._c = compiled

    graph = property(lambda self: self._c.graph)
    unoptimised_graph = property(lambda self: self._c.typed)
    source = property(lambda self: self._c.source)
    params = property(lambda self: dict(self._c.params))
    plan = property(lambda self: self._c.plan)
    rewrites = property(lambda self: self._c.rewrites)
    warnings = property(lambda self: list(self._c.warnings))  # Diagnostics: compiles, but see W0202 …
    name = property(lambda self: self.method.name)

    @cached_property
    def inputs(self) -> list[Input]:
        out = []
        for n in _leaf_order(self.graph):
            a = self.graph.nodes[n]["attrs"]
            out.append(Input(a["name"], a["kind"], str(self.graph.nodes[n]["level"]), a["set"], a["model"],
                             bool(a["trainable"]), a["dtype"]))
        return out

    def group_size(self, rows: str) -> int | None:
        """Rows per group of a grouped row space: a rollout's n; for a ranked list, K = `size`, the
        most responses a list holds (each list has its own length, the input `sizes(R)`)."""
        return self.graph.graph["rows"].get(rows)

    @cached_property
    def _fn(self):
        import torch
        import torch.nn.functional as F

        from ptdsl.codegen import kernels
        from ptdsl.codegen.safety import check_source, kernel_names
        # Generated from the validated IR only (codegen/python.py); still, nothing runs until the
        # module is shown to have exactly the shapes codegen emits (which name no builtin). Builtins stay in
        # its globals: torch's C code imports through them (an empty dict broke its first torch.tensor).
        check_source(self.source, kernel_names(kernels))
        namespace = {"torch": torch, "F": F, "K": kernels}
        code = builtins.compile(self.source, f"<ptdsl:{self.name}>", "exec")
        exec(code, namespace)  # noqa: S102
        return namespace["loss_fn"]

    def loss(self, inputs: dict, normalizers: dict | None = None, state: dict | None = None):
        """(loss, metrics) for a dict of leaf tensors keyed by `.inputs` names.

        `normalizers` (optional) gives the global counts batch means divide by when
        one batch is split into micro-batches or processes: `{"rows:examples": 64,
        "tokens:y": 5120}`; the per-micro-batch losses then sum to the full-batch loss.
        `state` (optional) carries running statistics across calls (`running_mean`, `running_var`,
        `ema`); it is updated in place. Without it, each call starts afresh. The training time
        (`step`, `progress`, `epoch`) and random draws (`uniform@…`) are inputs like any other."""
        from ptdsl.inputs import check_inputs, float_dtype
        check_inputs(self.graph, inputs)
        return self._fn(inputs, float_dtype(self.graph, inputs), normalizers or {}, {} if state is None else state)

    def interpret(self, inputs: dict, optimised: bool = True, normalizers: dict | None = None,
                  state: dict | None = None):
        """(loss, metrics) by the IR interpreter, on the optimised or the checked unoptimised graph."""
        from ptdsl.codegen.interpret import evaluate
        from ptdsl.inputs import check_inputs, float_dtype
        g = self.graph if optimised else self.unoptimised_graph
        check_inputs(g, inputs)
        loss, metrics, _ = evaluate(g, inputs, float_dtype(g, inputs), normalizers, state)
        return loss, metrics

    def __repr__(self) -> str:
        return f"<ptdsl.CompiledMethod {self.name} {self.params}>"


def _leaf_order(g):
    from ptdsl.ir.graph import leaves
    return sorted(leaves(g), key=lambda n: (g.nodes[n]["attrs"]["kind"] == "mask", g.nodes[n]["attrs"]["name"]))
