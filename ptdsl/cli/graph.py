"""`ptdsl graph METHOD`: the method's loss graph as text, DOT, Mermaid, SVG or PNG.

    ptdsl graph METHOD [--set k=v]… [--format text|dot|mermaid|svg|png] [-o FILE]
                       [--unoptimised] [--no-metrics]

Does not import torch. SVG and PNG need Graphviz's `dot` on PATH; without it the
command says how to install it and exits 1.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ptdsl.cli.main import parse_overrides


def register(subparsers) -> None:
    s = subparsers.add_parser("graph", help="render a method's loss graph (text, dot, mermaid, svg, png)")
    s.add_argument("method")
    s.add_argument("--set", action="append", metavar="NAME=VALUE")
    s.add_argument("--format", choices=["text", "dot", "mermaid", "svg", "png"], default="text")
    s.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    s.add_argument("--unoptimised", action="store_true", help="the checked graph before optimisation")
    s.add_argument("--no-metrics", action="store_true", help="only what the loss depends on")
    s.set_defaults(fn=cmd_graph)


def cmd_graph(args) -> int:
    from ptdsl.api import compile as compile_method
    from ptdsl.inspect import graphviz
    from ptdsl.inspect.render import FORMATS, to_dot
    from ptdsl.inspect.view import build_view
    c = compile_method(args.method, **parse_overrides(args.set))
    g = c.unoptimised_graph if args.unoptimised else c.graph
    view = build_view(g, c.name, optimised=not args.unoptimised, metrics=not args.no_metrics)
    if args.format in FORMATS:
        data = FORMATS[args.format](view).encode()
    else:
        try:
            data = graphviz.render(to_dot(view), args.format)
        except graphviz.GraphvizMissing as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output} ({args.format}, {len(data)} bytes)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data if data.endswith(b"\n") or args.format == "png" else data + b"\n")
        sys.stdout.flush()
    return 0
