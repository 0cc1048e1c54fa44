"""Spec generators for the fuzz tests (tests/test_fuzz.py), as hypothesis strategies.

  generated()   grammar-aware: a whole spec from the grammar — a data kind, roles, a
                rollout with a reward, params, lets, a loss and metrics — whose expressions
                follow levels (token → per sequence → scalar) over the builtins, so that many
                compile and their loss can be run;
  ast_mutated() a library spec with one subexpression replaced, wrapped (up to past the
                nesting limit) or combined with a generated one, or a child spec that
                extends a library method and overrides one of its definitions;
  mutated()     a library spec with tokens inserted, text deleted or lines swapped;
  random text   st.text().
Numbers are drawn with a bias to the edges: 0, tiny, huge, beyond the float range,
integer literals of thousands of digits, powers that overflow, negative bases.
"""
from __future__ import annotations

from hypothesis import strategies as st

from ptdsl import library
from ptdsl.ir.datakinds import DATA_KINDS
from ptdsl.syntax import ast
from ptdsl.syntax.limits import MAX_DEPTH
from ptdsl.syntax.parse import parse

# ---- drawing ------------------------------------------------------------------------
# Generation calls plain functions with hypothesis's `draw` and draws only integers from
# cached strategies: building a strategy object per choice cost more than compiling the spec.
# Indices shrink towards 0, so a failing spec shrinks towards the first choices.

_INTS: dict[int, st.SearchStrategy] = {}


def below(draw, n: int) -> int:
    """An integer in [0, n)."""
    if n not in _INTS:
        _INTS[n] = st.integers(0, n - 1)
    return draw(_INTS[n])


def pick(draw, seq):
    return seq[below(draw, len(seq))]


# ---- numbers ------------------------------------------------------------------------

PLAIN_NUMBERS = ["0", "1", "2", "0.5", "0.1", "1e-3", "3", "10", "0.0", "8"]
EDGE_NUMBERS = ["1e308", "1.7976931348623157e308", "1e-320", "5e-324", "1e400", "2.5e308",
                "123456789012345678901234567890", "9" * 400, "9" * 5000, "4503599627370497",
                "10 ^ 400", "2 ^ 1024", "2 ^ 1023", "9 ^ 9 ^ 9", "2 ^ 2 ^ 2 ^ 2 ^ 2", "(0 - 1) ^ 0.5",
                "(0 - 8) ^ (1 / 3)", "1 / 0", "0 / 0", "0 ^ (0 - 1)", "log(0)", "exp(1000)", "exp(709)",
                "sqrt(0 - 1)", "1e308 * 10", "(0 - 1e308) - 1e308", "10 ^ 308 * 10"]
_FLOATS = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)


def number(draw, edges: int = 4) -> str:
    """A number's text: an edge case `edges` times in 20, else an ordinary number."""
    k = below(draw, 20)
    if k < edges:
        return pick(draw, EDGE_NUMBERS)
    if k == 19:
        return repr(draw(_FLOATS))
    return str(below(draw, 10 ** 6)) if k == 18 else pick(draw, PLAIN_NUMBERS)


# ---- grammar-aware whole specs ----------------------------------------------------------

UNARY = ["exp", "log", "log1p", "expm1", "sigmoid", "logsigmoid", "softplus", "relu", "abs", "sqrt",
         "square", "tanh", "sign", "stopgrad", "-"]
BINARY = ["+", "-", "*", "/", "^", "min", "max", "logaddexp"]
COMPARE = ["<", "<=", ">", ">=", "==", "!="]
GROUP = ["group_mean", "group_std", "group_sum", "group_max", "group_min", "group_logsumexp", "group_rank",
         "whiten"]


class _Scope:
    """What a generated spec has declared: sets with their row spaces, models, names by level."""

    def __init__(self, kind):
        self.kind = kind
        self.sets = {s: "examples" for s in kind.sets}
        self.models = ["policy"]
        self.grouped: set[str] = set()     # sets whose rows are a rollout's groups
        self.rewards: dict[str, str] = {}  # reward name → the rollout set it scores
        self.params: list[str] = []
        self.seq_lets: dict[str, str] = {}    # let name → its set
        self.token_lets: dict[str, str] = {}
        self.edges = 1  # edge-case numbers in 20 (most generated specs should compile and run)


def _call(f, *args):
    return f"{f}({', '.join(args)})"


def _unary(draw, inner: str) -> str:
    f = pick(draw, UNARY)
    return f"-({inner})" if f == "-" else _call(f, inner)


def _binary(draw, a: str, b: str) -> str:
    op = pick(draw, BINARY)
    return _call(op, a, b) if op.isalpha() else f"({a}) {op} ({b})"


def _scalar(draw, scope) -> str:
    if scope.params and below(draw, 2):
        return pick(draw, scope.params)
    return number(draw, scope.edges)


def _token_expr(draw, scope, s, depth) -> str:
    """A per-token value on set s."""
    choice = below(draw, 6 if depth > 0 else 2)
    if choice == 0:
        model = pick(draw, scope.models + (["old"] if s in scope.grouped or s == "y" else []))
        return _call(pick(draw, ["logprobs", "entropy"]), model, s)
    if choice == 1:
        lets = [n for n, ls in scope.token_lets.items() if ls == s]
        return pick(draw, lets) if lets else _call("logprobs", "policy", s)
    if choice == 2:
        return _unary(draw, _token_expr(draw, scope, s, depth - 1))
    if choice == 3:
        a = _token_expr(draw, scope, s, depth - 1)
        how = below(draw, 3)
        b = (_token_expr(draw, scope, s, depth - 1) if how == 0 else _seq_expr(draw, scope, s, depth - 1)
             if how == 1 else _scalar(draw, scope))
        return _binary(draw, a, b)
    if choice == 4:
        return _call("where", _compare(draw, scope, s, depth - 1, token=True),
                     _token_expr(draw, scope, s, depth - 1), _token_expr(draw, scope, s, depth - 1))
    return _call("clip", _token_expr(draw, scope, s, depth - 1), _scalar(draw, scope), _scalar(draw, scope))


def _seq_expr(draw, scope, s, depth) -> str:
    """A per-sequence value on the rows of set s."""
    choice = below(draw, 9 if depth > 0 else 3)
    if choice == 0:
        return _call(pick(draw, ["logp", "mean_logp"]), pick(draw, scope.models), s)
    if choice == 1:
        lets = [n for n, ls in scope.seq_lets.items() if scope.sets[ls] == scope.sets[s]]
        return pick(draw, lets) if lets else _call("length", s)
    if choice == 2:
        reals = [f for f, dtype in scope.kind.fields if dtype == "real"] if scope.sets[s] == "examples" else []
        rewards = [f"{r}({s})" for r, rs in scope.rewards.items() if rs == s]
        return pick(draw, reals + rewards + [_call("length", s)])
    if choice == 3:
        return _call(pick(draw, ["sum_tokens", "mean_tokens"]), _token_expr(draw, scope, s, depth - 1))
    if choice == 4:
        return _unary(draw, _seq_expr(draw, scope, s, depth - 1))
    if choice in (5, 6):
        a, b = _seq_expr(draw, scope, s, depth - 1), (_seq_expr(draw, scope, s, depth - 1) if below(draw, 2)
                                                       else _scalar(draw, scope))
        return _binary(draw, a, b) if below(draw, 2) else _binary(draw, b, a)
    if choice == 7:
        return _call("where", _compare(draw, scope, s, depth - 1), _seq_expr(draw, scope, s, depth - 1),
                     _seq_expr(draw, scope, s, depth - 1))
    if s in scope.grouped:
        return _call(pick(draw, GROUP), _seq_expr(draw, scope, s, depth - 1))
    return _seq_expr(draw, scope, s, 0)


def _compare(draw, scope, s, depth, token=False) -> str:
    labels = [f for f, dtype in scope.kind.fields if dtype == "bool"] if scope.sets[s] == "examples" else []
    if labels and not token and below(draw, 2):
        return labels[0]
    value = (_token_expr if token else _seq_expr)(draw, scope, s, depth)
    return f"{value} {pick(draw, COMPARE)} {_scalar(draw, scope)}"


def _scalar_of(draw, scope, s, depth) -> str:
    """A scalar: a batch reduction of a per-sequence or per-token value."""
    if below(draw, 4) == 0:
        return _call(pick(draw, ["token_mean", "token_sum"]), _token_expr(draw, scope, s, depth))
    return _call(pick(draw, ["mean", "mean", "sum", "std", "max_rows", "min_rows"]), _seq_expr(draw, scope, s, depth))


def _declarations(draw, scope, lines: list[str]) -> None:
    """Roles, params and (for prompts, or at random) a rollout with its reward."""
    kind = scope.kind
    for role, source, odds in (("reference", "frozen(policy)", 7), ("teacher", 'model("t")', 2)):
        if below(draw, 10) < odds:
            lines.append(f"{role} = {source}")
            scope.models.append(role)
    scope.edges = pick(draw, [0, 0, 1, 4])
    for i in range(below(draw, 4)):
        constraint = pick(draw, ["", "", " >= 0", " >= 0", " > 0", " in [0, 1e9]", " < 1"])
        lines.append(f"param p{i} = {number(draw, scope.edges)}{constraint}")
        scope.params.append(f"p{i}")
    if not kind.sets or below(draw, 4) == 0:
        n = pick(draw, ["1", "2", "4", "2", "p0" if scope.params else "3"])
        options = pick(draw, ["", ", temperature = 0.7", f", temperature = {number(draw, scope.edges)}",
                              ", max_tokens = 16", ", top_p = 0.9"])
        lines += ['reward r = verifier("accuracy")', f"rollout y = sample(policy, n = {n}{options})"]
        scope.sets["y"] = "y" if n != "1" else "examples"
        if n != "1":
            scope.grouped.add("y")
        scope.rewards["r"] = "y"


@st.composite
def generated(draw):
    kind = DATA_KINDS[pick(draw, sorted(DATA_KINDS))]
    scope = _Scope(kind)
    lines = ['method fuzz "generated"', f"data {kind.name}" + ("(size = 2)" if kind.list_rows else ""), "policy"]
    if below(draw, 4) == 0:  # the language version: what is generated here is all 0.1
        lines.insert(1, "requires ptdsl >= 0.1")
    if kind.list_rows:
        scope.sets = {s: kind.list_rows for s in kind.sets}
        scope.grouped |= set(kind.sets)
    _declarations(draw, scope, lines)
    sets = sorted(scope.sets)
    for i in range(below(draw, 5)):
        s = pick(draw, sets)
        if below(draw, 2):
            lines.append(f"let t{i} = {_token_expr(draw, scope, s, 3)}")
            scope.token_lets[f"t{i}"] = s
        else:
            lines.append(f"let q{i} = {_seq_expr(draw, scope, s, 3)}")
            scope.seq_lets[f"q{i}"] = s
    s = pick(draw, sets)
    loss = _scalar_of(draw, scope, s, 4)
    if below(draw, 4) == 0:
        loss = _binary(draw, loss, _scalar(draw, scope))
    if below(draw, 4) > 0:  # a term that trains the policy, so most losses pass the gradient check
        loss = f"{loss} - mean(logp(policy, {s}))"
    lines.append(f"loss {loss}")
    for i in range(below(draw, 3)):
        lines.append(f"metric m{i} = {_scalar_of(draw, scope, pick(draw, sets), 2)}")
    return "\n".join(lines) + "\n"


# ---- mutations of library specs -------------------------------------------------------

LIBRARY = {name: path.read_text() for name, path in library.all_paths().items()}
TEXTS = list(LIBRARY.values())


def _offsets(text: str):
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    return starts


def _subexpressions(spec: ast.SpecFile) -> list:
    """Every expression node of the spec with its span (iteratively)."""
    stack, out = [], []
    for stmt in spec.statements:
        for attr in ("expr", "default", "call", "source"):
            if getattr(stmt, attr, None) is not None:
                stack.append(getattr(stmt, attr))
    while stack:
        e = stack.pop()
        out.append(e)
        if isinstance(e, ast.Unary):
            stack.append(e.operand)
        elif isinstance(e, ast.Binary):
            stack += [e.left, e.right]
        elif isinstance(e, ast.Call):
            stack += list(e.args) + [k.value for k in e.kwargs]
    return out


PARSED = {name: parse(text, f"{name}.ptdsl") for name, text in LIBRARY.items()}
SUBEXPRESSIONS = {name: _subexpressions(spec) for name, spec in PARSED.items()}


def _bounds(text: str, span) -> tuple[int, int]:
    starts = _offsets(text)
    return starts[span.line - 1] + span.col - 1, starts[span.end_line - 1] + span.end_col - 1


def _replacement(draw, old: str, names: list[str]) -> str:
    """`old` replaced by a number or a name, wrapped, combined, or nested around the limit."""
    how = below(draw, 8)
    if how == 0:
        return number(draw)
    if how == 1:
        return f"({old}) {pick(draw, BINARY[:5])} ({number(draw)})"
    if how == 2:
        return f"{pick(draw, UNARY[:-1])}({old})"
    if how == 3:  # nested around the nesting limit
        k = MAX_DEPTH - 5 + below(draw, 11)
        f = pick(draw, ["-", "tanh", "abs"])
        return ("-" * k + f"({old})") if f == "-" else f"{f}(" * k + old + ")" * k
    if how == 4:
        return pick(draw, names) if names else old
    if how == 5:
        return f"where({old} {pick(draw, COMPARE)} {number(draw)}, {old}, {number(draw)})"
    if how == 6:
        return f"{pick(draw, ['mean', 'sum_tokens', 'group_mean', 'length', 'stopgrad'])}({old})"
    return f"{old} {pick(draw, COMPARE)} {number(draw)}"


def _child(draw, name: str, names: list[str]) -> str:
    """A child of library method `name` overriding one of its definitions (or its loss)."""
    kind = pick(draw, ["let", "param", "loss", "metric"])
    targets = [s for s in PARSED[name].statements if type(s).__name__.lower().startswith(kind)]
    target = pick(draw, targets) if targets else None
    body = _replacement(draw, names[0] if names else "1", names)
    line = f"loss {body}" if kind == "loss" else f"{kind} {getattr(target, 'name', 'x')} = {body}"
    parent = pick(draw, [name, name, "fuzz"])  # `fuzz`: the file extends itself
    return f'method fuzz_child extends {parent} "child"\n{line}\n'


@st.composite
def ast_mutated(draw):
    name = pick(draw, sorted(LIBRARY))
    text, subs = LIBRARY[name], SUBEXPRESSIONS[name]
    names = sorted({e.id for e in subs if isinstance(e, ast.Name)})
    if not subs or below(draw, 4) == 0:
        return _child(draw, name, names)
    rounds = 1 + below(draw, 3)
    for i in range(rounds):
        e = pick(draw, subs)
        a, b = _bounds(text, e.span)
        text = text[:a] + _replacement(draw, text[a:b], names) + text[b:]
        if i + 1 < rounds:
            try:  # mutate the new text again where it still parses
                subs = _subexpressions(parse(text, "fuzz.ptdsl"))
            except Exception:
                break
            if not subs:
                break
    return text


TOKENS = ["(", ")", ",", "=", "+", "-", "*", "/", "^", ">", "<", "<=", "==", "in", "[", "let", "loss", "policy",
          "chosen", "logp", "mean", "y", "r", "0", "1e-4", '"', "#", "\n", "not", "and", "where", "extends",
          "dpo", "fuzz", "sample", "n", "old", "stopgrad", "group_std", "mismatched", "param", "metric",
          "1e400", "9" * 4400, "reference", "\ufeff", "\x00", "é", "\t", "method", "(" * 200, "-" * 150, "",
          "requires", "\nrequires ptdsl >= 0.1\n", "\nrequires ptdsl >= 9.9\n", "\nstable\n", "old(policy)"]


@st.composite
def mutated(draw):
    text = pick(draw, TEXTS)
    for _ in range(1 + below(draw, 4)):
        i = below(draw, len(text) + 1)
        how = below(draw, 3)
        if how == 0:
            text = text[:i] + pick(draw, TOKENS) + text[min(len(text), i + below(draw, 13)):]
        elif how == 1:
            text = text[:i] + text[min(len(text), i + 1 + below(draw, 200)):]
        else:
            lines = text.split("\n")
            a, b = below(draw, len(lines)), below(draw, len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text
