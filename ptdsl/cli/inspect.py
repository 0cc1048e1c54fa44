"""The inspection commands, which never import torch:

    ptdsl graph METHOD [--set k=v]… [--format text|dot|mermaid|svg|png] [-o FILE]
                       [--unoptimised] [--no-metrics] [--training]
    ptdsl diff A B [--set-a k=v]… [--set-b k=v]… [--format text|json]

`graph` renders the loss graph, or with `--training` the training graph (how experience
is made and used: inspect/training_build.py); SVG and PNG need Graphviz's `dot` on PATH (without
it the command says how to install it and exits 1). `diff` compares declarations by name
(header, data, roles, rewards, rollouts, params, inputs, metrics), then the optimised
loss graphs by structure, each change at its spec line; it exits 0 either way.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ptdsl.cli.main import Usage, parse_overrides


def register(subparsers) -> None:
    s = subparsers.add_parser("graph", help="render a method's loss graph, or its training graph (text, dot, mermaid, svg, png)")
    s.add_argument("method")
    s.add_argument("--set", action="append", metavar="NAME=VALUE")
    s.add_argument("--format", choices=["text", "dot", "mermaid", "svg", "png"], default="text")
    s.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    s.add_argument("--unoptimised", action="store_true", help="the checked graph before optimisation")
    s.add_argument("--no-metrics", action="store_true", help="only what the loss depends on")
    s.add_argument("--training", action="store_true",
                   help="the training graph: sources, sampling, scoring, what is recorded, reuse, optimizer steps")
    s.set_defaults(fn=cmd_graph)

    s = subparsers.add_parser("diff", help="what differs between two methods (declarations and loss graph)")
    s.add_argument("a", metavar="A")
    s.add_argument("b", metavar="B")
    s.add_argument("--set-a", action="append", metavar="NAME=VALUE", help="parameter override for A")
    s.add_argument("--set-b", action="append", metavar="NAME=VALUE", help="parameter override for B")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.set_defaults(fn=cmd_diff)


def cmd_graph(args) -> int:
    from ptdsl.api import compile as compile_method
    from ptdsl.inspect.render import GraphvizMissing, graphviz
    if args.training and (args.unoptimised or args.no_metrics):
        raise Usage("--training draws the training graph; --unoptimised and --no-metrics are for the loss graph")
    c = compile_method(args.method, **parse_overrides(args.set))
    formats, view = _training(c) if args.training else _loss_graph(c, args)
    if args.format in formats:
        data = formats[args.format](view).encode()
    else:
        try:
            data = graphviz(formats["dot"](view), args.format)
        except GraphvizMissing as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output} ({args.format}, {len(data)} bytes)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data if data.endswith(b"\n") or args.format == "png" else data + b"\n")
        sys.stdout.flush()
    return 0


def _loss_graph(c, args):
    from ptdsl.inspect.render import FORMATS
    from ptdsl.inspect.view import build_view
    g = c.unoptimised_graph if args.unoptimised else c.graph
    return FORMATS, build_view(g, c.name, optimised=not args.unoptimised, metrics=not args.no_metrics)


def _training(c):
    from ptdsl.inspect.training_build import build_training
    from ptdsl.inspect.training_render import FORMATS
    return FORMATS, build_training(c)


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
