"""Definitions in dependency order: which names an expression uses, and an order
that puts every `let` (or `param`) after the definitions it uses.

Lowering and parameter binding evaluate definitions in this order, so using a
definition that is already done is a lookup: the depth of their recursion is
that of one expression (bounded by syntax/limits.py), however long a chain of
definitions is. Both walks here are iterative for the same reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from ptdsl.diagnostics import Span
from ptdsl.syntax import ast

# For a call, the arguments evaluated as values (the others name models, sets, …).
ValueArgs = Callable[[ast.Call], tuple]


def all_args(c: ast.Call) -> tuple:
    return tuple(c.args)


def names_used(e: ast.Expr, value_args: ValueArgs = all_args) -> list[ast.Name]:
    """The names `e` uses as values, in the order a left-to-right evaluation meets them."""
    out: list[ast.Name] = []
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, ast.Name):
            out.append(x)
        elif isinstance(x, ast.Unary):
            stack.append(x.operand)
        elif isinstance(x, ast.Binary):
            stack += [x.right, x.left]
        elif isinstance(x, ast.Call):
            stack += reversed(value_args(x))
    return out


@dataclass
class Order:
    """`done`: definitions, each after those it uses; `cycles`: (the names around a cycle,
    the use that closes it); `failed`: definitions that were being evaluated when a cycle
    was met (a recursive evaluation would have abandoned them all)."""

    done: list[str] = field(default_factory=list)
    cycles: list[tuple[list[str], Span]] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)


def dependency_order(names: Iterable[str], uses: Callable[[str], list[ast.Name]]) -> Order:
    """A depth-first post-order over `names`, following `uses(name)` (the uses of other
    definitions, in evaluation order), as a recursive evaluation would visit them."""
    out = Order()
    state: dict[str, str] = {}
    for root in names:
        if root in state:
            continue
        state[root] = "active"
        stack = [(root, iter(uses(root)))]
        while stack:
            name, pending = stack[-1]
            use = next(pending, None)
            if use is None:
                stack.pop()
                state[name] = "done"
                out.done.append(name)
            elif state.get(use.id) == "active":
                path = [n for n, _ in stack]
                out.cycles.append((path[path.index(use.id):] + [use.id], use.span))
                out.failed.update(path)
                state.update(dict.fromkeys(path, "failed"))
                stack.clear()
            elif use.id not in state:
                state[use.id] = "active"
                stack.append((use.id, iter(uses(use.id))))
    return out
