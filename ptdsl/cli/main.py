"""The `ptdsl` command line.

    ptdsl --version
    ptdsl list [--family F] [--stability S] [--format text|markdown|json]
    ptdsl check FILE_OR_NAME... [--set k=v ...] [--format text|json] [--strict]
    ptdsl show METHOD [--set k=v ...] [--unoptimised]    (params, inputs, plan, training graph, IR)
    ptdsl compile METHOD --emit python|ir [--set k=v ...]
    ptdsl new NAME --from METHOD [--copy] [-o FILE]     (a new spec file to edit)
    ptdsl plot RUN_DIR [--metrics a,b] [-o FILE.png]    (a run's train and eval curves)

Commands that do not run models never import torch. Exit status: 0 ok, 1 the
spec (or input) has errors, 2 bad usage, 3 an internal error in ptdsl.
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys

from ptdsl.diagnostics import Diagnostic, SpecError, render_all


def parse_overrides(pairs: list[str] | None) -> dict:
    from ptdsl.passes.params import parse_cli_value
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise Usage(f"--set takes NAME=VALUE, got `{pair}`")
        k, v = pair.split("=", 1)
        out[k.strip()] = parse_cli_value(v)
    return out


class Usage(Exception):
    """Bad command-line usage: argparse prints it and exits 2."""
    pass


def _color(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def report(err: SpecError) -> int:
    """Print the diagnostics; the exit status: 3 if one is an internal error (E09xx, a bug in
    ptdsl), else 1 (the spec or input is wrong)."""
    print(render_all(err.diagnostics, err.sources, color=_color(sys.stderr)), file=sys.stderr)
    n = sum(d.severity == "error" for d in err.diagnostics)
    print(f"\n{n} error{'s' if n != 1 else ''}", file=sys.stderr)
    return exit_status(err)


def exit_status(err: SpecError) -> int:
    return 3 if any(d.code.startswith("E09") for d in err.diagnostics) else 1


# ---- commands -------------------------------------------------------------------

def cmd_check(args) -> int:
    from ptdsl.api import compile as compile_method, load
    from ptdsl.runtime.rewards import unknown_verifiers  # names only: no torch
    overrides = parse_overrides(args.set)
    results, failed = [], 0
    for target in args.targets:
        try:
            m = load(target)
            compiled = compile_method(m, **overrides) if overrides else None
            warnings = unknown_verifiers(m.definition) + (compiled.warnings if compiled else m.warnings)
            if args.strict and warnings:  # every warning an error: the spec fails the check
                raise SpecError([_strict(d) for d in warnings], m.definition.sources)
            results.append({"target": target, "method": m.name, "file": m.path, "ok": True,
                            "diagnostics": [d.to_json() for d in warnings]})
            if args.format == "text":
                if warnings:
                    print(render_all(warnings, m.definition.sources, color=_color(sys.stderr)) + "\n",
                          file=sys.stderr)
                print(f"ok: {m.name} ({m.path})")
        except SpecError as err:
            failed += 1
            results.append({"target": target, "ok": False, "diagnostics": [d.to_json() for d in err.diagnostics]})
            if args.format == "text":
                report(err)
    if args.format == "json":
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def _strict(d: Diagnostic) -> Diagnostic:
    from dataclasses import replace
    return replace(d, severity="error", notes=d.notes + ("`--strict` makes every warning an error",))


def cmd_list(args) -> int:
    from ptdsl import library
    from ptdsl.compiler import define
    from ptdsl.syntax.resolve import data_summary
    rows = []
    for name in library.all_names():
        try:
            m = define(name)
        except SpecError:
            rows.append({"name": name, "family": "?", "data": "?", "stability": "broken", "paper": "",
                         "title": "(does not parse: run `ptdsl check`)", "note": ""})
            continue
        rows.append({"name": m.name, "family": m.family or "", "data": data_summary(m),
                     "stability": m.stability, "paper": m.paper or "", "title": m.title or "",
                     "note": _catalogue_note(m.sources.get(m.path, ""))})
    rows = [r for r in rows if (not args.family or args.family.lower() in r["family"].lower())
            and (not args.stability or r["stability"] == args.stability)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "markdown":
        print(_markdown(rows), end="")
    else:
        cols = ("name", "family", "data", "stability", "paper")
        widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in cols}
        print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
        for r in rows:
            print("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())
        print(f"\n{len(rows)} method{'s' if len(rows) != 1 else ''}")
    return 0


def _catalogue_note(text: str) -> str:
    """A spec's `#:` comment lines (its own file's, not a parent's), joined: the catalogue's
    note on the method, e.g. where it knowingly differs from TRL."""
    lines = (line.strip() for line in text.splitlines())
    return " ".join(line[2:].strip() for line in lines if line.startswith("#:"))


def _markdown(rows) -> str:
    """The paper index (docs/methods.md): one table per family, generated from spec headers."""
    out = ["# Method catalogue", "",
           "Generated from the spec headers and their `#:` notes by `ptdsl list --format markdown` "
           "(tests keep it in sync).",
           f"{len(rows)} methods; `stable` ones are verified against independent references "
           "(and against TRL 1.16 where TRL implements them).", ""]
    families: dict[str, list] = {}
    for r in rows:
        families.setdefault(r["family"] or "other", []).append(r)
    for family in sorted(families):
        out += [f"## {family}", "", "| method | title | data | stability | paper |", "|---|---|---|---|---|"]
        for r in families[family]:
            paper = r["paper"]
            if paper.startswith("arXiv:"):
                paper = f"[{paper}](https://arxiv.org/abs/{paper[6:]})"
            out.append(f"| `{r['name']}` | {r['title']} | {r['data']} | {r['stability']} | {paper} |")
        out.append("")
        notes = [f"- `{r['name']}`: {r['note']}" for r in families[family] if r["note"]]
        out += ["Notes:", "", *notes, ""] if notes else []
    return "\n".join(out).rstrip() + "\n"


def cmd_show(args) -> int:
    from ptdsl.api import compile as compile_method
    from ptdsl.inspect.training_build import build_training
    from ptdsl.inspect.training_render import schedule_lines
    from ptdsl.ir.printer import print_ir
    c = compile_method(args.method, **parse_overrides(args.set))
    m = c.method
    out = [f"method {m.name}" + (f" extends {m.extends}" if m.extends else "") + f" \"{m.title or ''}\"",
           f"  file       {m.path}", f"  paper      {m.paper or '-'}", f"  family     {m.family or '-'}",
           f"  stability  {m.stability}", f"  data       {m.data}",
           f"  experimental features  {_experimental_features(c)}", "", "params"]
    for p in m.params.values():
        value = c.params[p.name]
        extra = f"  {p.constraint}" if p.constraint else ""
        out.append(f"  {p.name} = {_fmt(value)}{extra}" + (f"    # {p.doc}" if p.doc else ""))
    out += ["", "inputs"]
    for i in c.inputs:
        out.append(f"  {i.name:<46} {i.level:<22} {'trainable' if i.trainable else ''}".rstrip())
    out += ["", "plan"] + ["  " + line for line in c.plan.describe().splitlines()]
    out += ["", "training graph"] + ["  " + line for line in schedule_lines(build_training(c))]
    out += ["", "ir" + (" (checked, before optimisation)" if args.unoptimised else "")]
    out += ["  " + line for line in print_ir(c.unoptimised_graph if args.unoptimised else c.graph).splitlines()]
    if c.rewrites and not args.unoptimised:
        out += ["", "rewrites applied: " + ", ".join(c.rewrites)]
    print("\n".join(out))
    return 0


def _experimental_features(c) -> str:
    """The experimental features the method uses (passes/feature_uses.py), each once, or `none`."""
    from ptdsl.passes.feature_uses import feature_uses
    uses = [u for u in feature_uses(c.method.definition, c.unoptimised_graph) if u.feature.level == "experimental"]
    listed = {u.title for u in uses}
    titles = dict.fromkeys(u.title for u in uses if u.within not in listed)  # not a listed call's options
    return ", ".join(titles) or "none"


def _fmt(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def cmd_compile(args) -> int:
    from ptdsl.api import compile as compile_method
    from ptdsl.ir.printer import print_ir
    c = compile_method(args.method, **parse_overrides(args.set))
    print(c.source if args.emit == "python" else print_ir(c.graph), end="" if args.emit == "python" else "\n")
    return 0


# ---- entry point ----------------------------------------------------------------

# Commands defined in other modules: each exposes `register(subparsers)`, which adds
# its parser with `set_defaults(fn=...)`. Listed by module path so that importing
# the CLI stays cheap (a module is imported when the parser is built).
EXTRA_COMMANDS: list[str] = [
    "ptdsl.cli.train",
    "ptdsl.cli.inspect",
    "ptdsl.cli.equiv",
    "ptdsl.cli.migrate",
    "ptdsl.cli.new",
    "ptdsl.cli.plot",
]


def build_parser() -> argparse.ArgumentParser:
    import importlib
    from ptdsl import __version__
    p = argparse.ArgumentParser(prog="ptdsl", description="A compiler for LLM post-training methods.")
    p.add_argument("--version", action="version", version=f"ptdsl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="the method catalogue")
    s.add_argument("--family", help="only methods whose family contains this text")
    s.add_argument("--stability", choices=["stable", "experimental"])
    s.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("check", help="parse and check spec files or library methods")
    s.add_argument("targets", nargs="+", metavar="FILE_OR_NAME")
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="check with a parameter override")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.add_argument("--strict", action="store_true",
                   help="treat warnings (deprecations included) as errors: exit 1 if there are any")
    s.set_defaults(fn=cmd_check)

    s = sub.add_parser("show", help="a method's params, inputs, plan, training graph and IR")
    s.add_argument("method")
    s.add_argument("--set", action="append", metavar="NAME=VALUE")
    s.add_argument("--unoptimised", action="store_true", help="show the IR before optimisation")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("compile", help="the generated loss code (or optimised IR)")
    s.add_argument("method")
    s.add_argument("--emit", choices=["python", "ir"], default="python")
    s.add_argument("--set", action="append", metavar="NAME=VALUE")
    s.set_defaults(fn=cmd_compile)
    for module in EXTRA_COMMANDS:
        importlib.import_module(module).register(sub)
    p.set_defaults(commands=sub.choices)
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str] | None):
    """parse_args, but an unknown flag gets the command's nearest flags (argparse before 3.14
    only says "unrecognized arguments")."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = args.commands.get(args.command)
        known = [f for a in (command or parser)._actions for f in a.option_strings]
        hints = []
        for word in extra:
            near = difflib.get_close_matches(word.split("=", 1)[0], known, n=2, cutoff=0.6) \
                if word.startswith("-") else []
            hints.append(f"`{word}`" + (f" (did you mean {' or '.join(f'`{n}`' for n in near)}?)" if near else ""))
        (command or parser).error(f"unrecognized arguments: {', '.join(hints)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    try:
        return args.fn(args)
    except SpecError as err:
        return report(err)
    except Usage as exc:
        parser.error(str(exc))
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a bare traceback: report it as our bug
        d = Diagnostic("error", "E0901", f"internal error in `ptdsl {args.command}`", (),
                       (f"{type(exc).__name__}: {exc}",), "this is a bug in ptdsl; please report it "
                       "with the command line and spec file")
        print(render_all([d], {}, color=_color(sys.stderr)), file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
