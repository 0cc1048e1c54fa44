"""Constant folding computes what torch computes (float64), never hangs on huge
numbers, and reports a finite computation that overflows (E0404) at its span."""
import math

import pytest
import torch

import ptdsl
from ptdsl.passes.fold import FOLD, _fold_one
from ptdsl.ir.consteval import Overflow

VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-300, -700.0, 700.0, 1e308, math.inf, -math.inf, math.nan]
UNARY = {"neg": torch.neg, "exp": torch.exp, "log": torch.log, "log1p": torch.log1p, "expm1": torch.expm1,
         "sigmoid": torch.sigmoid, "logsigmoid": torch.nn.functional.logsigmoid,
         "softplus": torch.nn.functional.softplus, "relu": torch.relu, "abs": torch.abs, "sqrt": torch.sqrt,
         "square": torch.square, "tanh": torch.tanh, "sign": torch.sign}
BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
          "minimum": torch.minimum, "maximum": torch.maximum}


def _torch(fn, *xs):
    return fn(*(torch.tensor(x, dtype=torch.float64) for x in xs)).item()


def _same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)


def _check(op, fn, *xs):
    want = _torch(fn, *xs)
    try:
        got = _fold_one(op, list(xs))
    except Overflow:
        assert all(math.isfinite(x) for x in xs) and math.isinf(want), (op, xs, want)
        return
    if got is None:  # left to torch at run time (a division by zero)
        return
    assert _same(got, want), (op, xs, got, want)


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_folds_agree_with_torch(op):
    for x in VALUES:
        _check(op, UNARY[op], x)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_folds_agree_with_torch(op):
    for a in VALUES:
        for b in VALUES:
            _check(op, BINARY[op], a, b)


def test_every_arithmetic_fold_is_checked_here():
    numeric = {op for op in FOLD if op not in ("clip", "where", "to_real", "stopgrad", "not", "and", "or",
                                               "lt", "le", "gt", "ge", "eq", "ne")}
    assert numeric == set(UNARY) | set(BINARY)


def test_fold_never_computes_big_integers():
    assert math.isnan(_fold_one("pow", [-1, 0.5]))  # (0-1)^0.5: what torch computes
    with pytest.raises(Overflow):
        _fold_one("pow", [9, 99999999])
    with pytest.raises(Overflow):
        _fold_one("pow", [10, 400])


# ---- through the compiler ----------------------------------------------------------

def _spec(tmp_path, let):
    f = tmp_path / "f.ptdsl"
    f.write_text('method f "fold"\ndata sft\npolicy\nlet x = logp(policy, completion)\n'
                 f"let q = {let}\nloss -mean(x + q)\n")
    return str(f)


@pytest.mark.parametrize("let,col", [("x * 9 ^ 99999999", 13), ("x * 10^400", 13), ("2^1024 + x", 9),
                                     ("x * 2^2^2^2^2", 13), ("exp(1000) * x", 9), ("x * (1e300 * 1e300)", 14)])
def test_overflow_in_the_loss_is_e0404(tmp_path, let, col):
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(_spec(tmp_path, let))
    d = info.value.diagnostics[0]
    assert d.code == "E0404" and (d.span.line, d.span.col) == (5, col), str(info.value)


def test_folded_constants_are_floats_or_bools(tmp_path):
    c = ptdsl.compile(_spec(tmp_path, "x * (2 ^ 10 + (0 - 1) ^ 0.5) + log(0) * 0 + where(1 < 2, 3, 4)"))
    for n in c.graph.nodes:
        d = c.graph.nodes[n]
        if d["op"] == "const":
            assert type(d["attrs"]["value"]) in (float, bool, int)
            if type(d["attrs"]["value"]) is int:
                assert abs(d["attrs"]["value"]) <= 2 ** 53
    consts = [c.graph.nodes[n]["attrs"]["value"] for n in c.graph.nodes if c.graph.nodes[n]["op"] == "const"]
    assert any(isinstance(v, float) and math.isnan(v) for v in consts)  # (0-1)^0.5 folded as torch does
