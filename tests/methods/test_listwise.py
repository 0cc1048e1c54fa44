"""Listwise methods (ranked lists, best first) against independent references written
from METHODS.md L2 (PRO), L3 (LiPO-λ), L4 (InfoNCA) and RRHF's Eq. 2-4: explicit loops
over each prompt's list with *that list's own K* (lists of 2 to 4 responses in one
batch, as `data ranked(size = 4)` allows), averaged over lists; float64, loss and
gradient. The references never see padding: they slice each list out of the rows by
the list sizes, so a masking mistake in the ragged kernels shows as a difference."""
import math

import pytest
import torch
from hypothesis import given, strategies as st

import ptdsl
from ptdsl.equivalence.strategies import inputs as input_strategy, trainable_names
from tests.helpers import assert_close, compiled, loss_and_grads
from tests.reference_cases import REFERENCE, checks


def _lists(x):
    """(first row, end) of each list, from the list sizes."""
    ends = torch.cumsum(x["sizes(responses)"].to(torch.long), 0).tolist()
    return list(zip([0] + ends[:-1], ends))


def _seq_logps(x, model, mean):
    m = x["mask(responses)"]
    lp = torch.where(m, x[f"logprobs({model}, responses)"], torch.zeros((), dtype=torch.float64))
    s = lp.sum(-1)
    return s / m.sum(-1) if mean else s


def _mean_over_lists(x, per_list):
    lists = _lists(x)
    return sum(per_list(a, b) for a, b in lists) / len(lists)


def pro_ref(x, beta=1.0):
    """−Σ_{k<K} log [exp r_k / Σ_{i≥k} exp r_i] − β·r(best), r = token-mean log-prob (PRO Eq. 5, T = 1)."""
    r_all, ratings = _seq_logps(x, "policy", mean=True), x["rating"]

    def one(a, b):
        r, rt = r_all[a:b], ratings[a:b]
        pl = sum(r[j] - torch.logsumexp(r[j:], 0) for j in range(b - a))
        return -pl - beta * sum(r[j] for j in range(b - a) if rt[j] == rt.max())
    return _mean_over_lists(x, one)


def infonca_ref(x, beta=0.1, alpha=1.0):
    """−Σ_i softmax(rating/α)_i · log softmax(β h)_i over each list."""
    h = beta * (_seq_logps(x, "policy", mean=False) - _seq_logps(x, "reference", mean=False))
    return _mean_over_lists(x, lambda a, b: -(torch.softmax(x["rating"][a:b] / alpha, 0)
                                              * torch.log_softmax(h[a:b], 0)).sum())


def rrhf_ref(x, ft_weight=1.0):
    """Σ_{r_i < r_j} max(0, p_i − p_j) − λ·ℓ_θ(y_best), p = token-mean log-prob (RRHF Eq. 2-4)."""
    p_all, s_all = _seq_logps(x, "policy", mean=True), _seq_logps(x, "policy", mean=False)

    def one(a, b):
        p, s, r = p_all[a:b], s_all[a:b], x["rating"][a:b]
        k = b - a
        rank = sum(torch.relu(p[i] - p[j]) for i in range(k) for j in range(k) if r[i] < r[j])
        return rank - ft_weight * sum(s[i] for i in range(k) if r[i] == r.max())
    return _mean_over_lists(x, one)


def lipo_ref(x, beta=0.1):
    """−Σ_{ψ_i > ψ_j} |G_i − G_j|·|1/D(τ_i) − 1/D(τ_j)|·log σ(s_i − s_j), τ = 1-based rank of s."""
    s_all = beta * (_seq_logps(x, "policy", mean=False) - _seq_logps(x, "reference", mean=False))

    def one(a, b):
        s, psi, k = s_all[a:b], x["rating"][a:b], b - a
        order = sorted(range(k), key=lambda i: (-float(s[i].detach()), i))
        tau = {i: pos + 1 for pos, i in enumerate(order)}
        total = s.sum() * 0  # a tensor even when no pair is ordered
        for i in range(k):
            for j in range(k):
                if psi[i] > psi[j]:
                    w = abs((2 ** psi[i] - 1) - (2 ** psi[j] - 1)) * abs(1 / math.log(1 + tau[i])
                                                                     - 1 / math.log(1 + tau[j]))
                    total = total - w * torch.nn.functional.logsigmoid(s[i] - s[j])
        return total
    return _mean_over_lists(x, one)


CASES = [("pro", {}, lambda x: pro_ref(x)), ("pro", {"beta": 0.3}, lambda x: pro_ref(x, 0.3)),
         ("infonca", {}, lambda x: infonca_ref(x)),
         ("infonca", {"beta": 0.5, "alpha": 0.7}, lambda x: infonca_ref(x, 0.5, 0.7)),
         ("rrhf", {}, lambda x: rrhf_ref(x)), ("rrhf", {"ft_weight": 0.5}, lambda x: rrhf_ref(x, 0.5)),
         ("lipo", {}, lambda x: lipo_ref(x)), ("lipo", {"beta": 0.7}, lambda x: lipo_ref(x, 0.7))]


@checks(REFERENCE, arg="name")
@pytest.mark.parametrize("name,params,ref", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@given(data=st.data())
def test_matches_reference_on_ragged_lists(name, params, ref, data):
    c = compiled(name, **params)
    assert c.group_size("responses") == 4  # K_max: the lists drawn hold 2 to 4 responses
    x = data.draw(input_strategy([c.graph]))
    names = trainable_names([c.graph])
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want, want_g = loss_and_grads(ref, x, names)
    assert_close(got, want, what=f"{name} loss")
    for n in names:
        assert_close(got_g[n], want_g[n], what=f"{name} grad {n}")


@pytest.mark.parametrize("name", ["pro", "rrhf", "lipo", "infonca"])
@given(data=st.data())
def test_a_batch_is_the_mean_of_its_lists_alone(name, data):
    """A list of K responses in a batch of mixed lengths gives exactly the loss it gives alone
    (a batch of one list of K): padding reaches no list's loss or gradient."""
    c = compiled(name)
    x = data.draw(input_strategy([c.graph]))
    names = trainable_names([c.graph])
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    lists = _lists(x)
    want, want_g = loss_and_grads(lambda i: sum(c.loss(_one_list(i, a, b, k))[0]
                                                for k, (a, b) in enumerate(lists)) / len(lists), x, names)
    assert_close(got, want, what=f"{name} loss")
    for n in names:
        assert_close(got_g[n], want_g[n], what=f"{name} grad {n}")


def _one_list(x, a, b, k):
    """The inputs of list k alone (rows a:b), its token columns cut to its own longest response."""
    width = max(int(x["mask(responses)"][a:b].sum(-1).max()), 1)
    out = {}
    for name, v in x.items():
        if name == "sizes(responses)":
            out[name] = v[k:k + 1]
        elif v.dim() == 2:
            out[name] = v[a:b, :width]
        else:
            out[name] = v[a:b]
    return out


def test_pro_with_two_responses_is_reference_free_dpo_on_mean_logps():
    """METHODS.md I22 at one example: PRO on a list of 2, no SFT term, is −log σ(r̄_w − r̄_l)."""
    c = ptdsl.compile("pro", beta=0.0)
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -0.25]], dtype=torch.float64)
    x = {"logprobs(policy, responses)": lp, "mask(responses)": torch.ones(2, 2, dtype=torch.bool),
         "rating": torch.tensor([1.0, 0.0], dtype=torch.float64), "sizes(responses)": torch.tensor([2])}
    want = -math.log(1 / (1 + math.exp(-(-1.5 - -0.375))))
    assert abs(c.loss(x)[0].item() - want) < 1e-12
