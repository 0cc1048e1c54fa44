"""Self-checks of the plain-torch reference losses in ``references.py``, and of the first ten
specs on the same evidence.

(a) Hand-computed values on tiny fixed inputs, written here with the ``math`` module from the
    lists of valid tokens and the paper's formula (never by calling a reference). Each case
    checks the reference *and* the compiled spec against the hand value.
(b) Properties every reference must have: masked-out garbage changes neither value nor
    gradient; the KTO reference point carries no gradient; aggregations agree where the
    formulas say they must.

TRL 1.16's own code is the third kind of evidence: test_methods_trl.py.
"""

from __future__ import annotations

import functools
import inspect
import math
import statistics
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptdsl
from tests.methods import references as ref
from tests.methods import strategies as strat
from tests.reference_cases import REFERENCE, checks

NAN, INF = math.nan, math.inf
F64 = torch.float64
FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _close(actual, expected, rtol=1e-10, atol=1e-12):
    actual, expected = torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64)
    assert torch.isfinite(actual).all() and torch.isfinite(expected).all(), (actual, expected)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _sig(x: float) -> float:
    return math.exp(_logsig(x))


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def _m(lengths, width) -> torch.Tensor:
    return torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


# ======================================================================================
# (a) hand-computed values on fixed inputs
# ======================================================================================

# Valid tokens (garbage elsewhere):
#   chosen   policy [[-1, -2], [-0.5]]      reference [[-1.5, -1], [-1]]
#   rejected policy [[-3], [-2, -1]]        reference [[-2], [-2.5, -0.5]]
# so h(chosen) = [-3 + 2.5, -0.5 + 1] = [-0.5, 0.5], h(rejected) = [-3 + 2, -3 + 3] = [-1, 0].
PREF = {
    "logprobs(policy, chosen)": _t([[-1.0, -2.0, NAN], [-0.5, INF, 1e30]]),
    "logprobs(reference, chosen)": _t([[-1.5, -1.0, -INF], [-1.0, NAN, NAN]]),
    "mask(chosen)": _m([2, 1], 3),
    "logprobs(policy, rejected)": _t([[-3.0, NAN], [-2.0, -1.0]]),
    "logprobs(reference, rejected)": _t([[-2.0, 5.0], [-2.5, -0.5]]),
    "mask(rejected)": _m([1, 2], 2),
}
SFT = {"logprobs(policy, completion)": PREF["logprobs(policy, chosen)"], "mask(completion)": PREF["mask(chosen)"]}

# ORPO: mean log-probs a (chosen) and b (rejected) per row; log odds of each
_A, _B = [-1.5, -0.5], [-3.0, -1.5]
_LOG_ODDS = [(a - b) - (math.log(1 - math.exp(a)) - math.log(1 - math.exp(b))) for a, b in zip(_A, _B)]
_NLL_CHOSEN = (1.0 + 2.0 + 0.5) / 3  # one token mean over the 3 chosen tokens, not a mean of row means

KTO_BASE = {
    # h = [(-2) - (-3), (-2) - (-1), (-1.5) - (-3)] = [1, -1, 1.5]
    "logprobs(policy, completion)": _t([[-1.0, -1.0, NAN], [-2.0, INF, NAN], [-0.5, -0.5, -0.5]]),
    "logprobs(reference, completion)": _t([[-2.0, -1.0, 3.0], [-1.0, -INF, NAN], [-1.0, -1.0, -1.0]]),
    "mask(completion)": _m([2, 1, 3], 3),
    "label": torch.tensor([True, False, True]),
    "logprobs(policy, mismatched(completion))": _t([[-1.0, NAN], [-2.0, -2.0], [-3.0, 1e30]]),
    "mask(mismatched(completion))": _m([1, 2, 1], 2),
}
# mismatched log-ratios [1, -2, 0]: mean −1/3, so the reference point clamps to z0 = 0
KTO_NEGATIVE_KL = {**KTO_BASE, "logprobs(reference, mismatched(completion))": _t([[-2.0, NAN], [-1.0, -1.0],
                                                                                  [-3.0, 0.0]])}
# mismatched log-ratios [2, 0, 0]: z0 = 2/3
KTO_POSITIVE_KL = {**KTO_BASE, "logprobs(reference, mismatched(completion))": _t([[-3.0, NAN], [-3.0, -1.0],
                                                                                  [-3.0, 9.0]])}


def _kto_expected(z0, beta=0.1, wd=1.0, wu=1.0):
    row0 = wd * (1 - _sig(beta * (1 - z0)))  # desirable, h = 1
    row1 = wu * (1 - _sig(beta * (z0 - (-1))))  # undesirable, h = -1
    row2 = wd * (1 - _sig(beta * (1.5 - z0)))  # desirable, h = 1.5
    return (row0 + row1 + row2) / 3


# Rollouts: 2 prompts x n=2 samples; rewards [1, 0] give row 0 A > 0 and row 1 A < 0, so the
# clip binds at row 0's first token (ratio e^0.5 > 1 + ε) and row 1's last (e^−0.3 < 1 − ε).
ROLL_TOKENS = {
    "policy": [[-1.0, -2.0], [-0.5, -0.5, -0.5], [-1.0], [-2.0, -1.0]],
    "old": [[-1.5, -1.5], [-0.5, -0.6, -0.2], [-1.0], [-2.5, -1.0]],
    "reference": [[-1.2, -1.8], [-0.7, -0.5, -0.1], [-2.0], [-2.0, -0.5]],
}
ROLL_REWARDS = [1.0, 0.0, 0.5, 0.5]


def _pad(rows, width=3, fill=(NAN, INF, -1e30)):
    return _t([row + [fill[(i + j) % 3] for j in range(width - len(row))] for i, row in enumerate(rows)])


ROLL = {
    "logprobs(policy, y)": _pad(ROLL_TOKENS["policy"]),
    "logprobs(old, y)": _pad(ROLL_TOKENS["old"]),
    "logprobs(reference, y)": _pad(ROLL_TOKENS["reference"]),
    "mask(y)": _m([2, 3, 1, 2], 3),
    "r(y)": _t(ROLL_REWARDS),
}


def _hand_advantages(scale):
    adv = []
    for g in range(2):
        group = ROLL_REWARDS[2 * g : 2 * g + 2]
        mean, std = statistics.mean(group), statistics.stdev(group)  # stdev: n - 1
        adv += [(r - mean) / (std + 1e-4) if scale else r - mean for r in group]
    return adv


def _hand_per_token(adv, eps_low, eps_high, beta=0.0, bias_correction=True):
    """Per-row lists of per-token losses from the valid tokens, in plain Python."""
    out = []
    for i, (pol_row, old_row, ref_row) in enumerate(zip(*ROLL_TOKENS.values())):
        row = []
        for p, o, r in zip(pol_row, old_row, ref_row):
            ratio = math.exp(p - o)
            clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
            loss = -min(ratio * adv[i], clipped * adv[i])
            k3 = math.exp(r - p) - (r - p) - 1
            loss += beta * k3 * (ratio if bias_correction else 1.0)
            row.append(loss)
        out.append(row)
    return out


def _sequence_means(rows):
    return sum(sum(row) / len(row) for row in rows) / len(rows)


@dataclass(frozen=True)
class Hand:
    method: str
    inputs: dict
    expected: float
    ref: dict = field(default_factory=dict)    # reference keywords
    why: str = ""
    reference_only: bool = False               # a reference option the spec does not have (see `why`)

    def spec_params(self):
        """The spec's params: the reference's keywords, `n` being `num_generations`."""
        return tuple(sorted((("num_generations" if k == "n" else k), v) for k, v in self.ref.items()))


ROLL_ADV, ROLL_CENTRED = _hand_advantages(True), _hand_advantages(False)
HAND = [
    Hand("sft", SFT, _NLL_CHOSEN, why="a token mean over 3 tokens, not a mean of row means"),
    # z = 0.1 * (h_c - h_r) = 0.1 * [0.5, 0.5] = [0.05, 0.05]
    Hand("dpo", PREF, -_logsig(0.05)),
    Hand("dpo", PREF, -_logsig(0.5), {"beta": 1.0}),
    Hand("cdpo", PREF, -0.9 * _logsig(0.05) - 0.1 * _logsig(-0.05)),
    # h/|y|: chosen [-0.25, 0.5], rejected [-1, 0] -> diff [0.75, 0.5]; 1/(2*0.1) = 5
    Hand("ipo", PREF, ((0.75 - 5) ** 2 + (0.5 - 5) ** 2) / 2),
    # mean logp: chosen [-1.5, -0.5], rejected [-3, -1.5] -> d = [1.5, 1.0]; u = 0.1 d - 0.5
    Hand("simpo", PREF, -(_logsig(-0.35) + _logsig(-0.4)) / 2),
    Hand("simpo", PREF, sum(-0.8 * _logsig(u) - 0.2 * _logsig(-u) for u in (2.0, 1.0)) / 2,
         {"beta": 2.0, "gamma": 1.0, "label_smoothing": 0.2}),
    Hand("orpo", PREF, _NLL_CHOSEN - sum(0.1 * _logsig(x) for x in _LOG_ODDS) / 2),
    Hand("orpo", PREF, _NLL_CHOSEN, {"beta": 0.0}, why="no odds-ratio term: the chosen NLL alone"),
    Hand("kto", KTO_NEGATIVE_KL, _kto_expected(0.0), why="a negative KL estimate clamps to z0 = 0"),
    Hand("kto", KTO_NEGATIVE_KL, _kto_expected(0.0, 0.5, 1.3, 0.7),
         {"beta": 0.5, "desirable_weight": 1.3, "undesirable_weight": 0.7}),
    Hand("kto", KTO_POSITIVE_KL, _kto_expected(2 / 3)),
    Hand("grpo", ROLL, _sequence_means(_hand_per_token(ROLL_ADV, 0.2, 0.2)), {"n": 2, "beta": 0.0}),
    Hand("grpo", ROLL, _sequence_means(_hand_per_token(ROLL_ADV, 0.2, 0.2, 0.04)), {"n": 2, "beta": 0.04}),
    Hand("grpo", ROLL, _sequence_means(_hand_per_token(ROLL_ADV, 0.2, 0.2, 0.04, bias_correction=False)),
         {"n": 2, "beta": 0.04, "use_bias_correction_kl": False}, reference_only=True,
         why="TRL's use_bias_correction_kl=False; the spec always weights the KL by the ratio"),
    Hand("dr_grpo", ROLL, sum(map(sum, _hand_per_token(ROLL_CENTRED, 0.2, 0.2))) / (4 * 5),
         {"n": 2, "max_completion_length": 5}),
    Hand("dr_grpo", ROLL, sum(map(sum, _hand_per_token(ROLL_CENTRED, 0.2, 0.2))) / (4 * 512), {"n": 2}),
    Hand("dapo", ROLL, sum(map(sum, _hand_per_token(ROLL_ADV, 0.2, 0.28))) / 8, {"n": 2}, why="8 valid tokens"),
]


@functools.lru_cache(maxsize=None)
def _compiled(method, params):
    return ptdsl.compile(method, **dict(params))


@checks(REFERENCE)
@pytest.mark.parametrize("method,case", [(h.method, h) for h in HAND], ids=[f"{h.method}-{i}" for i, h in enumerate(HAND)])
def test_hand_value(method, case):
    _close(ref.METHODS[method](case.inputs, **case.ref), case.expected)
    if not case.reference_only:
        _close(_compiled(method, case.spec_params()).loss(case.inputs)[0], case.expected)


def test_hand_group_advantages():
    # group 0: rewards [1, 0], mean 0.5, Bessel std sqrt(0.5) -> +-0.5/(sqrt(0.5) + 1e-4); group 1 all equal -> 0
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    _close(ref._group_advantages(ROLL["r(y)"], 2, scale=True), [a, -a, 0.0, 0.0])
    _close(ref._group_advantages(ROLL["r(y)"], 2, scale=False), [0.5, -0.5, 0.0, 0.0])


def test_hand_rollouts_exercise_clipping():
    """The hand GRPO/DAPO values test the clip only if it binds somewhere: a token whose ratio
    is past 1 + ε_high with A > 0, or below 1 − ε with A < 0, so that min() takes the clipped
    term; and some token where it does not."""
    binds = free = 0
    for i, (pol, old) in enumerate(zip(ROLL_TOKENS["policy"], ROLL_TOKENS["old"])):
        for p, o in zip(pol, old):
            ratio, adv = math.exp(p - o), ROLL_ADV[i]
            clipped = (adv > 0 and ratio > 1.28) or (adv < 0 and ratio < 0.8)
            binds, free = binds + clipped, free + (adv != 0 and not clipped)
    assert binds >= 2 and free >= 2
    unclipped = sum(map(sum, _hand_per_token(ROLL_ADV, 10.0, 10.0))) / 8
    assert abs(unclipped - HAND[-1].expected) > 1e-2


# ======================================================================================
# (b) properties: garbage-proofness, gradient masks, aggregation
# ======================================================================================

CASES = [
    ("sft", strat.sft_inputs(), {}),
    ("dpo", strat.preference_inputs(), {}),
    ("cdpo", strat.preference_inputs(), {}),
    ("ipo", strat.preference_inputs(), {}),
    ("simpo", strat.preference_inputs(), {}),
    ("orpo", strat.preference_inputs(), {}),
    ("kto", strat.unpaired_inputs(), {}),
    ("grpo", strat.rollout_inputs(3), {"n": 3, "beta": 0.04}),
    ("dr_grpo", strat.rollout_inputs(2), {"n": 2, "beta": 0.04}),
    ("dapo", strat.rollout_inputs(2), {"n": 2}),
]


def _policy_leaves(inputs):
    return [v for k, v in inputs.items() if k.startswith("logprobs(policy,")]


def _grads(loss, leaves):
    """d loss / d leaf for each leaf; a leaf the loss does not use gets an explicit zero gradient."""
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]


def _regarbage(inputs, fill):
    """The same inputs with every masked-out position of every token tensor set to ``fill``."""
    out = dict(inputs)
    for key, value in inputs.items():
        if key.startswith("logprobs("):
            seqs = key[key.index(",") + 2 : -1]
            out[key] = torch.where(inputs[f"mask({seqs})"], value, torch.full_like(value, fill))
    return out


@pytest.mark.parametrize("method,strategy,params", CASES, ids=[c[0] for c in CASES])
@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_garbage_never_leaks(method, strategy, params, data):
    inputs = strat.requires_grad_(data.draw(strategy))
    leaves = _policy_leaves(inputs)
    loss = ref.METHODS[method](inputs, **params)
    assert loss.dim() == 0 and torch.isfinite(loss)
    grads = _grads(loss, leaves)
    for leaf, grad in zip(leaves, grads):
        assert torch.isfinite(grad).all()
        seqs = [k for k, v in inputs.items() if v is leaf][0][len("logprobs(policy, ") : -1]
        assert (grad[~inputs[f"mask({seqs})"]] == 0).all()
    for fill in (NAN, -INF, 0.0):
        other = strat.requires_grad_(_regarbage(inputs, fill))
        loss2 = ref.METHODS[method](other, **params)
        _close(loss2, loss, rtol=0, atol=0)
        for g1, g2 in zip(grads, _grads(loss2, _policy_leaves(other))):
            _close(g2, g1, rtol=0, atol=0)


@FEW
@given(strat.preference_inputs())
def test_strategies_shapes(inputs):
    for s in ("chosen", "rejected"):
        mask = inputs[f"mask({s})"]
        assert mask.dtype == torch.bool and 1 <= mask.shape[0] <= 4 and 1 <= mask.shape[1] <= 6
        lengths = mask.sum(1)
        assert (lengths >= 1).all()
        assert torch.equal(mask, torch.arange(mask.shape[1]) < lengths.unsqueeze(1))  # contiguous from column 0
        for model in ("policy", "reference"):
            values = inputs[f"logprobs({model}, {s})"]
            assert values.dtype == F64 and values.shape == mask.shape and (values[mask] <= 0).all()


@FEW
@given(st.integers(2, 4), st.data())
def test_rollout_strategy_groups(n, data):
    inputs = data.draw(strat.rollout_inputs(n))
    rows = inputs["mask(y)"].shape[0]
    assert rows % n == 0 and 1 <= rows // n <= 3
    assert inputs["r(y)"].shape == (rows,)
    for key in ("logprobs(policy, y)", "logprobs(old, y)", "logprobs(reference, y)"):
        assert inputs[key].shape == inputs["mask(y)"].shape


@FEW
@given(st.integers(2, 3), st.data())
def test_grpo_and_dapo_aggregations_agree_when_lengths_are_equal(n, data):
    """METHODS.md: GRPO's per-sequence mean and DAPO's batch token mean differ only in how
    they weigh sequences of different lengths; with equal lengths they agree."""
    inputs = data.draw(strat.rollout_inputs(n))
    inputs["mask(y)"] = torch.ones_like(inputs["mask(y)"])
    for key in [k for k in inputs if k.startswith("logprobs")]:  # the garbage columns become real tokens
        inputs[key] = torch.nan_to_num(inputs[key], nan=-1.0, posinf=-1.0, neginf=-1.0).clamp(-8, 0)
    _close(ref.grpo(inputs, n=n, beta=0.1), ref.dapo(inputs, n=n, beta=0.1, epsilon_high=0.2))


def test_kto_reference_point_gets_no_gradient():
    inputs = strat.requires_grad_(dict(KTO_POSITIVE_KL))  # z0 = 2/3 > 0, so the clamp does not hide it
    grad = _grads(ref.kto(inputs), [inputs["logprobs(policy, mismatched(completion))"]])[0]
    assert (grad == 0).all()


def test_defaults_are_function_defaults():
    """test_methods.py builds reference keywords from DEFAULTS; they must be what the functions use."""
    for name, params in ref.DEFAULTS.items():
        signature = inspect.signature(ref.METHODS[name])
        for param, default in params.items():
            assert signature.parameters[param].default == default, (name, param)
