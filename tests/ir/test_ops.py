"""Every op has a row in every per-op table (level rule, emitter, interpreter), and
every builtin lowers to a real op."""
from ptdsl.codegen.interpret import OPS_INTERPRETED
from ptdsl.codegen.python import EMIT
from ptdsl.ir import builtins
from ptdsl.ir.ops import ELEMENTWISE, MASKED, OPS
from ptdsl.passes.fold import FOLD
from ptdsl.passes.levels import _Checker


def test_every_op_in_every_table():
    for name, op in OPS.items():
        assert name in EMIT, f"{name}: no emitter row"
        assert name in OPS_INTERPRETED, f"{name}: no interpreter row"
        assert hasattr(_Checker, f"rule_{op.rule}"), f"{name}: no level rule `{op.rule}`"
        assert all(i < max(op.arity, 1) for i in op.diff), f"{name}: diff index beyond arity"


def test_elementwise_ops_fold():
    assert ELEMENTWISE - {"logaddexp", "log1mexp"} <= set(FOLD)


def test_builtins_lower_to_ops():
    for b, op in builtins.OPS.items():
        assert op in OPS, b
    for _, (op, _, _) in builtins.SCANS.items():
        assert op in OPS
    assert MASKED <= set(OPS)
