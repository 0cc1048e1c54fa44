"""What makes generated loss source safe to execute.

The generated loss is `exec`'d, so it is code, and two rules keep user text out
of it:
1. `comment_text` is the one way user-derived text (spec paths, spec lines in
   comments) enters generated source: everything that is not printable — newlines,
   carriage returns, NUL, other control characters, Unicode line separators — is
   written as an escape, so the text stays inside its one-line comment.
2. `check_source` parses the module with `ast` before it runs and accepts exactly
   the shapes codegen emits: one function `loss_fn(inputs, dt, norm, state)` made of
   single-assignment statements and a return, whose expressions call only
   allowlisted functions of torch, torch.nn.functional (F) and ptdsl's kernels (K),
   and read only those three names and the function's own locals. Anything else —
   an import, a bare call, a dunder, a lambda, a second statement — is refused.
Both hold even if a bug elsewhere put user text where it should not be.
"""
from __future__ import annotations

import ast

# torch.* and F.* attributes the op templates use (codegen/python.py EMIT), nothing more.
TORCH = frozenset({
    "exp", "log", "log1p", "expm1", "sigmoid", "relu", "abs", "sqrt", "square", "tanh", "sign", "pow",
    "minimum", "maximum", "logaddexp", "clamp", "where", "logical_and", "logical_or", "logical_not",
    "softmax", "log_softmax", "sort", "repeat_interleave", "tensor", "inf", "nan",
})
FUNCTIONAL = frozenset({"logsigmoid", "softplus"})
# methods called on tensors (and `norm.get`), and `.values` of a sort result
METHODS = frozenset({"detach", "to", "sum", "std", "max", "min", "values", "get"})
ARGUMENTS = ("inputs", "dt", "norm", "state")
MODULES = frozenset({"torch", "F", "K"})
KEYWORDS = frozenset({"dtype"})
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
_CMPOPS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)


class UnsafeSource(ValueError):
    """Generated source that does not have the shape codegen emits."""


def comment_text(text: str) -> str:
    """`text` as one printable line: every non-printable character escaped (`\\n`, `\\x00`, `\\u2028`)."""
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (f"\\x{code:02x}" if code < 0x100 else
                                                             f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def kernel_names(kernels) -> frozenset[str]:
    """The K.* names generated code may call: the public functions defined in the kernels module."""
    import inspect
    return frozenset(n for n, f in vars(kernels).items()
                     if inspect.isfunction(f) and f.__module__ == kernels.__name__ and not n.startswith("_"))


def check_source(source: str, kernels: frozenset[str], fn_name: str = "loss_fn") -> None:
    """Raise UnsafeSource unless `source` is one loss function of the allowlisted shape.
    `kernels` are the K.* names that may be called (the public functions of codegen/kernels.py)."""
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        raise UnsafeSource(f"generated source does not parse: {exc.msg} (line {exc.lineno})") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        raise UnsafeSource("generated source must hold exactly one function definition")
    fn = tree.body[0]
    _check_signature(fn, fn_name)
    _Checker(kernels).function(fn)


def _check_signature(fn: ast.FunctionDef, fn_name: str) -> None:
    a = fn.args
    plain = [x.arg for x in a.args]
    if fn.name != fn_name or fn.decorator_list or fn.returns or getattr(fn, "type_params", None):
        raise UnsafeSource(f"expected a plain `def {fn_name}(...)`")
    if plain != list(ARGUMENTS) or a.posonlyargs or a.kwonlyargs or a.vararg or a.kwarg or a.defaults:
        raise UnsafeSource(f"`{fn_name}` must take exactly ({', '.join(ARGUMENTS)})")


class _Checker:
    def __init__(self, kernels: frozenset[str]):
        self.kernels = kernels
        self.locals: set[str] = set(ARGUMENTS)

    def function(self, fn: ast.FunctionDef) -> None:
        *assigns, ret = fn.body or [None]
        for stmt in assigns:
            self.assign(stmt)
        if not isinstance(ret, ast.Return) or not isinstance(ret.value, ast.Tuple) or len(ret.value.elts) != 2:
            raise UnsafeSource("the function must end with `return loss, {metrics}`")
        loss, metrics = ret.value.elts
        self.expr(loss)
        if not isinstance(metrics, ast.Dict) or None in metrics.keys:
            raise UnsafeSource("metrics must be a dict literal")
        for k, v in zip(metrics.keys, metrics.values):
            if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
                raise UnsafeSource("metric names must be string literals")
            self.expr(v)

    def assign(self, stmt) -> None:
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
            raise UnsafeSource(f"line {getattr(stmt, 'lineno', '?')}: only `name = expression` statements")
        self.expr(stmt.value)  # before the target is bound: a value never reads itself
        name = stmt.targets[0].id
        if name in self.locals or name in MODULES or name.startswith("_"):
            raise UnsafeSource(f"line {stmt.lineno}: `{name}` is bound twice or shadows a module")
        self.locals.add(name)

    def expr(self, e) -> None:
        check = getattr(self, f"_{type(e).__name__}", None)
        if check is None:
            raise UnsafeSource(f"line {getattr(e, 'lineno', '?')}: `{type(e).__name__}` is not allowed")
        check(e)

    def _Name(self, e: ast.Name) -> None:
        if not isinstance(e.ctx, ast.Load) or e.id not in self.locals:
            raise UnsafeSource(f"line {e.lineno}: name `{e.id}` is not allowed here")

    def _Constant(self, e: ast.Constant) -> None:
        if not isinstance(e.value, (int, float, str, bool, type(None), type(Ellipsis))):
            raise UnsafeSource(f"line {e.lineno}: constant of type {type(e.value).__name__}")

    def _Attribute(self, e: ast.Attribute) -> None:
        base = e.value
        if isinstance(base, ast.Name) and base.id in MODULES:
            allowed = {"torch": TORCH, "F": FUNCTIONAL, "K": self.kernels}[base.id]
        else:
            allowed = METHODS
            self.expr(base)
        if e.attr not in allowed:
            raise UnsafeSource(f"line {e.lineno}: attribute `{e.attr}` is not allowed")

    def _Call(self, e: ast.Call) -> None:
        if not isinstance(e.func, ast.Attribute):
            raise UnsafeSource(f"line {e.lineno}: only calls of allowlisted functions")
        self.expr(e.func)
        for a in e.args:
            self.expr(a)
        for k in e.keywords:
            if k.arg not in KEYWORDS:
                raise UnsafeSource(f"line {e.lineno}: keyword `{k.arg}` is not allowed")
            self.expr(k.value)

    def _BinOp(self, e: ast.BinOp) -> None:
        if not isinstance(e.op, _BINOPS):
            raise UnsafeSource(f"line {e.lineno}: operator {type(e.op).__name__}")
        self.expr(e.left)
        self.expr(e.right)

    def _UnaryOp(self, e: ast.UnaryOp) -> None:
        if not isinstance(e.op, ast.USub):
            raise UnsafeSource(f"line {e.lineno}: operator {type(e.op).__name__}")
        self.expr(e.operand)

    def _Compare(self, e: ast.Compare) -> None:
        if len(e.ops) != 1 or not isinstance(e.ops[0], _CMPOPS):
            raise UnsafeSource(f"line {e.lineno}: only single comparisons")
        self.expr(e.left)
        self.expr(e.comparators[0])

    def _Subscript(self, e: ast.Subscript) -> None:
        self.expr(e.value)
        self._index(e.slice)

    def _index(self, s) -> None:
        parts = s.elts if isinstance(s, ast.Tuple) else [s]
        for p in parts:
            if isinstance(p, ast.Slice):
                if p.lower or p.upper or p.step:
                    raise UnsafeSource(f"line {p.lineno}: only full slices `:`")
            elif not isinstance(p, ast.Constant) or not isinstance(p.value, (str, type(None), type(Ellipsis))):
                raise UnsafeSource(f"line {getattr(p, 'lineno', '?')}: only `:`, None, ... and string keys index")
