"""`ptdsl diff A B`: what differs between two methods.

    ptdsl diff A B [--set-a k=v]… [--set-b k=v]… [--format text|json]

Declarations by name (header, data, roles, rewards, rollouts, params, inputs,
metrics), then the optimised loss graphs by structure, each change reported at
its spec line. Does not import torch. Exit status 0 whether or not they differ.
"""
from __future__ import annotations

import sys

from ptdsl.cli.main import parse_overrides


def register(subparsers) -> None:
    s = subparsers.add_parser("diff", help="what differs between two methods (declarations and loss graph)")
    s.add_argument("a", metavar="A")
    s.add_argument("b", metavar="B")
    s.add_argument("--set-a", action="append", metavar="NAME=VALUE", help="parameter override for A")
    s.add_argument("--set-b", action="append", metavar="NAME=VALUE", help="parameter override for B")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.set_defaults(fn=cmd_diff)


def _label(name: str, params: dict) -> str:
    return name + (f"({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")


def cmd_diff(args) -> int:
    from ptdsl.api import compile as compile_method
    from ptdsl.inspect.diff import diff_methods
    from ptdsl.inspect.diff_text import to_json, to_text
    pa, pb = parse_overrides(args.set_a), parse_overrides(args.set_b)
    ca, cb = compile_method(args.a, **pa), compile_method(args.b, **pb)
    d = diff_methods(ca, cb, _label(ca.name, pa), _label(cb.name, pb))
    if args.format == "json":
        print(to_json(d))
    else:
        print(to_text(d, color=hasattr(sys.stdout, "isatty") and sys.stdout.isatty()))
    return 0
