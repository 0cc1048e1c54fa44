"""The stable Python API: load, compile, SpecError, CompiledMethod's attributes."""
import networkx as nx
import pytest
import torch

import ptdsl
from ptdsl.equivalence.strategies import GARBAGE


def pref_inputs(dtype=torch.float64, garbage=0.0):
    m_c = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    m_r = torch.tensor([[1, 1], [1, 1]], dtype=torch.bool)
    def lp(vals, m):
        t = torch.tensor(vals, dtype=dtype)
        return torch.where(m, t, torch.full_like(t, garbage))
    return {
        "mask(chosen)": m_c, "mask(rejected)": m_r,
        "logprobs(policy, chosen)": lp([[-1.0, -2.0, -0.5], [-0.3, 9, 9]], m_c),
        "logprobs(reference, chosen)": lp([[-1.5, -2.0, -0.7], [-0.2, 9, 9]], m_c),
        "logprobs(policy, rejected)": lp([[-2.0, -1.0], [-0.1, -0.4]], m_r),
        "logprobs(reference, rejected)": lp([[-1.0, -1.0], [-0.3, -0.3]], m_r),
    }


def test_load_exposes_header_and_params():
    m = ptdsl.load("cdpo")
    assert (m.name, m.extends, m.data, m.stability) == ("cdpo", "dpo", "preference", "stable")
    p = m.params["label_smoothing"]
    assert p.default == 0.1 and p.constraint == "in [0, 0.5)"   # constraint inherited from dpo
    assert m.params["beta"].doc.startswith("inverse temperature")


def test_spec_error_carries_diagnostics(tmp_path):
    f = tmp_path / "bad.ptdsl"
    f.write_text('method bad "x"\ndata sft\npolicy\nloss mean(logp(policy, completon))\n')
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(str(f))
    (d,) = info.value.diagnostics
    assert d.code == "E0210" and d.span.line == 4 and d.span.col == 24
    assert d.help == "did you mean `completion`?"
    assert "bad.ptdsl:4:24" in str(info.value)


def test_unknown_override_is_rejected_with_suggestion():
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile("dpo", betaa=0.2)
    assert info.value.diagnostics[0].code == "E0402"
    assert info.value.diagnostics[0].help == "did you mean `beta`?"


def test_override_type_is_checked():
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile("grpo", num_generations=2.5)
    assert info.value.diagnostics[0].code == "E0403"
    assert ptdsl.compile("grpo", num_generations=4.0).params["num_generations"] == 4


def test_leaf_names_are_canonical_and_shared():
    dpo, ipo, simpo = (ptdsl.compile(n) for n in ("dpo", "ipo", "simpo"))
    names = {i.name for i in dpo.inputs}
    assert names == {i.name for i in ipo.inputs}
    assert {i.name for i in simpo.inputs} < names
    pol = next(i for i in dpo.inputs if i.name == "logprobs(policy, chosen)")
    assert (pol.kind, pol.level, pol.set, pol.model, pol.trainable) == \
        ("logprobs", "f32[token chosen]", "chosen", "policy", True)
    ref = next(i for i in dpo.inputs if i.name == "logprobs(reference, chosen)")
    assert not ref.trainable and ref.model == "reference"


def test_compiled_attributes():
    c = ptdsl.compile("dpo", beta=0.2)
    assert isinstance(c.graph, nx.DiGraph)
    assert c.params == {"beta": 0.2, "label_smoothing": 0.0}
    assert "def loss_fn" in c.source
    ref = [q for q in c.plan.queries if q.model == "reference"]
    assert ref and all(q.frozen and q.precomputable for q in ref)
    assert c.plan.forwards == {"policy": ("chosen", "rejected"), "reference": ("chosen", "rejected")}


def test_dpo_loss_by_hand():
    x = pref_inputs()
    loss, metrics = ptdsl.compile("dpo", beta=0.5).loss(x)
    hc = (-1 - 2 - 0.5) - (-1.5 - 2 - 0.7), -0.3 - (-0.2)
    hr = (-2 - 1) - (-1 - 1), (-0.1 - 0.4) - (-0.3 - 0.3)
    import math
    z = [0.5 * (hc[i] - hr[i]) for i in range(2)]
    want = sum(math.log1p(math.exp(-zi)) for zi in z) / 2
    assert abs(loss.item() - want) < 1e-12
    assert metrics["reward_accuracy"].item() == sum(zi > 0 for zi in z) / 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_loss_computes_in_input_dtype(dtype):
    c = ptdsl.compile("dpo")
    loss, metrics = c.loss(pref_inputs(dtype))
    assert loss.dtype == dtype and metrics["reward_margin"].dtype == dtype
    ref, _ = c.loss(pref_inputs(torch.float64))
    assert abs(loss.double().item() - ref.item()) < (1e-2 if dtype == torch.bfloat16 else 1e-5)


@pytest.mark.parametrize("garbage", GARBAGE)
def test_masked_positions_are_ignored(garbage):
    c = ptdsl.compile("dpo")
    clean = c.loss(pref_inputs())[0]
    x = pref_inputs(garbage=garbage)
    x["logprobs(policy, chosen)"].requires_grad_(True)
    loss = c.loss(x)[0]
    loss.backward()
    assert loss.item() == clean.item()
    g = x["logprobs(policy, chosen)"].grad
    assert torch.isfinite(g).all() and g[1, 1:].abs().sum() == 0


def test_missing_and_misshapen_inputs_are_named():
    c = ptdsl.compile("dpo")
    x = pref_inputs()
    del x["logprobs(reference, rejected)"]
    with pytest.raises(ptdsl.InputError, match=r"logprobs\(reference, rejected\)"):
        c.loss(x)
    x = pref_inputs()
    x["logprobs(policy, chosen)"] = x["logprobs(policy, chosen)"][:, :2]
    with pytest.raises(ptdsl.InputError, match="must align with their mask"):
        c.loss(x)
    x = pref_inputs()
    x["mask(rejected)"] = torch.ones(3, 2, dtype=torch.bool)
    with pytest.raises(ptdsl.InputError, match="disagree on the number of rows"):
        c.loss(x)


def test_group_rows_must_be_whole_groups():
    c = ptdsl.compile("grpo", num_generations=4)
    x = {"logprobs(policy, y)": torch.zeros(6, 2), "logprobs(old, y)": torch.zeros(6, 2),
         "mask(y)": torch.ones(6, 2, dtype=torch.bool), "r(y)": torch.zeros(6)}
    with pytest.raises(ptdsl.InputError, match="groups of n = 4"):
        c.loss(x)


def test_zero_beta_drops_the_reference_model():
    assert "reference" not in ptdsl.compile("grpo").plan.forwards
    assert ptdsl.compile("grpo", beta=0.04).plan.forwards["reference"] == ("y",)


def test_extends_overrides_loss_with_parent_lets():
    dr = ptdsl.compile("dr_grpo")
    assert dr.params["scale_rewards"] is False and dr.params["epsilon"] == 0.2
    g = dr.graph
    ops = {g.nodes[n]["op"] for n in nx.ancestors(g, g.graph["loss"])}
    assert "group_std" not in ops          # folded away: no std scaling in the loss
    assert "sum_tokens" in ops and "mean_tokens" not in ops


def test_import_does_not_load_torch():
    import subprocess
    import sys
    code = "import sys, ptdsl; ptdsl.compile('dpo'); sys.exit(3 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_rewards_register_after_a_plain_import():
    """README's `@ptdsl.rewards.register("accuracy")` works after `import ptdsl` alone (it
    raised AttributeError unless something had imported ptdsl.rewards), still without torch."""
    import subprocess
    import sys
    code = ("import sys, ptdsl\n"
            "@ptdsl.rewards.register('mine')\n"
            "def f(prompts, completions, **kw): return []\n"
            "from ptdsl.runtime.rewards import known_names\n"
            "sys.exit(3 if 'torch' in sys.modules else 0 if 'mine' in known_names() else 4)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
