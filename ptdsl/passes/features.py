"""The stability contract's rule C2 (docs/stability.md#c2-meaning), checked on every spec,
shipped or not, through the one pipeline:

  E0216  a `requires` line this ptdsl cannot meet (a newer version, or not `ptdsl >= X.Y`);
  E0214  a `stable` method that uses an experimental feature;
  E0215  a feature newer than the version its file `requires`;
  W0203  a deprecated feature: it still works, and says what replaces it and when it goes.

Each is reported once per feature, where it is first written (a parent's line in the
parent's file), with the other places in a note. The features and their levels are in the
tables that define them (syntax/features.py); feature_uses.py finds the uses.
"""
from __future__ import annotations

from ptdsl import version
from ptdsl.diagnostics import Diagnostic, Label, Sink, error
from ptdsl.passes.feature_uses import Use, feature_uses
from ptdsl.syntax.features import EXPERIMENTAL, version_key
from ptdsl.syntax.resolve import MethodDef

C2 = "stability contract C2 (docs/stability.md#c2-meaning)"
MORE = 3  # other places a note lists


def installed_version() -> str:
    """This ptdsl's version (ptdsl/version.py, the one source), read at call time."""
    return version.__version__


def check_requires(m: MethodDef, sink: Sink, installed: str | None = None) -> None:
    """Each file's `requires` line: `ptdsl >= MAJOR.MINOR`, no newer than this ptdsl."""
    installed = installed or installed_version()
    for r in m.requires.values():
        wanted = version_key(r.version)
        if r.package.id != "ptdsl":
            sink.add(error("E0216", f"`requires` names `{r.package.id}`; a spec can require only `ptdsl`",
                           r.package.span, "not `ptdsl`", help="write e.g. `requires ptdsl >= 0.2`"))
        elif r.op != ">=" or wanted is None:
            sink.add(error("E0216", f"`requires ptdsl {r.op} {r.version}` is not a version requirement",
                           r.span, "expected `requires ptdsl >= MAJOR.MINOR`",
                           help=f"write e.g. `requires ptdsl >= {_short(installed)}`"))
        elif wanted > version_key(installed):
            sink.add(error("E0216", f"this spec requires ptdsl {r.version}, but this is ptdsl {installed}",
                           r.version_span, f"needs ptdsl {r.version} or newer",
                           notes=(f"ptdsl {installed} reads the language of version {_short(installed)}; "
                                  f"a newer one may have features this one does not know",),
                           help="upgrade ptdsl, or lower the requirement if the spec does not need the newer "
                                "version's features (`ptdsl check` names any it uses)"))


def check_features(m: MethodDef, graph) -> list[Diagnostic]:
    """Errors (E0214, E0215) and warnings (W0203) of the features `m` uses; `graph` is the
    lowered IR (for the features that are a form of arguments)."""
    found: dict[tuple[str, str], list[Use]] = {}

    def add(code: str, use: Use) -> None:
        if (code, use.within) not in found:  # an option of a statement already reported says nothing new
            found.setdefault((code, use.title), []).append(use)

    stated = {file: version_key(r.version) for file, r in m.requires.items()}
    for use in feature_uses(m, graph):
        if m.stability == "stable" and use.feature.level == EXPERIMENTAL:
            add("E0214", use)
        need = stated.get(use.span.file)  # the `requires` line itself is never too new for itself
        if need and use.name != "requires" and version_key(use.feature.since) > need:
            add("E0215", use)
        if use.feature.deprecated is not None:
            add("W0203", use)
    make = {"E0214": _experimental, "E0215": _too_new, "W0203": _deprecated}
    return [make[code](uses, m) for (code, _), uses in found.items()]


def _elsewhere(uses: list[Use]) -> tuple[str, ...]:
    if len(uses) < 2:
        return ()
    where = [f"{u.span.file}:{u.span.line}:{u.span.col}" for u in uses[1:MORE + 1]]
    more = f" and {len(uses) - 1 - MORE} more" if len(uses) - 1 > MORE else ""
    return (f"also used at {', '.join(where)}{more}",)


def _inherited(use: Use, m: MethodDef) -> tuple[str, ...]:
    if use.span.file == m.path:
        return ()
    return (f"`{m.name}` inherits this line from `{use.span.file}` through `extends`",)


def _experimental(uses: list[Use], m: MethodDef) -> Diagnostic:
    u = uses[0]
    marked = (Label(m.stability_span, "the method is marked stable here", primary=False),) \
        if m.stability_span else ()
    return error("E0214", f"stable method `{m.name}` uses the experimental {u.title}", u.span,
                 f"experimental (since {u.feature.since})", extra=marked,
                 notes=(f"{C2}: a stable method uses only stable features, whose meaning is kept "
                        f"within a major version",) + _inherited(u, m) + _elsewhere(uses),
                 help=f"mark the method `experimental` (its header line), or write it without the {u.title}")


def _too_new(uses: list[Use], m: MethodDef) -> Diagnostic:
    u = uses[0]
    r = m.requires[u.span.file]
    return error("E0215", f"the {u.title} needs ptdsl {u.feature.since}, but this file requires "
                          f"ptdsl >= {r.version}", u.span, f"since {u.feature.since}",
                 extra=(Label(r.version_span, f"the file states {r.version}", primary=False),),
                 notes=(f"{C2}: a spec that states a version uses only what that version has",)
                 + _elsewhere(uses),
                 help=f"raise the requirement to `requires ptdsl >= {u.feature.since}`, "
                      f"or write it without the {u.title}")


def _deprecated(uses: list[Use], m: MethodDef) -> Diagnostic:
    u = uses[0]
    dep = u.feature.deprecated
    how = "; `ptdsl migrate FILE` rewrites it" if dep.mechanical else ""
    return Diagnostic(
        "warning", "W0203", f"the {u.title} is deprecated and will be removed in ptdsl {dep.removal}",
        (Label(u.span, f"deprecated: write `{dep.replacement}`"),),
        (f"{C2}: a deprecated feature keeps its meaning, with this warning, until the version that "
         f"removes it; `ptdsl check --strict` makes the warning an error",) + _elsewhere(uses),
        f"write `{dep.replacement}` instead{how}")


def _short(version: str) -> str:
    return ".".join(version.split(".")[:2])
