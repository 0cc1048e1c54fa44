"""The documented limits (syntax/limits.py, syntax/resolve.py) hold exactly: a spec at
a limit compiles under Python's default recursion limit, one beyond it gets its
diagnostic; chains of definitions have no limit (issue 9, item 2)."""
import subprocess
import sys

import pytest

import ptdsl
from ptdsl.syntax.limits import MAX_DEPTH

HEAD = 'method deep "deep"\ndata sft\npolicy\n'
X = "logp(policy, completion)"  # one level: a call


def _let_at_depth(shape: str, depth: int) -> str:
    """A `let q = …` whose expression is exactly `depth` levels deep."""
    k = depth - 1  # the query itself is one level
    return {
        "neg": "-" * k + X,
        "calls": "tanh(" * k + X + ")" * k,
        "sum": X + " + 1" * k,
        "power": "1 ^ " * k + X,
        "product": "(" * k + X + "".join(" * 1)" for _ in range(k)),
        "kwarg": "token_quantile(logprobs(policy, completion), q = " + "-" * (depth - 2) + "0.5)",
        "where": "where(1 < 2, " * k + X + ", 0)" * k,
    }[shape]


SHAPES = ["neg", "calls", "sum", "power", "product", "kwarg", "where"]


def _write(tmp_path, text, name="deep.ptdsl"):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def test_recursion_limit_is_pythons_default():
    assert sys.getrecursionlimit() == 1000  # the tests below rely on it


@pytest.mark.parametrize("shape", SHAPES)
def test_expression_at_the_depth_limit_compiles(tmp_path, shape):
    loss = "loss -mean(logp(policy, completion))\n" if shape == "kwarg" else "loss -mean(q)\n"
    path = _write(tmp_path, HEAD + f"let q = {_let_at_depth(shape, MAX_DEPTH)}\n" + loss)
    c = ptdsl.compile(path)
    assert c.source


@pytest.mark.parametrize("shape", SHAPES)
def test_expression_beyond_the_depth_limit_is_e0104(tmp_path, shape):
    path = _write(tmp_path, HEAD + f"let q = {_let_at_depth(shape, MAX_DEPTH + 1)}\nloss -mean(q)\n")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(path)
    (d,) = info.value.diagnostics
    assert d.code == "E0104" and d.span.line == 4, str(info.value)


@pytest.mark.parametrize("text", ["-" * 500 + "1", "exp(" * 400 + "1" + ")" * 400, "+".join(["1"] * 488),
                                  "not " * 3000 + "true", "1" + " ^ 1" * 10_000])
def test_findings_from_the_issue_give_e0104(tmp_path, text):
    path = _write(tmp_path, HEAD + f"let a = {text}\nloss -mean(logp(policy, completion))\n")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(path)
    assert [d.code for d in info.value.diagnostics] == ["E0104"]


def test_parentheses_alone_add_no_level(tmp_path):
    path = _write(tmp_path, HEAD + "let q = " + "(" * 5000 + X + ")" * 5000 + "\nloss -mean(q)\n")
    assert ptdsl.compile(path).source


def test_at_the_limit_through_the_cli(tmp_path):
    """A fresh interpreter, default recursion limit: `ptdsl check` accepts depth 100."""
    path = _write(tmp_path, HEAD + f"let q = {_let_at_depth('calls', MAX_DEPTH)}\nloss -mean(q)\n")
    proc = subprocess.run([sys.executable, "-m", "ptdsl", "check", path], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---- chains of definitions: no limit, no recursion ------------------------------------

@pytest.mark.parametrize("forward", [True, False])
def test_long_let_chains_compile(tmp_path, forward):
    n = 600
    if forward:
        lets = [f"let a0 = {X}"] + [f"let a{i} = a{i - 1} + 1" for i in range(1, n)]
    else:  # each let uses one defined after it
        lets = [f"let a{i} = a{i + 1} + 1" for i in range(n - 1)] + [f"let a{n - 1} = {X}"]
    last = f"a{n - 1}" if forward else "a0"
    c = ptdsl.compile(_write(tmp_path, HEAD + "\n".join(lets) + f"\nloss -mean({last})\n"))
    assert c.source


def test_long_let_cycle_is_e0211(tmp_path):
    n = 600
    lets = [f"let a{i} = a{i + 1} + 1" for i in range(n - 1)] + [f"let a{n - 1} = a0 * {X}"]
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(_write(tmp_path, HEAD + "\n".join(lets) + "\nloss -mean(a0)\n"))
    (d,) = info.value.diagnostics
    assert d.code == "E0211" and d.message.startswith("`a0` is defined in terms of itself (a0 → a1 → ")
    assert d.span.line == 4 + n - 1


def test_long_param_chain_and_cycle(tmp_path):
    n = 600
    params = ["param p0 = 1"] + [f"param p{i} = p{i - 1} + 1" for i in range(1, n)]
    c = ptdsl.compile(_write(tmp_path, HEAD + "\n".join(params) + f"\nloss -mean({X}) * p{n - 1}\n"))
    assert c.params[f"p{n - 1}"] == n and type(c.params[f"p{n - 1}"]) is int
    params = [f"param p{i} = p{i + 1} + 1" for i in range(n - 1)] + [f"param p{n - 1} = p0"]
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(_write(tmp_path, HEAD + "\n".join(params) + f"\nloss -mean({X})\n", "cycle.ptdsl"))
    (d,) = info.value.diagnostics
    assert d.code == "E0403" and "defined in terms of itself (p0 → p1 → " in d.labels[0].text


def test_doubling_let_chain_is_linear(tmp_path):
    """`let b = a + a` chains above a batch mean: the split analysis (passes/batching.py)
    walked every path, 2^length steps."""
    lets = [f"let a0 = mean({X})"] + [f"let a{i} = a{i - 1} + a{i - 1}" for i in range(1, 80)]
    c = ptdsl.compile(_write(tmp_path, HEAD + "\n".join(lets) + "\nloss -a79\n"))
    assert c.source


# ---- number literals ---------------------------------------------------------------

@pytest.mark.parametrize("literal", ["1e400", "9" * 5000, "1" + "0" * 309, "2.5e308"])
def test_literals_beyond_float_range_are_e0105(tmp_path, literal):
    path = _write(tmp_path, HEAD + f"let q = {X} * {literal}\nloss -mean(q)\n")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(path)
    (d,) = info.value.diagnostics
    assert d.code == "E0105" and (d.span.line, d.span.col) == (4, 36), str(info.value)


def test_every_bad_literal_is_reported(tmp_path):
    path = _write(tmp_path, HEAD + "param a = 1e400\nparam b = 2e400\nloss -mean(logp(policy, completion))\n")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(path)
    assert [d.span.line for d in info.value.diagnostics] == [4, 5]


def test_literal_in_a_child_of_a_library_method(tmp_path):
    path = _write(tmp_path, 'method s2 extends slic "child"\nparam delta = 1e400\n')
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(path)
    assert info.value.diagnostics[0].code == "E0105"


@pytest.mark.parametrize("literal,value", [("123456789012345", 123456789012345), ("1234567890123456", 1234567890123456.0),
                                           ("1e-400", 0.0), ("8", 8)])
def test_literal_values(tmp_path, literal, value):
    path = _write(tmp_path, HEAD + f"param a = {literal}\nloss -mean({X})\n")
    got = ptdsl.compile(path).params["a"]
    assert got == value and type(got) is type(value)
