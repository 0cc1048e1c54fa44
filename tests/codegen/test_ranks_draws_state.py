"""The ops added for training graphs, generated code against the interpreter and against
hand-computed values: token_rank, row_rank and num_rows (ties, NaN, masked garbage);
`uniform`/`bernoulli` as leaves at their operand's level (and where they cannot be); ema and
running_var against numpy-style formulas over everything seen, both carried in `state`."""
import math

import pytest
import torch

import ptdsl

HEAD = """method ops_{name} "ops"
experimental
data preference
policy
reference = frozen(policy)
let h = logp(policy, chosen) - logp(reference, chosen)
"""


def _compile(tmp_path, name, body):
    p = tmp_path / f"ops_{name}.ptdsl"
    p.write_text(HEAD.format(name=name) + body)
    return ptdsl.compile(str(p))


def _x(c, lp=None, **extra):
    """A fixed batch of 3 pairs (garbage where masked); the reference is half the policy, so
    h = ½·Σ logprobs(policy, chosen)."""
    mask = torch.tensor([[True, True, True, False], [True, True, False, False], [True, False, True, True]])
    if lp is None:
        lp = torch.tensor([[-1.0, -2.0, -1.0, float("nan")], [-0.5, -0.5, 1e30, 7.0], [-3.0, 9.0, -1.0, -2.0]],
                          dtype=torch.float64)
    x = {"mask(chosen)": mask, "logprobs(policy, chosen)": lp, "logprobs(reference, chosen)": lp * 0.5,
         "mask(rejected)": mask, "logprobs(policy, rejected)": lp, "logprobs(reference, rejected)": lp}
    x.update(extra)
    return {k: v for k, v in x.items() if k in {i.name for i in c.inputs}}


def _both(c, x, key):
    got = c.loss(x)[1][key]
    assert torch.equal(got, c.interpret(x)[1][key]) and torch.equal(got, c.interpret(x, optimised=False)[1][key])
    return got


def test_token_rank_ranks_valid_tokens_largest_first_ties_in_order(tmp_path):
    c = _compile(tmp_path, "trank", "loss mean(h)\n"
                                   "metric ranks = sum(sum_tokens(token_rank(logprobs(policy, chosen)) * "
                                   "(10 ^ position(chosen))))\n")
    x = _x(c)
    # row 0: [-1, -2, -1] → ranks [0, 2, 1]; row 1: [-0.5, -0.5] → [0, 1]; row 2: [-3, -1, -2] over
    # columns 0, 2, 3 (column 1 masked, holding 9) → [2, 0, 1]
    ranks = 0 + 2 * 10 + 1 * 100 + (0 + 1 * 10) + (2 + 0 * 10 + 1 * 100)
    assert _both(c, x, "ranks").item() == ranks


def test_token_rank_puts_nan_last(tmp_path):
    c = _compile(tmp_path, "tnan", "loss mean(h)\nmetric ranks = sum(sum_tokens(token_rank(log(logprobs(policy, "
                                   "chosen) + 2)) * (10 ^ position(chosen))))\n")
    x = _x(c)  # log(x + 2): row 0 [0, nan, 0] → [0, 2, 1]; row 1 [log 1.5 ×2] → [0, 1]; row 2 [nan, 0, nan] → [1, 0, 2]
    assert _both(c, x, "ranks").item() == (0 + 20 + 100) + (0 + 10) + (1 + 0 + 200)


def test_row_rank_and_num_rows(tmp_path):
    c = _compile(tmp_path, "rrank", "loss mean(h)\nmetric ranks = sum(row_rank(round_h) * (10 ^ row_rank(round_h)))\n"
                                   "let round_h = sign(h)\nmetric rows = num_rows(h)\n"
                                   "metric first = sum(where(row_rank(sign(h)) == 0, length(chosen), 0))\n")
    x = _x(c)  # h = 0.5·lp summed: row 0 -2, row 1 -0.5, row 2 -3 → sign all -1: ties, ranks 0, 1, 2
    assert _both(c, x, "rows").item() == 3
    assert _both(c, x, "first").item() == 3  # the first row wins the tie (3 tokens)
    assert _both(c, x, "ranks").item() == 0 * 1 + 1 * 10 + 2 * 100


def test_draws_are_leaves_at_their_operands_level(tmp_path):
    c = _compile(tmp_path, "draws", "let a = uniform(mask(chosen))\nlet b = uniform(h)\nlet c0 = uniform(mean(h))\n"
                                   "loss mean(h) + 0 * (token_mean(a) + mean(b) + c0)\n"
                                   "metric coin = mean(bernoulli(0.25, h))\nmetric again = mean(bernoulli(0.25, h))\n")
    draws = {i.name: i.level for i in c.inputs if i.kind == "uniform"}
    site = "ops_draws"  # the unused draws (multiplied by 0) are gone; a let used twice would be one draw
    assert draws == {f"uniform@{site}:11:20": "f32[seq examples]", f"uniform@{site}:12:21": "f32[seq examples]"}
    c2 = _compile(tmp_path, "levels", "let a = uniform(mask(chosen))\nlet b = uniform(h)\nlet c0 = uniform(mean(h))\n"
                                     "loss mean(h * (1 + token_mean(a) + mean(b) + c0))\n")
    levels = {i.name.split(":", 1)[1]: i.level for i in c2.inputs if i.kind == "uniform"}
    assert levels == {"7:9": "f32[token chosen]", "8:9": "f32[seq examples]", "9:10": "f32[]"}
    assert not any(i.trainable for i in c2.inputs if i.kind == "uniform")
    x = _x(c, **{f"uniform@{site}:11:20": torch.tensor([0.1, 0.3, 0.2], dtype=torch.float64),
                 f"uniform@{site}:12:21": torch.tensor([0.9, 0.0, 0.24], dtype=torch.float64)})
    x.update({f"uniform@{site}:7:9": torch.rand(3, 4, dtype=torch.float64),  # what the unoptimised graph reads
              f"uniform@{site}:8:9": torch.rand(3, dtype=torch.float64),
              f"uniform@{site}:9:10": torch.rand((), dtype=torch.float64)})
    assert _both(c, x, "coin").item() == pytest.approx(2 / 3) and _both(c, x, "again").item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("body,code", [
    ("loss mean(h) + 0 * sum_tokens(sum_vocab(uniform(logits(policy, chosen))))\n", "E0304"),
    ("loss mean(h) + uniform(h, h)\n", "E0209"),
    ("loss mean(h) + ema(h)\n", "E0209"),
    ("loss mean(h) + ema(h, decay = 1.5)\n", "E0403"),
    ("loss mean(h) + ema(h, decay = 0.9, init = step)\n", "E0405"),
])
def test_bad_draws_and_statistics(tmp_path, body, code):
    with pytest.raises(ptdsl.SpecError) as info:
        _compile(tmp_path, "bad", body)
    assert code in [d.code for d in info.value.diagnostics], str(info.value)


def _run_stateful(c, batches):
    gen, interp = {}, {}
    out = []
    for b in batches:
        x = _x(c, lp=b)
        m1, m2 = c.loss(x, state=gen)[1], c.interpret(x, state=interp)[1]
        for k in m1:
            torch.testing.assert_close(m1[k], m2[k], rtol=1e-12, atol=1e-12)
        out.append(m1)
    return out, gen


def test_ema_and_running_var_over_steps(tmp_path):
    c = _compile(tmp_path, "state", "loss mean(h)\nmetric e = ema(h, decay = 0.75)\n"
                                   "metric e0 = ema(mean(h), decay = 0.5, init = 0)\nmetric v = running_var(h)\n"
                                   "metric vs = running_var(mean(h))\n")
    torch.manual_seed(3)
    batches = [-torch.rand(3, 4, dtype=torch.float64) * 4 + 100 for _ in range(4)]  # large offset: precision
    metrics, state = _run_stateful(c, batches)
    seen, means, e, e0 = [], [], None, 0.0
    for b, m in zip(batches, metrics):
        x = _x(c, **{"logprobs(policy, chosen)": b})
        hv = torch.where(x["mask(chosen)"], 0.5 * b, 0).sum(-1).tolist()
        seen += hv
        means.append(sum(hv) / 3)
        e = means[-1] if e is None else 0.75 * e + 0.25 * means[-1]
        e0 = 0.5 * e0 + 0.5 * means[-1]
        mu = sum(seen) / len(seen)
        var = sum((v - mu) ** 2 for v in seen) / (len(seen) - 1)
        mu_s = sum(means) / len(means)
        var_s = sum((v - mu_s) ** 2 for v in means) / (len(means) - 1) if len(means) > 1 else 0.0
        assert m["e"].item() == pytest.approx(e, rel=1e-12) and m["e0"].item() == pytest.approx(e0, rel=1e-12)
        assert m["v"].item() == pytest.approx(var, rel=1e-9) and m["vs"].item() == pytest.approx(var_s, abs=1e-9)
    assert len(state) == 4 and all(isinstance(v, tuple) for v in state.values())


def _other_process(theirs):
    """An all-reduce stand-in seen from one process: it adds what the other process, holding
    `theirs`, contributes to each reduction a kernel makes: first (Σx, n); then (running_var)
    (Σ(x − m)², n) around the global mean m that the first reduction gave."""
    f64 = torch.float64
    seen = {}

    def reduce(t):
        n = torch.tensor(float(theirs.numel()), dtype=f64)
        if "mean" not in seen:
            out = t + torch.stack([theirs.sum(), n])
            seen["mean"] = float(out[0] / out[1])
            return out
        return t + torch.stack([((theirs - seen.pop("mean")) ** 2).sum(), n])
    return reduce


@pytest.mark.parametrize("kernel,args", [("ema", (0.9, None)), ("ema", (0.9, 0.0)), ("running_var", ())])
def test_stateful_ops_sum_over_processes_first(kernel, args):
    """With several processes each batch's sums are added over all of them (the runtime passes
    `sum_over_processes`): a process holding half of each batch keeps the one-process state."""
    from ptdsl.codegen import kernels as K
    fn = getattr(K, kernel)
    torch.manual_seed(1)
    one, mine = {}, {}
    for _ in range(3):
        a, b = torch.rand(3, dtype=torch.float64) + 50, torch.rand(2, dtype=torch.float64) + 50
        want = fn(torch.cat([a, b]), one, "k", *args)
        got = fn(a, mine, "k", *args, sum_over_processes=_other_process(b))
        assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-15)
    assert mine["k"] == pytest.approx(one["k"], rel=1e-12)
