"""The ten first methods match independent plain-torch references written from
their METHODS.md formulas (tests/methods/references.py), in loss AND gradient,
in float64 at rtol 1e-6, on hypothesis-generated inputs (ragged masks, garbage in
masked-out positions, groups for the GRPO family)."""
import pytest
from hypothesis import given, strategies as st

from tests.helpers import assert_close, compiled, loss_and_grads
from tests.methods import references as R
from tests.methods import strategies as S
from tests.reference_cases import REFERENCE, checks

PREFERENCE = ["dpo", "cdpo", "ipo", "simpo", "orpo"]
ROLLOUT = ["grpo", "dr_grpo", "dapo"]

# (method, spec params, extra reference params)
CASES = [
    ("sft", {}, {}),
    *[(m, {}, {}) for m in PREFERENCE],
    ("dpo", {"beta": 0.5, "label_smoothing": 0.2}, {}),
    ("cdpo", {"label_smoothing": 0.3, "beta": 0.05}, {}),
    ("ipo", {"beta": 0.7}, {}),
    ("simpo", {"beta": 2.5, "gamma": 1.375, "label_smoothing": 0.1}, {}),
    ("orpo", {"beta": 0.5}, {}),
    ("kto", {}, {}),
    ("kto", {"beta": 0.3, "desirable_weight": 1.33, "undesirable_weight": 0.7}, {}),
    *[(m, {"num_generations": 2}, {"n": 2}) for m in ROLLOUT],
    *[(m, {"num_generations": 4, "beta": 0.04}, {"n": 4}) for m in ROLLOUT],
    ("grpo", {"num_generations": 3, "epsilon": 0.1, "epsilon_high": 0.3}, {"n": 3}),
    ("dr_grpo", {"num_generations": 2, "max_completion_length": 7}, {"n": 2}),
]


def _strategy(method, n):
    if method == "sft":
        return S.sft_inputs()
    if method in PREFERENCE:
        return S.preference_inputs()
    if method == "kto":
        return S.unpaired_inputs()
    return S.rollout_inputs(n)


@checks(REFERENCE)
@pytest.mark.parametrize("method,params,extra", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@given(data=st.data())
def test_matches_reference(method, params, extra, data):
    c = compiled(method, **params)
    x = data.draw(_strategy(method, extra.get("n")))
    ref_params = {**R.DEFAULTS[method], **{k: v for k, v in params.items() if k != "num_generations"}, **extra}
    names = [i.name for i in c.inputs if i.trainable]
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
    want, want_g = loss_and_grads(lambda i: getattr(R, method)(i, **ref_params), x, names)
    assert_close(got, want, rtol=1e-6, what=f"{method} loss")
    for n in names:
        assert_close(got_g[n], want_g[n], rtol=1e-6, what=f"{method} grad {n}")
