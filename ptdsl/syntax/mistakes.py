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
                    "REWARD", "ROLLOUT", "UPDATE", "MIX", "PARAM", "LET", "LOSS", "METRIC"}


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
_KEYWORDS = ("method", "extends", "paper", "family", "stable", "experimental", "requires", "data", "reward",
             "rollout", "update", "mix", "param", "let", "loss", "metric", "in", "and", "or", "not", "true", "false")


def _keyword_at(text: str, pos: int) -> str | None:
    m = re.match(r"[A-Za-z_][A-Za-z_0-9]*", text[pos:])
    return m.group(0) if m and m.group(0) in _KEYWORDS else None


def _common_mistake(exc, text: str) -> tuple[str, str] | None:
    prev = exc.token_history[-1] if getattr(exc, "token_history", None) else None
    expected = set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())
    if isinstance(exc, UnexpectedToken) and str(exc.token) == ":":  # valid only after `data NAME`
        return "unexpected `:`", ("ptdsl has no blocks: write each definition as `let name = expr`; "
                                  "`NAME:` only names a data source, as in `data retain: sft`")
    if prev is not None and prev.type == "NAME" and expected == {"EQUAL"}:
        if str(prev) in ("def", "import", "return", "lambda", "if", "for", "while", "class"):
            return (f"`{prev}` is Python, not ptdsl",
                    "specs are declarative: use `let`, `loss`, `metric` and builtins such as `where(c, a, b)`")
        return (f"`{prev}` cannot start a statement",
                "statements start with a keyword (`let`, `loss`, `metric`, `param`, …) or bind a role as "
                f"`name = frozen(policy)`; if `{prev}` belongs to the expression before it, an operator is missing")
    if isinstance(exc, UnexpectedToken):
        if prev is not None and prev.type == "UPDATE":
            return ("`update` takes its options as `NAME = VALUE`",
                    "e.g. `update passes = 2, minibatches = 4` (passes over each batch of experience, "
                    "optimizer steps per pass)")
        if prev is not None and prev.type == "REQUIRES":
            return ("`requires` takes `ptdsl >= VERSION`",
                    "e.g. `requires ptdsl >= 0.2`: the language version (MAJOR.MINOR) the spec needs")
        if prev is not None and prev.type == "MIX":
            return ("`mix` takes its weights as `SOURCE = WEIGHT`",
                    "e.g. `mix forget = 1, retain = 2`: each source's rows per micro-batch, relative to the "
                    "first source's")
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


# ---- `0 < d < 1`: comparisons do not chain ------------------------------------------

# Tokens inside one comparison operand (parentheses are tracked by depth).
_OPERAND = {"NAME", "NUMBER", "STRING", "ADD_OP", "MUL_OP", "MINUS", "CIRCUMFLEX", "TRUE", "FALSE"}
_INTERVAL = {">": "(", ">=": "[", "<": ")", "<=": "]"}


def _operand_start(before: list) -> tuple[int, int] | None:
    """Scanning back from a second comparison operator: (index of the first operator at the same
    depth, index of the token that ends what comes before the chain, or -1), or None if there
    is no first operator."""
    depth, first = 0, None
    for i in range(len(before) - 1, -1, -1):
        t = before[i]
        if t.type in ("RPAR", "LPAR"):
            depth += 1 if t.type == "RPAR" else -1
            if depth >= 0:
                continue
        elif depth > 0 or t.type in _OPERAND:
            continue
        elif t.type == "COMPARE" and first is None:
            first = i
            continue
        return (first, i) if first is not None else None
    return (first, -1) if first is not None else None


def _operand_after(text: str, tok: Token, lex) -> str:
    """The operand after the second operator, on its line (empty if it cannot be told)."""
    end, depth = None, 0
    try:
        for t in lex(text[tok.end_pos:]):
            depth += (t.type == "LPAR") - (t.type == "RPAR")
            if depth < 0 or t.line != 1 or not (t.type in _OPERAND or t.type in ("LPAR", "RPAR")):
                break
            end = t.end_pos
    except LarkError:
        pass
    return text[tok.end_pos:tok.end_pos + end].strip() if end else ""


def _chained_comparison(exc, text: str, path: str, lex) -> Diagnostic | None:
    """`0 < d < 1` reads as a comparison followed by a stray `<`: say that comparisons do not
    chain, and how to write it (an `and`, or for a parameter an interval)."""
    tok = exc.token
    try:
        before = list(lex(text[:tok.start_pos]))
    except LarkError:
        return None
    found = _operand_start(before)
    if found is None:
        return None
    i, k = found
    first = before[i]
    start = before[k].end_pos if k >= 0 else 0
    a, b = text[start:first.start_pos].strip(), text[first.end_pos:tok.start_pos].strip()
    c = _operand_after(text, tok, lex)
    span = Span(path, tok.line, tok.column, tok.end_line, tok.end_column)
    other = Label(Span(path, first.line, first.column, first.end_line, first.end_column), "after this one", False)
    parts_ok = all(0 < len(x) <= 40 and "\n" not in x for x in (a, b, c))
    if k >= 2 and before[k].type == "EQUAL" and before[k - 2].type == "PARAM":
        lo, hi = str(first), str(tok)
        fix = (f"`param {before[k - 1]} = {a} in {_INTERVAL[lo]}{b}, {c}{_INTERVAL[hi]}`"
               if parts_ok and lo[0] == ">" and hi[0] == "<" else "an interval, e.g. `in [0, 1)`")
        return error("E0102", "a parameter takes one constraint", span, "a second comparison", extra=(other,),
                     help=f"bound it on both sides with {fix}")
    fix = f"`{a} {first} {b} and {b} {tok} {c}`" if parts_ok else "`a < b and b < c`"
    return error("E0102", "comparisons do not chain", span, "a second comparison", extra=(other,),
                 help=f"`a < b < c` is not a range test in ptdsl; write {fix}")


def diagnose(exc: LarkError, text: str, path: str, lex=None) -> Diagnostic:
    """The diagnostic for a lark error; `lex` (the parser's lexer) lets it look at the tokens
    around the error."""
    if lex is not None and isinstance(exc, UnexpectedToken) and exc.token.type == "COMPARE":
        chained = _chained_comparison(exc, text, path, lex)
        if chained is not None:
            return chained
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
