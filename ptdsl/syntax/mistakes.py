"""Parse errors in human words: what was expected, what was found, and a table of
common mistakes mapped to their own message and help (E0101–E0103)."""
from __future__ import annotations

import re

from lark import Token
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

from ptdsl.diagnostics import Diagnostic, Label, Span, error

_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "LPAR": "`(`", "RPAR": "`)`",
    "EQUAL": "`=`", "COMMA": "`,`", "COMPARE": "a comparison", "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*` or `/`", "MINUS": "`-`", "CIRCUMFLEX": "`^`", "LSQB": "`[`", "RSQB": "`]`",
    "$END": "end of file",
}
_EXPR_START = {"NAME", "NUMBER", "STRING", "LPAR", "MINUS", "TRUE", "FALSE", "NOT"}
_STATEMENT_START = {"METHOD", "PAPER", "FAMILY", "STABLE", "EXPERIMENTAL", "DATA", "POLICY",
                    "REWARD", "ROLLOUT", "PARAM", "LET", "LOSS", "METRIC"}


def _describe_expected(expected: set[str]) -> str:
    words = []
    if _EXPR_START & expected and len(_EXPR_START & expected) >= 3:
        words.append("an expression")
        expected = expected - _EXPR_START
    if len(_STATEMENT_START & expected) >= 3:
        words.append("a statement (`let`, `loss`, `param`, …)")
        expected = expected - _STATEMENT_START
    for t in sorted(expected):
        w = _WORDS.get(t) or (f"`{t.lower()}`" if t.isalpha() else None)
        if w and w not in words:
            words.append(w)
    if not words:
        return "something else"
    return ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]


def _found(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type == "STRING":
        return f"string {token}"
    return f"`{token}`"


# Common mistakes: (predicate on the error, message, help). Checked in order.
_KEYWORDS = ("method", "extends", "paper", "family", "stable", "experimental", "data", "reward",
             "rollout", "param", "let", "loss", "metric", "in", "and", "or", "not", "true", "false")


def _keyword_at(text: str, pos: int) -> str | None:
    m = re.match(r"[A-Za-z_][A-Za-z_0-9]*", text[pos:])
    return m.group(0) if m and m.group(0) in _KEYWORDS else None


def _common_mistake(exc, text: str) -> tuple[str, str] | None:
    prev = exc.token_history[-1] if getattr(exc, "token_history", None) else None
    expected = set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())
    if prev is not None and prev.type == "NAME" and expected == {"EQUAL"}:
        if str(prev) in ("def", "import", "return", "lambda", "if", "for", "while", "class"):
            return (f"`{prev}` is Python, not ptdsl",
                    "specs are declarative: use `let`, `loss`, `metric` and builtins such as `where(c, a, b)`")
        return (f"`{prev}` cannot start a statement",
                "statements start with a keyword (`let`, `loss`, `metric`, `param`, …) or bind a role as "
                f"`name = frozen(policy)`; if `{prev}` belongs to the expression before it, an operator is missing")
    if isinstance(exc, UnexpectedToken):
        if "NAME" in expected and str(exc.token) in _KEYWORDS:
            return (f"`{exc.token}` is a keyword and cannot be used as a name",
                    f"choose another name, e.g. `{exc.token}_value`")
        if str(exc.token) == "*" and prev is not None and str(prev) == "*":
            return "`**` is not an operator in ptdsl", "write powers with `^`, e.g. `x ^ 2`"
        if str(exc.token) == "=" and prev is not None and prev.type in ("LOSS",):
            return "`loss` takes its expression directly", "write `loss mean(...)`, without `=`"
        if str(exc.token) == "=" and prev is not None and str(prev) == "=":
            return "`==` is written with two `=` and compares values", "use `==` inside an expression, or `=` once to bind a name"
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        keyword = _keyword_at(text, exc.pos_in_stream)
        if keyword:
            return (f"`{keyword}` is a keyword, but an expression was expected here",
                    "the expression before it is incomplete, or a name collides with a keyword")
        if ch == '"':
            return "unterminated string", "a string must end with `\"` on the same line"
        if ch == ":":
            return "unexpected `:`", "ptdsl has no blocks: write each definition as `let name = expr`"
        if ch == "'":
            return "strings use double quotes", "write \"text\" instead of 'text'"
        if ch in "[]" :
            return f"unexpected `{ch}`", "brackets only appear in parameter intervals, e.g. `param eps = 0.1 in [0, 0.5)`"
    return None


def diagnose(exc: LarkError, text: str, path: str) -> Diagnostic:
    mistake = _common_mistake(exc, text)
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        body = text.rstrip()  # point just after the last character, not at an empty last line
        line = body.count("\n") + 1
        col = len(body.rsplit("\n", 1)[-1]) + 1
        span = Span(path, line, col, line, col + 1)
        expected_set = set(getattr(exc, "expected", set()) or set())
        expected = _describe_expected(expected_set)
        if expected_set == {"EQUAL"} and not mistake:
            # A trailing name read as the start of a role binding: point at it.
            last = list(re.finditer(r"[A-Za-z_][A-Za-z_0-9]*", text))[-1]
            line = text.count("\n", 0, last.start()) + 1
            col = last.start() - (text.rfind("\n", 0, last.start()) + 1) + 1
            span = Span(path, line, col, line, col + len(last.group(0)))
            return error("E0102", f"`{last.group(0)}` cannot start a statement", span, "here",
                         help="statements start with a keyword (`let`, `loss`, `metric`, `param`, …); "
                              f"if `{last.group(0)}` belongs to the expression before it, an operator is missing")
        if mistake:
            prev = exc.token_history[-1] if getattr(exc, "token_history", None) else None
            if prev is not None:
                span = Span(path, prev.line, prev.column, prev.end_line, prev.end_column)
            return error("E0103", mistake[0], span, "here", help=mistake[1])
        return error("E0103", "unexpected end of file", span, f"expected {expected}",
                     help="finish the expression or statement that is still open (an unclosed `(`?)")
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        span = Span(path, tok.line, tok.column, tok.end_line or tok.line,
                    tok.end_column or tok.column + len(str(tok)))
        expected = _describe_expected(set(exc.expected))
        if mistake:
            prev = exc.token_history[-1] if getattr(exc, "token_history", None) else None
            if prev is not None and "cannot start a statement" in mistake[0] or "is Python" in mistake[0]:
                span = Span(path, prev.line, prev.column, prev.end_line, prev.end_column)
                return error("E0102", mistake[0], span, "here", help=mistake[1])
            return error("E0102", mistake[0], span, f"found {_found(tok)}", help=mistake[1])
        return error("E0102", f"expected {expected}, found {_found(tok)}", span, "unexpected here")
    if isinstance(exc, UnexpectedCharacters):
        span = Span(path, exc.line, exc.column, exc.line, exc.column + 1)
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else "?"
        if mistake:
            return error("E0101", mistake[0], span, "here", help=mistake[1])
        allowed = set(exc.allowed or ())
        hint = f"expected {_describe_expected(allowed)}" if allowed else ""
        return error("E0101", f"unexpected character `{ch}`", span, hint)
    span = Span(path, 1, 1, 1, 2)
    return error("E0101", f"cannot parse this spec: {exc}", span)
