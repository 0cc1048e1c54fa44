"""Nash-MD (METHODS.md O3): the loss against an independent plain-torch reference of
TRL's formula, and the geometric-mixture sampler against a cache-free reference.

Loss (TRL 1.10 `NashMDTrainer._compute_losses`, reward-model path):
  P = σ(r(y) − r(y_mix));  per row  β·Σₜ sg(ℓ_θ − ℓ_ref)ₜ·ℓ_θ,ₜ − (P − ½)·Σₜ ℓ_θ,ₜ;  batch mean.
Sampler: tokens from softmax((1 − μ)·z_θ + μ·z_ref), sampling options on the mixed logits.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import ptdsl
from ptdsl.runtime import embedded
from ptdsl.runtime.rollout import GeometricMixture, pick_tokens
from tests.helpers import assert_close, compiled, loss_and_grads
from tests.methods import strategies as S
from tests.reference_cases import REFERENCE, checks

LP, REF, MASK = "logprobs(policy, y)", "logprobs(reference, y)", "mask(y)"


def nash_md_reference(x, beta=0.1):
    m = x[MASK]
    lp = torch.where(m, x[LP], 0.0)
    ref = torch.where(m, x[REF], 0.0)
    p = torch.sigmoid(x["r(y)"] - x["r(y_mix)"])
    score = (p - 0.5) * lp.sum(1)
    log_ratio = (lp - ref).detach()
    return (beta * (log_ratio * lp).sum(1) - score).mean()


@st.composite
def nash_inputs(draw):
    x = draw(S.preference_inputs())  # two sequence sets with ragged masks and garbage; one is y
    rows = x["mask(chosen)"].shape[0]
    rewards = st.lists(st.floats(-1, 2, width=64), min_size=rows, max_size=rows)
    return {LP: x["logprobs(policy, chosen)"], REF: x["logprobs(reference, chosen)"], MASK: x["mask(chosen)"],
            "r(y)": torch.tensor(draw(rewards), dtype=torch.float64),
            "r(y_mix)": torch.tensor(draw(rewards), dtype=torch.float64)}


@checks(REFERENCE, "nash_md")
@pytest.mark.parametrize("beta", [0.1, 0.0, 1.5])
@settings(max_examples=60, deadline=None)
@given(x=nash_inputs())
def test_nash_md_matches_trl_formula(beta, x):
    c = compiled("nash_md", beta=beta)
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, [LP])
    want, want_g = loss_and_grads(lambda i: nash_md_reference(i, beta), x, [LP])
    assert_close(got, want, rtol=1e-6, what="nash_md loss")
    assert_close(got_g[LP], want_g[LP], rtol=1e-6, what="nash_md grad")


def test_a_mixture_is_sampled_not_queried(tmp_path):
    from ptdsl import library
    text = library.find("nash_md").read_text().replace("logprobs(reference, y)", "logprobs(mixture, y)")
    (tmp_path / "bad.ptdsl").write_text(text)
    with pytest.raises(ptdsl.SpecError) as err:
        ptdsl.compile(ptdsl.load(str(tmp_path / "bad.ptdsl")))
    assert any(d.code == "E0210" and "sampled from, not queried" in d.message for d in err.value.diagnostics)


# ---- the sampler -------------------------------------------------------------------

def _models():
    tok = embedded.tokenizer()
    return tok, embedded.model(tok, seed=0).eval(), embedded.model(tok, seed=1).eval()


def _prompts(tok, texts):
    ids = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    P = max(map(len, ids))
    x = torch.full((len(ids), P), tok.pad_token_id)
    att = torch.zeros_like(x)
    for i, row in enumerate(ids):
        x[i, P - len(row):] = torch.tensor(row)
        att[i, P - len(row):] = 1
    return x, att


def _greedy_without_cache(a, b, coef, ids, att, steps):
    """The mixture's greedy continuation, recomputing both models on the whole prefix each step."""
    out = []
    for _ in range(steps):
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        za = a(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, -1]
        zb = b(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, -1]
        nxt = ((1 - coef) * za + coef * zb).argmax(-1)
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        att = torch.cat([att, torch.ones_like(att[:, :1])], 1)
    return torch.stack(out, 1)


GREEDY = dict(do_sample=False, max_new_tokens=6, eos_token_id=-1, pad_token_id=0)  # no EOS: all 6 tokens


@pytest.mark.parametrize("coef", [0.0, 0.3, 1.0])
@torch.inference_mode()
def test_mixture_greedy_matches_a_cache_free_reference(coef):
    tok, a, b = _models()
    ids, att = _prompts(tok, ["1+2=", "7+8=", "3*3=?"])   # ragged, left-padded prompts
    got = GeometricMixture(a, b, coef).generate(ids, att, GREEDY)
    want = _greedy_without_cache(a, b, coef, ids, att, 6)
    assert torch.equal(got, want)


@torch.inference_mode()
def test_mixture_at_the_ends_is_each_model_alone():
    tok, a, b = _models()
    ids, att = _prompts(tok, ["4+4=", "9+1="])
    gen = dict(max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    for coef, model in ((0.0, a), (1.0, b)):
        mine = GeometricMixture(a, b, coef).generate(ids, att, {**gen, "eos_token_id": -1})
        theirs = model.generate(input_ids=ids, attention_mask=att, **{**gen, "eos_token_id": None},
                                min_new_tokens=5, temperature=None, top_p=None, top_k=None)[:, ids.shape[1]:]
        assert torch.equal(mine, theirs)


@torch.inference_mode()
def test_mixture_samples_follow_the_mixed_distribution():
    tok, a, b = _models()
    ids, att = _prompts(tok, ["2+5="])
    coef, T = 0.4, 0.7
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    z = (1 - coef) * a(input_ids=ids, attention_mask=att, position_ids=pos).logits[0, -1] \
        + coef * b(input_ids=ids, attention_mask=att, position_ids=pos).logits[0, -1]
    want = torch.softmax(z / T, -1)
    n = 20000
    torch.manual_seed(0)
    gen = dict(do_sample=True, temperature=T, max_new_tokens=1, eos_token_id=-1, pad_token_id=0)
    first = GeometricMixture(a, b, coef).generate(ids.expand(n, -1), att.expand(n, -1), gen)[:, 0]
    freq = torch.bincount(first, minlength=len(want)).double() / n
    # 4 standard errors of a frequency, per token
    assert torch.all((freq - want).abs() <= 4 * (want * (1 - want) / n).sqrt() + 1e-3)


def test_pick_tokens_top_k_and_top_p_keep_the_best_tokens():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.manual_seed(0)
    many = lambda **g: {int(pick_tokens(z, {"do_sample": True, **g})) for _ in range(300)}
    assert many(top_k=1) == {0}
    assert many(top_k=2) == {0, 1}
    assert many(top_p=0.5) == {0}          # 0.5 alone reaches 0.5
    assert many(top_p=0.8) == {0, 1}       # 0.5 + 0.3
    assert many(top_p=0.81) == {0, 1, 2}
    assert int(pick_tokens(z, {"do_sample": False})) == 0


def test_mixture_coefficient_outside_0_1_is_a_spec_error():
    with pytest.raises(ptdsl.SpecError) as err:
        ptdsl.compile("nash_md", mixture_coef=1.5)
    assert any(d.code == "E0403" and "coef" in d.message for d in err.value.diagnostics)
