"""Checks and optimisation passes over the IR graph.

The pass contract: `pass(graph) -> (graph, diagnostics, changed)`; a pass never
mutates its input. `run` wraps a pass — and every other stage of the pipeline,
parsing and `extends` included — so that a crash inside it becomes an
internal-error diagnostic (E0901) naming the stage and the method, not a traceback:
the compiler raises nothing but SpecError.
"""
from __future__ import annotations

import traceback

from ptdsl.diagnostics import Diagnostic, SpecError


class InternalError(Exception):
    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _method_of(x) -> str:
    graph = getattr(x, "graph", None)
    if isinstance(graph, dict):
        return graph.get("method", "?")
    return str(getattr(x, "name", None) or getattr(x, "path", "?"))  # a MethodDef, a Path, a SpecFile


def run(name: str, fn, g, *args):
    try:
        return fn(g, *args)
    except (InternalError, SpecError):  # a SpecError is the user's: it passes through
        raise
    except Exception as exc:  # a bug in ptdsl, reported as such
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise InternalError(Diagnostic(
            "error", "E0901", f"internal compiler error in pass `{name}` on method `{_method_of(g)}`",
            (), (f"{type(exc).__name__}: {exc} (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})",),
            "this is a bug in ptdsl, not in your spec; please report it with the spec file")) from exc
