"""The equivalence engine: verdicts, counterexamples checked against plain-torch
arithmetic, seeds, non-finite handling, one-sided inputs and terms."""
import pytest
import torch
import torch.nn.functional as F

import ptdsl
from ptdsl.equivalence import Term, assert_equivalent, equivalent
from ptdsl.equivalence.conditions import ConditionError
from ptdsl.equivalence.engine import _agree
from ptdsl.equivalence.sides import SideError


def _logp(x, s):
    m = x[f"mask({s})"]
    return {M: torch.where(m, x[f"logprobs({M}, {s})"], 0.0).sum(-1) for M in ("policy", "reference")}


def test_agreement_reports_examples_and_what_was_compared():
    r = equivalent("cdpo", "dpo", params_a={"label_smoothing": 0}, examples=50)
    assert r.passed and r.ran == 50 and r.counterexample is None
    assert r.compared == ("loss", "∇ logprobs(policy, chosen)", "∇ logprobs(policy, rejected)")
    assert "50 examples passed" in r.render() and "cdpo(label_smoothing=0)" in r.render()


def test_dpo_ipo_counterexample_losses_match_plain_torch():
    r = equivalent("dpo", "ipo", examples=50)
    assert not r.passed
    x = r.counterexample.inputs
    lc, lr = _logp(x, "chosen"), _logp(x, "rejected")
    delta = (lc["policy"] - lc["reference"]) - (lr["policy"] - lr["reference"])
    dpo = -F.logsigmoid(0.1 * delta).mean()
    n_c, n_r = x["mask(chosen)"].sum(-1), x["mask(rejected)"].sum(-1)
    ipo = (((lc["policy"] - lc["reference"]) / n_c - (lr["policy"] - lr["reference"]) / n_r - 5.0) ** 2).mean()
    assert r.counterexample.loss_a == pytest.approx(float(dpo), rel=1e-12)
    assert r.counterexample.loss_b == pytest.approx(float(ipo), rel=1e-12)
    text = r.render()
    assert "NOT equivalent" in text and "counterexample (shrunk by hypothesis)" in text
    assert "max |∇a − ∇b|" in text and "logprobs(policy, chosen)" in text


def test_equal_losses_different_gradients_is_a_disagreement():
    # cDPO(0.1) and DPO agree in value at z = 0 (both log 2) but not in gradient
    r = equivalent("cdpo", "dpo", examples=50, mode="value-and-gradient")
    ce = r.counterexample
    assert ce is not None and ce.grad_leaf is not None
    assert abs(ce.grad_a - ce.grad_b) > 1e-6
    assert equivalent("cdpo", "dpo", examples=20, mode="gradient").counterexample is not None


def test_same_seed_same_search():
    runs = [equivalent("grpo", "dapo", params_b={"epsilon_high": 0.2}, examples=100, seed=7) for _ in range(2)]
    assert runs[0].ran == runs[1].ran
    a, b = runs[0].counterexample.inputs, runs[1].counterexample.inputs
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(torch.nan_to_num(a[k].double(), nan=7.0), torch.nan_to_num(b[k].double(), nan=7.0)), k


def test_non_finite_values_agree_only_with_themselves():
    nan, inf = float("nan"), float("inf")
    a = torch.tensor([nan, inf, -inf, 1.0, 1.0, nan, 2.0])
    b = torch.tensor([nan, inf, -inf, 1.0 + 1e-12, nan, 1.0, inf])
    assert _agree(a, b, 1e-6, 1e-9).tolist() == [True, True, True, True, False, False, False]
    assert not bool(_agree(torch.tensor(inf), torch.tensor(-inf), 1e-6, 1e-9))


def test_leaves_only_one_side_reads_are_drawn_and_reported():
    r = equivalent("kto", "apo_zero_unpaired", examples=30, given=("reference_equals_policy=mismatched(completion)",))
    assert r.passed, r.render()
    assert r.only_a == ("logprobs(policy, mismatched(completion))", "logprobs(reference, mismatched(completion))",
                        "mask(mismatched(completion))")
    assert r.only_b == () and "only kto reads" in r.render()


def test_weighted_terms_and_renamed_sets():
    assert_equivalent("orpo", Term("sft", sets={"completion": "chosen"}), params_a={"beta": 0}, examples=30)
    r = equivalent("orpo", "sft", params_a={"beta": 0}, examples=10)
    assert r.only_b == ("logprobs(policy, completion)", "mask(completion)") and not r.passed


def test_assert_equivalent_raises_with_the_rendered_counterexample():
    with pytest.raises(AssertionError, match="counterexample"):
        assert_equivalent("dpo", "ipo", examples=20)


def test_incompatible_sides_and_bad_conditions_are_clear_errors():
    with pytest.raises(SideError, match="group size"):
        equivalent("grpo", "grpo", params_b={"num_generations": 4}, examples=5)
    with pytest.raises(ConditionError, match="did you mean `on_policy`"):
        equivalent("grpo", "dapo", given=("on_polciy",), examples=5)
    with pytest.raises(ConditionError, match="needs the input"):
        equivalent("dpo", "cdpo", given=("reference_below_policy=y",), examples=5)


def test_public_api_exports_equivalent():
    assert ptdsl.equivalent is equivalent


def test_an_adapter_builds_the_other_layout_from_the_drawn_pairs():
    """paired-to-unpaired stacks the chosen rows over the rejected rows, labelled true then false,
    keeping the gradient: apo_zero_unpaired's loss on the built inputs is a plain-torch mean over
    the 2N completions, and its gradient reaches the drawn chosen and rejected log-probs."""
    from ptdsl.equivalence.adapters import link
    from ptdsl.equivalence.sides import compile_side, terms_of
    a, b = compile_side(terms_of("apo_zero")), compile_side(terms_of("apo_zero_unpaired"))
    ln = link("paired-to-unpaired", a, b, ("apo_zero", "apo_zero_unpaired"))
    assert ln.source == "a" and "label" not in ln.table
    lp_c = torch.tensor([[-1.0, -2.0], [-0.5, 9.0]], dtype=torch.float64, requires_grad=True)
    lp_r = torch.tensor([[-3.0, 9.0, 9.0], [-0.25, -0.75, -1.0]], dtype=torch.float64, requires_grad=True)
    m_c, m_r = torch.tensor([[True, True], [True, False]]), torch.tensor([[True, False, False], [True, True, True]])
    x = {"logprobs(policy, chosen)": lp_c, "logprobs(policy, rejected)": lp_r, "mask(chosen)": m_c,
         "mask(rejected)": m_r, "logprobs(reference, chosen)": torch.zeros(2, 2, dtype=torch.float64),
         "logprobs(reference, rejected)": torch.zeros(2, 3, dtype=torch.float64)}
    built = ln.build(x)
    assert built["mask(completion)"].tolist() == [[True, True, False], [True, False, False],
                                                 [True, False, False], [True, True, True]]
    assert built["label"].tolist() == [True, True, False, False]
    loss = b[0].method.loss(built)[0]
    h = 0.1 * torch.stack([lp_c[0].sum(), lp_c[1, 0], lp_r[0, 0], lp_r[1].sum()])
    want = torch.cat([1 - torch.sigmoid(h[:2]), torch.sigmoid(h[2:])]).mean()
    assert torch.allclose(loss, want)
    g = torch.autograd.grad(loss, [lp_c, lp_r])
    assert g[0][0, 0] != 0 and g[1][1, 2] != 0 and g[0][1, 1] == 0  # masked-out positions get none


def test_adapter_errors_name_both_data_kinds_and_suggest_names():
    from ptdsl.equivalence.adapters import AdapterError
    with pytest.raises(AdapterError, match="unknown adapter `paired-to-unpaird` .*did you mean `paired-to-unpaired`"):
        equivalent("dpo", "kto", adapter="paired-to-unpaird")
    with pytest.raises(AdapterError, match="relates `preference` data with ranked lists, but `dpo` reads "
                                           "`preference` data and `kto` reads `unpaired` data"):
        equivalent("dpo", "kto", adapter="paired-to-ranked")
    with pytest.raises(AdapterError, match="`sft` data and a one-sample rollout"):
        equivalent("online_dpo", "dpo", adapter="paired-to-sample")
