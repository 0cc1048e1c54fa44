"""`ptdsl migrate FILE [--write]`: rewrite the deprecated forms of a spec file.

Without `--write` it prints a unified diff of the rewrite (nothing when there is none) and
changes nothing; with it, the file is rewritten in place. Deprecated uses that cannot be
rewritten mechanically are listed on standard error with what to write instead. Exit
status 0, or 1 when the file does not parse (its diagnostics are printed).
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path


def register(subparsers) -> None:
    s = subparsers.add_parser("migrate", help="rewrite a spec's deprecated forms (a diff; --write rewrites the file)")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--write", action="store_true", help="rewrite FILE in place instead of printing a diff")
    s.set_defaults(fn=cmd_migrate)


def cmd_migrate(args) -> int:
    from ptdsl.compiler import define
    from ptdsl.passes.migrate import migrate
    m = define(args.file)
    result = migrate(m)
    before = m.sources[m.path]
    for use in result.listed:
        dep = use.feature.deprecated
        why = "in another file: migrate that one" if use.span.file != m.path else "not a mechanical rewrite"
        print(f"{use.span.file}:{use.span.line}:{use.span.col}: the {use.title} is deprecated (removed in "
              f"{dep.removal}); write `{dep.replacement}` instead ({why})", file=sys.stderr)
    if result.text == before:
        print(f"{m.path}: nothing to rewrite", file=sys.stderr)
        return 0
    if args.write:
        Path(m.path).write_text(result.text, encoding="utf-8")
        print(f"{m.path}: rewrote {len(result.rewritten)} deprecated use"
              f"{'s' if len(result.rewritten) != 1 else ''}", file=sys.stderr)
    else:
        sys.stdout.writelines(difflib.unified_diff(before.splitlines(keepends=True), result.text.splitlines(keepends=True),
                                                   f"{m.path}", f"{m.path} (migrated)"))
    return 0
