"""Every preference spec TRL 1.16's DPOTrainer implements, against ``DPOTrainer._compute_loss``
itself (driven without a model: tests/trl_drivers.py).

``SETTINGS`` is the spec → DPOConfig map: the loss type(s), loss weights, f-divergence and the
other options each spec's params stand for. Two tests run over it:

1. on inputs drawn from each compiled graph (ragged masks, garbage outside them, logits for
   WPO's weights): TRL against the spec's plain-torch reference (rtol 1e-9) and the spec
   against TRL (rtol 1e-6), in loss and gradient;
2. on masks TRL's batches can have and the references are not drawn for: completions without
   any token, holes, late starts (left padding): the spec against TRL.

TRL 1.16's ``sigmoid`` loss ignores ``label_smoothing`` (only robust, exo_pair, aot and
aot_unpaired read it), so the specs that keep DPO's cDPO parameter are compared at 0.
"""
from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ptdsl
from ptdsl.equivalence.strategies import inputs as graph_inputs
from tests import trl_drivers as D
from tests.helpers import assert_close, assert_same, loss_and_grads, trainable
from tests.methods import references as FIRST
from tests.methods import references_offline as OFF
from tests.methods import references_offline_batch as BATCH
from tests.methods.strategies import thinned
from tests.reference_cases import TRL, checks
from tests.trl_harness import needs_trl

FEW = settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _weights(*names):
    return lambda p: [float(p[n]) for n in names]


# spec → DPOTrainer settings beyond beta and label_smoothing, from the spec's bound params
SETTINGS = {
    "dpo": lambda p: {}, "tr_dpo": lambda p: {}, "step_dpo": lambda p: {},
    "ipo": lambda p: dict(loss_type="ipo"), "sigmoid_norm": lambda p: dict(loss_type="sigmoid_norm"),
    "robust_dpo": lambda p: dict(loss_type="robust"), "hinge": lambda p: dict(loss_type="hinge"),
    "exo_pair": lambda p: dict(loss_type="exo_pair"), "nca_pair": lambda p: dict(loss_type="nca_pair"),
    "bco_pair": lambda p: dict(loss_type="bco_pair"), "sppo_hard": lambda p: dict(loss_type="sppo_hard"),
    "apo_zero": lambda p: dict(loss_type="apo_zero"), "apo_down": lambda p: dict(loss_type="apo_down"),
    "aot": lambda p: dict(loss_type="aot"), "aot_unpaired": lambda p: dict(loss_type="aot_unpaired"),
    "discopop": lambda p: dict(loss_type="discopop", discopop_tau=p["discopop_tau"]),
    "ld_dpo": lambda p: dict(ld_alpha=p["ld_alpha"]),
    "wpo": lambda p: dict(use_weighting=True),
    "fdpo_forward_kl": lambda p: dict(f_divergence_type="forward_kl"),
    "fdpo_js": lambda p: dict(f_divergence_type="js_divergence"),
    "fdpo_alpha": lambda p: dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=p["alpha"]),
    "rpo": lambda p: dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, p["alpha"]]),
    "irpo": lambda p: dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, p["alpha"]]),
    "mpo": lambda p: dict(loss_type=["sigmoid", "bco_pair", "sft"],
                          loss_weights=_weights("dpo_weight", "bco_weight", "sft_weight")(p)),
}
NLL_TERM = {"rpo", "irpo", "mpo"}   # TRL's `sft` term: a token mean over the chosen completions
# (rtol, atol) of the reference vs TRL where TRL computes in float32; else 1e-9 (float64 both
# sides). The spec vs TRL: at least 1e-6.
# * fdpo_alpha: TRL's α-divergence takes float32 log-probs (tests/trl_drivers.py). A log-ratio
#   of ≤ 6 tokens of |log p| ≲ 10 on each side is off by ≲ 2·6·10·2⁻²⁴ ≈ 7e-6 absolute, so
#   exp((α − 1)·h) (|α − 1| ≤ 1.5 here) by ≈ 1e-5 relative, which the loss and gradient carry
#   a few times over (two exps, a sigmoid): 1e-4 (seen: 2e-5).
# * exo_pair: EXO's ε is a float32 tensor, so log(ε) and log1p(−ε) are float32 values: at
#   ε = 0.2 each is off by up to half an ulp of |log ε| ≈ 1.6, 6e-8, weighted by q ≤ 1. Where the
#   loss (a KL) is near 0 that is the whole error, so the atol: 2e-7 (seen: 1.6e-8 at loss 3e-3).
FLOAT32 = {"fdpo_alpha": (1e-4, 1e-6), "exo_pair": (1e-6, 2e-7)}
FLOAT64 = (1e-9, 1e-11)

# (method, spec params): every spec at its defaults, and the non-default settings worth a case
CASES = [(m, {}) for m in SETTINGS] + [
    ("dpo", {"beta": 0.5}), ("ipo", {"beta": 0.7}), ("sigmoid_norm", {"beta": 2.0}),
    ("robust_dpo", {"beta": 0.5, "label_smoothing": 0.3}), ("hinge", {"beta": 0.05}),
    ("exo_pair", {"beta": 0.3, "label_smoothing": 0.2}), ("nca_pair", {"beta": 0.5}), ("bco_pair", {"beta": 1.0}),
    ("sppo_hard", {"beta": 0.5}), ("apo_zero", {"beta": 0.5}), ("apo_down", {"beta": 0.3}),
    ("aot", {"beta": 0.5}), ("aot", {"label_smoothing": 0.3}), ("aot_unpaired", {"beta": 0.5, "label_smoothing": 0.1}),
    ("discopop", {"beta": 0.5, "discopop_tau": 0.5}), ("ld_dpo", {"ld_alpha": 0.0, "beta": 0.5}),
    ("ld_dpo", {"ld_alpha": 1.0}), ("wpo", {"beta": 1.0}), ("tr_dpo", {"beta": 0.05}), ("step_dpo", {"beta": 0.5}),
    ("fdpo_forward_kl", {"beta": 0.5}), ("fdpo_js", {"beta": 2.0}), ("fdpo_alpha", {"alpha": -0.5}),
    ("fdpo_alpha", {"alpha": 1.0}), ("fdpo_alpha", {"alpha": 1.5, "beta": 0.3}),
    ("rpo", {"alpha": 0.005, "beta": 0.5}), ("irpo", {"beta": 0.3}),
    ("mpo", {"dpo_weight": 1.0, "bco_weight": 0.5, "sft_weight": 0.1}),
]
CASE_IDS = [f"{m}-{i}" for i, (m, _) in enumerate(CASES)]


def reference(method):
    """The plain-torch reference of a preference spec, wherever its batch wrote it."""
    return FIRST.METHODS.get(method) or BATCH.METHODS.get(method) or getattr(OFF, method)


@functools.lru_cache(maxsize=None)
def _compiled(method: str, params: tuple = ()):
    return ptdsl.compile(method, **dict(params))


def trl_settings(c) -> dict:
    p = c.params
    return {"beta": p["beta"], "label_smoothing": p.get("label_smoothing", 0.0), **SETTINGS[c.name](p)}




@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,params", CASES, ids=CASE_IDS)
@FEW
@given(data=st.data())
def test_trl_dpo_trainer(method, params, data):
    c = _compiled(method, tuple(sorted(params.items())))
    x = data.draw(graph_inputs([c.graph], max_vocab=4))
    names, (rtol, atol) = trainable(c), FLOAT32.get(method, FLOAT64)
    theirs = loss_and_grads(lambda i: D.dpo_loss(i, **trl_settings(c)), x, names)
    assert_same(loss_and_grads(lambda i: reference(method)(i, **params), x, names), theirs, names, rtol, atol,
                f"{method} reference vs TRL")
    assert_same(loss_and_grads(lambda i: c.loss(i)[0], x, names), theirs, names, max(rtol, 1e-6), max(atol, 1e-9),
                f"{method} spec vs TRL")


@st.composite
def _thinned_inputs(draw, c):
    """Inputs whose completion masks are random subsets of the drawn ones: rows without any
    token, holes, and completions that start late (left padding), as TRL's batches may be."""
    x = draw(graph_inputs([c.graph], max_vocab=4))
    for s in ("chosen", "rejected"):
        x[f"mask({s})"] = draw(thinned(x[f"mask({s})"], empty_rows=draw(st.integers(0, 1))))
    return x


@needs_trl
@checks(TRL)
@pytest.mark.parametrize("method,params", CASES, ids=CASE_IDS)
@FEW
@given(data=st.data())
def test_trl_dpo_trainer_on_empty_completions_holes_and_left_padding(method, params, data):
    """sigmoid_norm used to divide 0 by a length of 0 where TRL clamps the length at 1, and
    LD-DPO's shared prefix counts valid tokens, not columns."""
    c = _compiled(method, tuple(sorted(params.items())))
    x = data.draw(_thinned_inputs(c))
    # TRL's `sft` term is the mean of no token (NaN) when no chosen completion has one
    assume(method not in NLL_TERM or bool(x["mask(chosen)"].any()))
    names = trainable(c)
    theirs = loss_and_grads(lambda i: D.dpo_loss(i, **trl_settings(c)), x, names)
    rtol, atol = FLOAT32.get(method, FLOAT64)
    assert_same(loss_and_grads(lambda i: c.loss(i)[0], x, names), theirs, names, max(rtol, 1e-6), max(atol, 1e-9),
                f"{method} spec vs TRL")


@needs_trl
@FEW
@given(data=st.data())
def test_trl_sigmoid_ignores_label_smoothing_so_wpo_is_compared_at_zero(data):
    """TRL 1.16's sigmoid loss (with or without use_weighting) has no label smoothing; the spec
    keeps dpo's cDPO parameter, so the TRL comparisons above run at label_smoothing = 0."""
    x = data.draw(graph_inputs([_compiled("wpo").graph], max_vocab=4))
    assert_close(D.dpo_loss(x, use_weighting=True, label_smoothing=0.3), D.dpo_loss(x, use_weighting=True),
                 rtol=1e-12)
