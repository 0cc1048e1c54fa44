"""Text → AST. Lark parses with the one grammar; parse errors become diagnostics
in human words (E01xx), with a table of common mistakes mapped to their own help."""
from __future__ import annotations

from functools import lru_cache

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

from ptdsl.diagnostics import Diagnostic, Span, error
from ptdsl.resources import grammar_path
from ptdsl.syntax import ast
from ptdsl.syntax.limits import check_limits, number_value


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_path().read_text(), parser="lalr", propagate_positions=True,
                maybe_placeholders=False)


class ParseFailed(Exception):
    """A syntax error (one diagnostic), or the limits a parsed spec breaks (one or more)."""

    def __init__(self, diagnostics: Diagnostic | list[Diagnostic]):
        self.diagnostics = [diagnostics] if isinstance(diagnostics, Diagnostic) else list(diagnostics)
        self.diagnostic = self.diagnostics[0]


BOM = "\ufeff"


def parse(text: str, path: str) -> ast.SpecFile:
    """Parse spec text; raise ParseFailed on a syntax error or a broken limit (syntax/limits.py).
    A leading UTF-8 byte-order mark is dropped (editors on Windows write one)."""
    text = text.removeprefix(BOM)
    try:
        tree = _parser().parse(text)
    except LarkError as exc:  # every lark failure becomes a diagnostic
        raise ParseFailed(_diagnose(exc, text, path)) from None
    broken = check_limits(tree, path)  # before the (recursive) conversion below
    if broken:
        raise ParseFailed(broken)
    return ast.SpecFile(path, text, tuple(_ToAst(path).transform(tree).children))


# ---- tree → AST ---------------------------------------------------------------


def _span(path: str, meta_or_token) -> Span:
    m = meta_or_token
    return Span(path, m.line, m.column, m.end_line, m.end_column)


def _unquote(token: Token) -> str:
    return str(token)[1:-1]


@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _s(self, meta) -> Span:
        return _span(self.path, meta)

    # statements
    def method_decl(self, meta, ch):
        name = str(ch[0])
        ext = next((c for c in ch[1:] if isinstance(c, tuple)), None)
        title = next((_unquote(c) for c in ch[1:] if isinstance(c, Token) and c.type == "STRING"), None)
        return ast.MethodDecl(name, ext[0] if ext else None, ext[1] if ext else None, title, self._s(meta))

    def extends_clause(self, meta, ch):
        return (str(ch[0]), _span(self.path, ch[0]))

    def paper_decl(self, meta, ch):
        return ast.PaperDecl(_unquote(ch[0]), self._s(meta))

    def family_decl(self, meta, ch):
        return ast.FamilyDecl(_unquote(ch[0]), self._s(meta))

    def stability_decl(self, meta, ch):
        return ast.StabilityDecl(str(ch[0]), self._s(meta))

    def data_decl(self, meta, ch):
        items = ch[1] if len(ch) > 1 else ()
        fields = tuple(i for i in items if isinstance(i, ast.Name))
        options = tuple(i for i in items if isinstance(i, ast.KwArg))
        return ast.DataDecl(str(ch[0]), fields, self._s(meta), options)

    def field_list(self, meta, ch):
        return tuple(ch)

    def data_field(self, meta, ch):
        return ast.Name(str(ch[0]), _span(self.path, ch[0]))

    def data_option(self, meta, ch):
        value = ast.Number(number_value(str(ch[1])), _span(self.path, ch[1]))
        return ast.KwArg(str(ch[0]), _span(self.path, ch[0]), value, self._s(meta))

    def policy_decl(self, meta, ch):
        return ast.PolicyDecl(self._s(meta))

    def role_decl(self, meta, ch):
        return ast.RoleDecl(str(ch[0]), ch[1], self._s(meta))

    def reward_decl(self, meta, ch):
        return ast.RewardDecl(str(ch[0]), ch[1], self._s(meta))

    def rollout_decl(self, meta, ch):
        return ast.RolloutDecl(str(ch[0]), ch[1], self._s(meta))

    def param_decl(self, meta, ch):
        name, default, rest = str(ch[0]), ch[1], ch[2:]
        constraint = next((c for c in rest if isinstance(c, (ast.Bound, ast.Interval))), None)
        doc = next((_unquote(c) for c in rest if isinstance(c, Token) and c.type == "STRING"), None)
        return ast.ParamDecl(name, default, constraint, doc, self._s(meta))

    def bound(self, meta, ch):
        return ast.Bound(str(ch[0]), ch[1], self._s(meta))

    def interval(self, meta, ch):
        lo_br, lo, hi, hi_br = ch
        return ast.Interval(lo, hi, lo_br == "[", hi_br == "]", self._s(meta))

    def lbrack(self, meta, ch):
        return str(ch[0])

    rbrack = lbrack

    def let_decl(self, meta, ch):
        return ast.LetDecl(str(ch[0]), ch[1], self._s(meta))

    def loss_decl(self, meta, ch):
        return ast.LossDecl(ch[0], self._s(meta))

    def metric_decl(self, meta, ch):
        return ast.MetricDecl(str(ch[0]), ch[1], self._s(meta))

    # expressions
    def number(self, meta, ch):
        return ast.Number(number_value(str(ch[0])), self._s(meta))

    def string(self, meta, ch):
        return ast.String(_unquote(ch[0]), self._s(meta))

    def true(self, meta, ch):
        return ast.Bool(True, self._s(meta))

    def false(self, meta, ch):
        return ast.Bool(False, self._s(meta))

    def name(self, meta, ch):
        return ast.Name(str(ch[0]), self._s(meta))

    def call(self, meta, ch):
        func, args = ch[0], ch[1:]
        pos = tuple(a for a in args if not isinstance(a, ast.KwArg))
        kws = tuple(a for a in args if isinstance(a, ast.KwArg))
        return ast.Call(str(func), _span(self.path, func), pos, kws, self._s(meta))

    def kwarg(self, meta, ch):
        return ast.KwArg(str(ch[0]), _span(self.path, ch[0]), ch[1], self._s(meta))

    def binary(self, meta, ch):
        return ast.Binary(str(ch[1]), ch[0], ch[2], self._s(meta))

    def compare(self, meta, ch):
        return ast.Binary(str(ch[1]), ch[0], ch[2], self._s(meta))

    def pow(self, meta, ch):
        return ast.Binary("^", ch[0], ch[1], self._s(meta))

    def and_op(self, meta, ch):
        return ast.Binary("and", ch[0], ch[1], self._s(meta))

    def or_op(self, meta, ch):
        return ast.Binary("or", ch[0], ch[1], self._s(meta))

    def neg(self, meta, ch):
        return ast.Unary("-", ch[0], self._s(meta))

    def not_op(self, meta, ch):
        return ast.Unary("not", ch[0], self._s(meta))


# ---- parse errors in human words ---------------------------------------------

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
    import re
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


def _diagnose(exc: LarkError, text: str, path: str) -> Diagnostic:
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
            import re
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
