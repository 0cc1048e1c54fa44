"""Group ops on ranked lists of varying length (K per example, ragged rows): the generated
code (codegen/ragged.py) against the interpreter, which loops over each list's own rows,
and against the fixed-size kernels when every list has the same K. Every grouped op is
read, including pair values that do not vanish at (i, i), so a padded cell that leaks
into any sum, statistic, rank or pair changes the loss or a gradient."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import ptdsl
from ptdsl.codegen import kernels as K
from ptdsl.equivalence.strategies import inputs as input_strategy, trainable_names
from tests.helpers import assert_close, loss_and_grads

SPEC = """method ragged_ops "every group op on ranked lists"
data ranked(margin, size = 4)
policy
let p = mean_logp(policy, responses)
let centred = (p - group_mean(p)) / (group_std(p) + 1)
let spread = group_max(p) - group_min(p) + group_logsumexp(p) + group_suffix_logsumexp(p)
let pairs = sum_pairs(other(p) * (1 + other(rating))) + sum_pairs(where(rating > other(rating), p - other(p), 0))
let ranked = p / (1 + group_rank(p))
let per_row = centred + spread + pairs + ranked + margin * rating + group_sum(p)
loss mean(sum_group(per_row)) + mean(mean_group(square(p))) + mean(per_row)
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("ragged") / "ragged_ops.ptdsl"
    path.write_text(SPEC)
    return ptdsl.compile(str(path))


@settings(max_examples=60)
@given(data=st.data())
def test_generated_code_equals_the_interpreter_on_ragged_lists(compiled, data):
    x = data.draw(input_strategy([compiled.graph]))
    assert "sizes(responses)" in x
    names = trainable_names([compiled.graph])
    got, got_g = loss_and_grads(lambda i: compiled.loss(i)[0], x, names)
    want, want_g = loss_and_grads(lambda i: compiled.interpret(i)[0], x, names)
    assert torch.isfinite(got)
    assert_close(got, want, what="codegen vs interpreter")
    for n in names:  # (group_std of a list of equal values has no finite gradient, in either)
        assert_close(got_g[n], want_g[n], what=f"grad {n}")


OPS = ["group_mean", "group_sum", "group_std", "group_max", "group_min", "group_logsumexp",
       "group_suffix_logsumexp", "group_rank", "sum_group", "mean_group"]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("k", [2, 3])
def test_equal_sizes_give_the_fixed_size_kernels(op, k):
    x = torch.randn(3 * k, dtype=torch.float64)
    sizes = torch.full((3,), k)
    assert_close(getattr(K, op)(x, sizes), getattr(K, op)(x, k), what=op)


def test_pairs_and_expansion_with_equal_sizes_match_the_fixed_kernels():
    x = torch.randn(6, dtype=torch.float64)
    sizes = torch.tensor([3, 3])
    assert_close(K.pair_other(x, sizes), K.pair_other(x, 3), what="pair_other")
    pairs = K.pair_other(x, 3) * 2
    assert_close(K.sum_pairs(pairs, sizes), K.sum_pairs(pairs, 3), what="sum_pairs")
    assert_close(K.expand_rows(x[:2], sizes), K.expand_rows(x[:2], 3), what="expand_rows")


def test_padded_cells_reach_no_value_or_gradient():
    """Lists of 2 and 3: the shorter list's values and gradients are those it has alone."""
    x = torch.tensor([0.5, -1.0, 2.0, 0.25, -3.0], dtype=torch.float64, requires_grad=True)
    sizes = torch.tensor([2, 3])
    for op in OPS[:-3] + ["sum_group"]:
        out = getattr(K, op)(x, sizes)
        alone = getattr(K, op)(x[:2], 2)
        assert_close(out[:alone.shape[0]] if op != "sum_group" else out[:1], alone if op != "sum_group"
                     else alone, what=op)
        if out.requires_grad:
            (g,) = torch.autograd.grad(out[:2 if op != "sum_group" else 1].sum(), x)
            assert g[2:].abs().sum() == 0 and torch.isfinite(g).all(), op
    other = K.pair_other(x, sizes)
    assert other.shape == (5, 3) and other[0].tolist() == [0.5, -1.0, 0.5]  # past its list: the row's own value
    assert K.sum_pairs(other, sizes)[0].item() == -0.5


@pytest.mark.parametrize("sizes", [[2], [3, 2]])
def test_a_zero_spread_stops_even_a_nan_gradient_as_torch_std_does(sizes):
    """0 / group_std of equal values is NaN, and so is the gradient flowing into the std; torch.std
    (the interpreter, the fixed-size kernel) gives a zero spread gradient 0 whatever flows in, and
    the ragged kernel must too (a CI fuzz finding: NaN gradients on one side only)."""
    x = torch.full((sum(sizes),), -1.0, dtype=torch.float64, requires_grad=True)
    std = K.group_std(x, torch.tensor(sizes))
    (torch.zeros(()) / std).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    y = x.detach().clone().requires_grad_(True)
    torch.zeros(()).div(y.std()).backward()
    assert torch.equal(y.grad, torch.zeros_like(y))  # the reference behaviour being matched


def test_a_group_of_one_keeps_a_nan_std_and_gradient():
    x = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    std = K.group_std(x, torch.tensor([1, 2]))
    assert torch.isnan(std[0]) and torch.isfinite(std[1:]).all()
    std[0].backward()
    assert torch.isnan(x.grad[0])
