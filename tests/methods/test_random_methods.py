"""SamPO and β-DPO: specs with random draws and moving averages.

1. Each spec equals its plain-torch reference (references_random.py, from the authors' code)
   in loss and gradient, given the same U[0, 1) draws as inputs; β-DPO over several steps, its
   moving averages carried in the `state` dict.
2. The draws select what the authors' torch.multinomial selects, in distribution: SamPO keeps
   exactly min(|y_w|, |y_l|) tokens of each response, each token equally often; β-DPO's keys
   keep each pair as often as weighted sampling without replacement does. The draws here come
   from the runtime's own generator (runtime/draws.py).
(With ρ = 0 and a = 0 β-DPO is DPO: test_offline_batch.py's identities, and I7.)
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from ptdsl.equivalence.strategies import inputs as graph_inputs
from ptdsl.runtime.data import Example
from ptdsl.runtime.draws import draw
from tests.helpers import assert_close, compiled, loss_and_grads
from tests.methods import references_random as R
from tests.reference_cases import REFERENCE, checks

FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _trainable(c):
    return [i.name for i in c.inputs if i.trainable]


def _draws(c) -> dict:
    """The random leaves of a compiled method, by the set they are drawn on (None: per row)."""
    return {i.set: i.name for i in c.inputs if i.kind == "uniform"}


def _same(got, want, names, what):
    assert_close(got[0], want[0], rtol=1e-6, what=f"{what} loss")
    for n in names:
        assert_close(got[1][n], want[1][n], rtol=1e-6, what=f"{what} grad {n}")


@checks(REFERENCE, "sampo")
@pytest.mark.parametrize("beta", [0.1, 0.7])
@FEW
@given(data=st.data())
def test_sampo_matches_reference(beta, data):
    c = compiled("sampo", beta=beta)
    x = data.draw(graph_inputs([c.graph]))
    names = _trainable(c)
    got = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want = loss_and_grads(lambda i: R.sampo(i, beta=beta, draws=_draws(c)), x, names)
    _same(got, want, names, "sampo")


BETA_DPO = [{}, {"alpha": 2.0, "beta": 0.5}, {"rho": 0.5, "momentum": 0.5}, {"rho": 0.0}]


@checks(REFERENCE, "beta_dpo")
@pytest.mark.parametrize("params", BETA_DPO, ids=str)
@FEW
@given(data=st.data(), steps=st.integers(1, 4))
def test_beta_dpo_matches_reference_across_steps(params, data, steps):
    """The moving averages M₀ and σ live in `state`: after k batches the spec's loss is the
    reference's with those k batches' (mean, std) as history."""
    c = compiled("beta_dpo", **params)
    names, draw_name = _trainable(c), _draws(c)[None]
    state, history = {}, []
    for _ in range(steps - 1):
        x = data.draw(graph_inputs([c.graph], max_rows=6))
        c.loss(x, state=state)
        history.append(R.beta_dpo_batch_stats(x))
    x = data.draw(graph_inputs([c.graph], max_rows=6))
    got = loss_and_grads(lambda i: c.loss(i, state=dict(state))[0], x, names)
    want = loss_and_grads(lambda i: R.beta_dpo(i, **params, draw=draw_name, history=history), x, names)
    _same(got, want, names, f"beta_dpo after {steps - 1} batches")


# ---- the draws select as the authors' torch.multinomial does ----------------------------

def _examples(n: int) -> list[Example]:
    return [Example(i, "", [], {}) for i in range(n)]


def test_sampo_keeps_min_length_tokens_uniformly():
    """Every step, each response keeps exactly T_m = min(|y_w|, |y_l|) of its tokens; over many
    steps each token of the longer response is kept with probability T_m / T, as the authors'
    torch.multinomial(mask, T_m) keeps it (a 5-sigma binomial band around both)."""
    lengths = {"chosen": [7, 3, 5], "rejected": [2, 6, 5]}
    masks = {s: torch.arange(8)[None, :] < torch.tensor(v)[:, None] for s, v in lengths.items()}
    trials, counts = 3000, {s: torch.zeros(3, 8) for s in masks}
    theirs = torch.zeros(3, 8)
    gen = torch.Generator().manual_seed(0)
    for step in range(trials):
        for s, other in (("chosen", "rejected"), ("rejected", "chosen")):
            u = draw({"level": "token", "set": s, "name": f"uniform@sampo:{s}"}, 3, _examples(3), masks, 0, step)
            kept = R.sampo_kept(masks[s], masks[other], u)
            assert kept.sum(-1).tolist() == [min(p, q) for p, q in zip(lengths[s], lengths[other])]
            assert not (kept & ~masks[s]).any()
            counts[s] += kept
        for i, (n_w, n_l) in enumerate(zip(lengths["chosen"], lengths["rejected"])):  # the authors' draw
            idx = torch.multinomial(masks["chosen"][i].float(), min(n_w, n_l), replacement=False, generator=gen)
            theirs[i, idx] += 1
    ours = counts["chosen"]
    for i, (n_w, n_l) in enumerate(zip(lengths["chosen"], lengths["rejected"])):
        p = min(n_w, n_l) / n_w
        band = 5 * (trials * p * (1 - p)) ** 0.5 + 1e-9
        for t in range(n_w):
            assert abs(ours[i, t] - trials * p) <= band, (i, t, ours[i, t], trials * p)
            assert abs(theirs[i, t] - trials * p) <= band


def test_beta_dpo_keys_sample_without_replacement_like_multinomial():
    """Keeping the k pairs with the largest log(u)/w keeps each pair exactly as often as
    torch.multinomial(w, k, replacement=False) does (the authors' filtering): inclusion
    frequencies agree within a 5-sigma band, and differ clearly from uniform sampling."""
    w = torch.tensor([1.0, 0.8, 0.3, 0.05, 0.6], dtype=torch.float64)
    k, trials = 3, 6000
    ours, theirs = torch.zeros(5), torch.zeros(5)
    gen = torch.Generator().manual_seed(1)
    a = {"level": "seq", "set": None, "name": "uniform@beta_dpo:32:25"}
    for step in range(trials):
        u = draw(a, 5, _examples(5), {}, 0, step).to(torch.float64)
        keys = (torch.log(u) / w).tolist()
        ours[R._largest(keys, list(range(5)), k)] += 1
        theirs[torch.multinomial(w, k, replacement=False, generator=gen)] += 1
    p_ours, p_theirs = ours / trials, theirs / trials
    band = 5 * (p_theirs * (1 - p_theirs) / trials * 2) ** 0.5 + 1e-3
    assert ((p_ours - p_theirs).abs() <= band).all(), (p_ours, p_theirs)
    assert p_ours[3] < 0.25 < k / 5  # the low-weight pair is kept far less often than uniformly
