"""Limits a spec must respect, checked on the parse tree right after parsing,
before anything walks it recursively.

Nesting. The AST conversion, the lowering and constant evaluation recurse once
per level of an expression, so an expression may nest at most MAX_DEPTH levels:
each operator, call and keyword argument adds a level (`a + b + c` is two
levels deep, `exp(-x)` two), parentheses alone add none. The library's deepest
expression has 9 levels; compiling 100 levels takes at most about 320 Python frames
(measured: nested calls, 3 frames a level), well inside Python's default limit of
1000 even under a test runner (tests/language/test_limits.py compiles every shape at
the limit). A `let` starts again at level 0 (lets are lowered in dependency order).

Number literals. A literal must be a finite double (`1e400` is an error, E0105).
Up to 15 digits without a point or exponent it is an exact int (the language
needs ints for `n = 8`); longer ones are read as doubles, so no stage ever holds a
literal integer that Python cannot convert or compute with quickly.

The walk is iterative, so a tree of any depth is checked without recursion.
"""
from __future__ import annotations

import math

from lark import Token, Tree

from ptdsl.diagnostics import Diagnostic, Span, error

MAX_DEPTH = 100
MAX_INT_DIGITS = 15  # < 2**53: an exact double
# parse-tree nodes (grammar aliases) that are a level of expression nesting
NESTING = frozenset({"binary", "compare", "pow", "neg", "not_op", "and_op", "or_op", "call", "kwarg"})


def number_value(text: str) -> int | float:
    """A NUMBER token's value (check_limits has rejected the ones that are not finite)."""
    if text.isdigit() and len(text) <= MAX_INT_DIGITS:
        return int(text)
    return float(text)  # never raises for a NUMBER token; may be inf


def check_limits(tree: Tree, path: str) -> list[Diagnostic]:
    """Every literal out of range, and the first too-deep point of each statement."""
    found: list[Diagnostic] = []
    for statement in tree.children:
        if isinstance(statement, Tree):
            found += _check_statement(statement, path)
    return found


def _check_statement(statement: Tree, path: str) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    too_deep = False
    stack: list[tuple[Tree, int]] = [(statement, 0)]
    while stack:
        node, depth = stack.pop()
        depth += node.data in NESTING
        if depth > MAX_DEPTH:
            if not too_deep:
                found.append(_too_deep(node, path))
                too_deep = True
            continue
        for child in reversed(node.children):  # reversed: visit in source order
            if isinstance(child, Tree):
                stack.append((child, depth))
            elif isinstance(child, Token) and child.type == "NUMBER":
                if not math.isfinite(number_value(child)):
                    found.append(_too_large(child, path))
    return found


def _too_deep(node: Tree, path: str) -> Diagnostic:
    m = node.meta
    span = Span(path, m.line, m.column, m.end_line, m.end_column)
    return error("E0104", f"expression nested too deeply: more than {MAX_DEPTH} levels", span,
                 f"level {MAX_DEPTH + 1} starts here",
                 notes=("each operator, call and keyword argument adds a level (a chain `a + b + c` "
                        "adds one per operator); parentheses alone add none",),
                 help="give parts of the expression names with `let`: each `let` starts again at level 0")


def _too_large(token: Token, path: str) -> Diagnostic:
    text = str(token)
    shown = text if len(text) <= 24 else f"{text[:10]}…{text[-6:]} ({len(text)} characters)"
    span = Span(path, token.line, token.column, token.end_line, token.end_column)
    return error("E0105", f"number literal `{shown}` is too large", span,
                 "beyond the float range (±1.8e308)",
                 help="numbers are 64-bit floats; a value this large would overflow any computation "
                      "it is part of")
