"""Text → AST. Lark parses with the one grammar; parse errors become diagnostics
in human words (E01xx, syntax/mistakes.py), and the limits later stages rely on are
checked before the tree is converted (syntax/limits.py)."""
from __future__ import annotations

from functools import lru_cache

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError

from ptdsl.diagnostics import Diagnostic, Span
from ptdsl.resources import grammar_path
from ptdsl.syntax import ast
from ptdsl.syntax.limits import check_limits, number_value
from ptdsl.syntax.mistakes import diagnose


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
    return _parse(text.removeprefix(BOM), path)


@lru_cache(maxsize=256)  # the AST is immutable; library parents are parsed again by every child
def _parse(text: str, path: str) -> ast.SpecFile:
    try:
        tree = _parser().parse(text)
    except LarkError as exc:  # every lark failure becomes a diagnostic
        raise ParseFailed(diagnose(exc, text, path, _parser().lex)) from None
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

    def requires_decl(self, meta, ch):
        package = ast.Name(str(ch[0]), _span(self.path, ch[0]))
        return ast.RequiresDecl(package, str(ch[1]), str(ch[2]), _span(self.path, ch[2]), self._s(meta))

    def data_decl(self, meta, ch):
        name = ch.pop(0) if isinstance(ch[0], ast.Name) else None  # `data NAME: KIND`
        items = ch[1] if len(ch) > 1 else ()
        fields = tuple(i for i in items if isinstance(i, ast.Name))
        options = tuple(i for i in items if isinstance(i, ast.KwArg) and isinstance(i.value, ast.Number))
        renames = tuple(i for i in items if isinstance(i, ast.KwArg) and isinstance(i.value, ast.Name))
        return ast.DataDecl(str(ch[0]), fields, self._s(meta), options, name, renames)

    def source_name(self, meta, ch):
        return ast.Name(str(ch[0]), _span(self.path, ch[0]))

    def field_list(self, meta, ch):
        return tuple(ch)

    def data_field(self, meta, ch):
        return ast.Name(str(ch[0]), _span(self.path, ch[0]))

    def data_option(self, meta, ch):
        value = ast.Number(number_value(str(ch[1])), _span(self.path, ch[1]))
        return ast.KwArg(str(ch[0]), _span(self.path, ch[0]), value, self._s(meta))

    def data_rename(self, meta, ch):
        value = ast.Name(str(ch[1]), _span(self.path, ch[1]))
        return ast.KwArg(str(ch[0]), _span(self.path, ch[0]), value, self._s(meta))

    def policy_decl(self, meta, ch):
        return ast.PolicyDecl(self._s(meta))

    def role_decl(self, meta, ch):
        return ast.RoleDecl(str(ch[0]), ch[1], self._s(meta))

    def reward_decl(self, meta, ch):
        return ast.RewardDecl(str(ch[0]), ch[1], self._s(meta))

    def rollout_decl(self, meta, ch):
        return ast.RolloutDecl(str(ch[0]), ch[1], self._s(meta))

    def update_decl(self, meta, ch):
        return ast.UpdateDecl(self._assignments(ch), self._s(meta))

    def mix_decl(self, meta, ch):
        return ast.MixDecl(self._assignments(ch), self._s(meta))

    def _assignments(self, ch) -> tuple[ast.KwArg, ...]:
        options = []
        for name, value in zip(ch[::2], ch[1::2]):  # NAME "=" expr, repeated
            start = _span(self.path, name)
            span = Span(self.path, start.line, start.col, value.span.end_line, value.span.end_col)
            options.append(ast.KwArg(str(name), start, value, span))
        return tuple(options)

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
