"""`ptdsl new NAME --from METHOD`: start a method from an existing one.

The default file extends the parent and lists, commented out, every param, let, loss and
metric the merged parent defines (each copied from the file that states it, with that
place): uncomment a line and edit it to override it (lets bind late, so a new `let`
changes every use). `--copy` writes the parent's own file instead, renamed, for a method
that changes what `extends` keeps (data, roles). Either way the new method is
`experimental` and states the language version it is written against; the file is checked
before it is written."""
from __future__ import annotations

import re
import sys
from pathlib import Path

NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def register(sub) -> None:
    s = sub.add_parser("new", help="write a new method's spec file, starting from a library method")
    s.add_argument("name", help="the new method's name (an identifier)")
    s.add_argument("--from", dest="parent", required=True, metavar="METHOD", help="the method to start from")
    s.add_argument("--copy", action="store_true", help="a standalone copy of the parent's file, not an `extends`")
    s.add_argument("--output", "-o", metavar="FILE", help="where to write it (default NAME.ptdsl)")
    s.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    s.set_defaults(fn=cmd_new)


def cmd_new(args) -> int:
    import ptdsl
    from ptdsl.cli.main import Usage
    from ptdsl.syntax.mistakes import _KEYWORDS
    if not NAME.fullmatch(args.name) or args.name in _KEYWORDS:
        raise Usage(f"`{args.name}` is not a method name: letters, digits and _, not a keyword")
    out = Path(args.output or f"{args.name}.ptdsl")
    if out.exists() and not args.force:
        raise Usage(f"{out} exists (add --force to overwrite it)")
    parent = ptdsl.load(args.parent)  # a SpecError (unknown method, bad file) is reported as usual
    text = _copy(parent, args.name) if args.copy else _child(parent, args.name)
    out.write_text(text, encoding="utf-8")
    try:
        ptdsl.load(str(out))
    except ptdsl.SpecError:
        out.unlink()
        raise
    print(f"wrote {out}: `{args.name}`, from `{parent.name}`; check it with `ptdsl check {out}`", file=sys.stderr)
    return 0


def _header(parent, name: str, how: str, extends: str | None) -> list[str]:
    from ptdsl.version import __version__
    major_minor = ".".join(__version__.split(".")[:2])
    title = f"{parent.title or parent.name} (variant)".replace('"', "'")
    return [f"# `{name}`: {how} `{parent.name}` ({parent.path}), by `ptdsl new`.",
            f'method {name}{f" extends {extends}" if extends else ""} "{title}"',
            f"requires ptdsl >= {major_minor}",
            "experimental"]


def _child(parent, name: str) -> str:
    d = parent.definition
    lines = _header(parent, name, "extends", parent.name)
    lines += ["", "# Uncomment a line and edit it to override the parent's (its file and line are above it)."]
    groups = [("params", list(d.params.values())), ("lets", list(d.lets.values())),
              ("loss", [d.loss] if d.loss else []), ("metrics", list(d.metrics.values()))]
    for title, decls in groups:
        if not decls:
            continue
        lines += ["", f"# -- {title}"]
        for decl in decls:
            lines.append(f"# ({_place(decl.span)})")
            lines += [f"# {line}" for line in _source(d.sources, decl.span).splitlines()]
    return "\n".join(lines) + "\n"


def _copy(parent, name: str) -> str:
    """The parent's own file, its header (method line, stability, `requires`) replaced by the new
    method's: the copy is a new, experimental method extending what the parent's file extends."""
    text = Path(parent.path).read_text(encoding="utf-8")
    header = re.compile(r"\s*(method\s|requires\s|stable\s*$|experimental\s*$)")
    body = [line for line in text.splitlines() if not header.match(line)]
    return "\n".join(_header(parent, name, "a copy of", parent.extends) + body) + "\n"


def _source(sources: dict, span) -> str:
    lines = sources[span.file].splitlines()
    if span.line == span.end_line:
        return lines[span.line - 1][span.col - 1:span.end_col - 1]
    part = lines[span.line - 1:span.end_line]
    part[-1] = part[-1][:span.end_col - 1]
    part[0] = part[0][span.col - 1:]
    return "\n".join(part)


def _place(span) -> str:
    return f"{Path(span.file).name}:{span.line}"
