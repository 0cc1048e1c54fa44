"""AST → spec text, for messages and listings (never executed)."""
from __future__ import annotations

from ptdsl.syntax import ast

_PREC = {"or": 1, "and": 2, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4, "+": 5, "-": 5,
         "*": 6, "/": 6, "^": 8}


def expr_text(e, parent: int = 0) -> str:
    if isinstance(e, ast.Number):
        return str(e.value)
    if isinstance(e, ast.Bool):
        return "true" if e.value else "false"
    if isinstance(e, ast.String):
        return f'"{e.value}"'
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Unary):
        inner = expr_text(e.operand, 7)
        text = f"-{inner}" if e.op == "-" else f"not {inner}"
        return f"({text})" if parent > 7 else text
    if isinstance(e, ast.Binary):
        p = _PREC[e.op]
        text = f"{expr_text(e.left, p)} {e.op} {expr_text(e.right, p + 1)}"
        return f"({text})" if p < parent else text
    args = [expr_text(a) for a in e.args] + [f"{k.name} = {expr_text(k.value)}" for k in e.kwargs]
    return f"{e.func}({', '.join(args)})"


def constraint_text(c) -> str | None:
    if c is None:
        return None
    if isinstance(c, ast.Bound):
        return f"{c.op} {expr_text(c.value)}"
    return (f"in {'[' if c.low_closed else '('}{expr_text(c.low)}, {expr_text(c.high)}"
            f"{']' if c.high_closed else ')'}")
