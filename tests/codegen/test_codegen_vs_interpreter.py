"""Generated code, the interpreter on the optimised IR and the interpreter on the
unoptimised IR agree (value and gradient) on random inputs, for every method."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import ptdsl
from ptdsl.equivalence.strategies import inputs as input_strategy, trainable_names
from ptdsl import library
from tests.helpers import assert_close, loss_and_grads

METHODS = library.all_names()


@pytest.mark.parametrize("name", METHODS)
@settings(max_examples=15)  # × every library method; the per-method reference tests search harder
@given(data=st.data())
def test_three_evaluations_agree(name, data):
    c = ptdsl.compile(name)
    graphs = [c.graph, c.unoptimised_graph]
    x = data.draw(input_strategy(graphs))
    names = trainable_names([c.unoptimised_graph])
    opt_names = [n for n in names if n in {i.name for i in c.inputs}]
    gen_loss, gen_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    opt_loss, opt_g = loss_and_grads(lambda i: c.interpret(i)[0], x, names)
    raw_loss, raw_g = loss_and_grads(lambda i: c.interpret(i, optimised=False)[0], x, names)
    assert_close(gen_loss, opt_loss, what="codegen vs interpreter")
    for n in names:
        assert_close(gen_g[n], opt_g[n], what=f"grad {n}: codegen vs interpreter")
    # Stable-math rewrites may turn a non-finite naive value finite (that is their job);
    # wherever the unoptimised graph is finite, the optimised one must agree with it.
    if torch.isfinite(raw_loss):
        assert_close(opt_loss, raw_loss, what="optimised vs unoptimised")
        for n in names:
            if torch.isfinite(raw_g[n]).all():
                assert_close(opt_g[n], raw_g[n], what=f"grad {n}: optimised vs unoptimised")
    assert opt_names  # every method trains something
    gen_m, opt_m = c.loss(x)[1], c.interpret(x)[1]
    for k in gen_m:
        assert_close(gen_m[k], opt_m[k], what=f"metric {k}")
