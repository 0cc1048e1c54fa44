"""The pipeline: the compiler's table of contents.

    text ─parse─▶ AST (limits checked first) ─resolve─▶ MethodDef (extends merged)
         ─requires─▶ (the stated version is ours) ─bind─▶ params ─lower─▶ IR
         ─features─▶ (levels, versions, deprecations) ─levels─▶ typed IR ─gradient─▶ (checked)
         ─optimise─▶ IR (fold · rewrite · cse · dce, to a fixpoint) ─gradient─▶ (still trains)
         ─plan─▶ Plan (with the update schedule) ─warnings─▶ (never stop) ─codegen─▶ source
Every stage is a pure function; each collects its diagnostics, and the pipeline
stops after the first stage that found an error, so one mistake is not reported
again as a cascade of others. Every stage runs through passes.run, so a crash is an
internal error (E0901): the compiler raises nothing but SpecError.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptdsl import library, passes
from ptdsl.codegen.python import emit_source
from ptdsl.diagnostics import Sink, SpecError, did_you_mean, error
from ptdsl.ir.lower import lower
from ptdsl.passes.cse import eliminate_common
from ptdsl.passes.dce import eliminate_dead
from ptdsl.passes.features import check_features, check_requires
from ptdsl.passes.fold import fold_constants
from ptdsl.passes.gradflow import check_gradient, check_gradient_survives
from ptdsl.passes.levels import check_levels
from ptdsl.passes.origins import point_at_overrides
from ptdsl.passes.params import bind
from ptdsl.passes.rewrite import rewrite
from ptdsl.passes.warnings import training_warnings
from ptdsl.plan import Plan, make_plan
from ptdsl.syntax.parse import BOM, ParseFailed, parse
from ptdsl.syntax.resolve import MethodDef, library_loader, parent_error, resolve

MAX_ROUNDS = 10


@dataclass(frozen=True)
class Compiled:
    definition: MethodDef
    params: dict
    typed: object        # the checked, unoptimised IR graph
    graph: object        # the optimised IR graph
    rewrites: tuple[str, ...]
    plan: Plan
    source: str
    variables: dict      # generated variable name → IR node
    warnings: tuple = ()  # Diagnostics of severity "warning" (passes/warnings.py): printed, never fatal


def _fail(sink: Sink, sources: dict, graph=None, m: MethodDef | None = None) -> None:
    """Stop after a stage that found errors; with the graph it ran on, errors in inherited
    lines also point at the child's definitions behind them (passes/origins.py)."""
    if sink.has_errors:
        items = sink.items if graph is None else point_at_overrides(sink.items, graph, m)
        raise SpecError(items, sources)


def read_spec(path: Path, sources: dict):
    """The parsed spec at `path`, its text kept in `sources` for rendering diagnostics."""
    try:
        text = _read(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([error("E0203", f"cannot read `{path}`: {exc.__class__.__name__}",
                               help="check the path")], sources) from None
    return _parse(path, text, sources)


def _read_parent(path: Path, sources: dict):
    """A parent's spec; a file that cannot be read is reported at the child's `extends`."""
    try:
        text = _read(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise parent_error("E0203", f"cannot read `{path}`: {exc.__class__.__name__}",
                           "cannot be read", help="check the file") from None
    return _parse(path, text, sources)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8-sig")  # -sig: a leading byte-order mark is not text


def _parse(path: Path, text: str, sources: dict):
    sources[str(path)] = text.removeprefix(BOM)
    try:
        return parse(text, str(path))
    except ParseFailed as exc:
        raise SpecError(exc.diagnostics, sources) from None


def define(name_or_path: str) -> MethodDef:
    """Parse and resolve a method (by library name or file path)."""
    try:
        path = library.find(name_or_path)
    except (OSError, ValueError):  # a path the OS rejects (too long, a NUL byte) names no file
        path = None
    if path is None:
        looks_like_path = name_or_path.endswith(".ptdsl") or "/" in name_or_path
        if looks_like_path:
            raise SpecError([error("E0203", f"no file `{name_or_path}`", help="check the path")])
        raise SpecError([error("E0203", f"no method `{name_or_path}`",
                               help=did_you_mean(name_or_path, library.all_names())
                               or "`ptdsl list` shows the methods in the library")])
    sources: dict[str, str] = {}
    sink = Sink()
    loader = library_loader([library.methods_dir()], lambda p: _read_parent(p, sources))
    try:
        spec = passes.run("parse", read_spec, path, sources)
        m = passes.run("extends", resolve, spec, loader, sink)
    except passes.InternalError as exc:
        raise SpecError([exc.diagnostic], sources) from None
    _fail(sink, sources)
    return m


def optimise(g, sink: Sink):
    """Fold, rewrite, share and prune to a fixpoint. Folding reports constants that overflow."""
    applied: list[str] = []
    for _ in range(MAX_ROUNDS):
        g, found, c1 = passes.run("fold", fold_constants, g)
        for d in found:
            sink.add(d)
        if sink.has_errors:
            break
        g, _, c2, rules = passes.run("rewrite", rewrite, g)
        g, _, c3 = passes.run("cse", eliminate_common, g)
        g, _, c4 = passes.run("dce", eliminate_dead, g)
        applied += rules
        if not (c1 or c2 or c3 or c4):
            break
    return g, tuple(applied)


def compile_definition(m: MethodDef, overrides: dict | None = None) -> Compiled:
    sources = m.sources
    sink = Sink()
    try:
        passes.run("requires", check_requires, m, sink)          # first: a newer spec's features are unknown names here
        _fail(sink, sources)
        params = passes.run("params", bind, m, dict(overrides or {}), sink)  # defaults, overrides, constraints
        _fail(sink, sources)
        g = passes.run("lower", lower, m, params, sink)          # names → IR
        _fail(sink, sources)
        found = passes.run("features", check_features, m, g)   # levels, versions, deprecation (contract C2)
        for d in (d for d in found if d.severity == "error"):
            sink.add(d)
        _fail(sink, sources)
        typed = passes.run("levels", check_levels, g, sink)      # levels as types; explicit masks
        _fail(sink, sources, g, m)
        passes.run("gradient", check_gradient, typed, sink)      # the loss must train the policy
        _fail(sink, sources, typed, m)
        graph, rewrites = optimise(typed, sink)                 # fold · rewrite · cse · dce
        _fail(sink, sources)
        passes.run("gradient", check_gradient_survives, graph, typed, sink)  # still, after folding
        _fail(sink, sources)
        plan = passes.run("plan", make_plan, graph)
        warnings = [d for d in found if d.severity == "warning"]  # deprecations first: they are about the text
        warnings += passes.run("warnings", training_warnings, graph, plan)  # compiles, but cannot do what it says
        source, variables = passes.run("codegen", emit_source, graph, sources)
    except passes.InternalError as exc:
        raise SpecError([exc.diagnostic], sources) from None
    return Compiled(m, params, typed, graph, rewrites, plan, source, variables, tuple(warnings))
