"""A*-PO (METHODS.md G36; TRL 1.16 `trl.experimental.a2po`).

(a) The loss against an independent plain-torch reference of the formula:
    V*(x) = β₁·(logsumexp(r(y_ref)/β₁) − log N) over the N reference samples of x;
    prompts whose N rewards sum to 0 are left out (filter_all_incorrect);
    loss = mean over kept prompts of (β₂·Σₜ(ℓ_θ − ℓ_ref) − (r(y) − V*))².
(b) Stage 2 against TRL's own `A2POTrainer.compute_loss`, driven through a thin
    harness: a trainer made without `__init__` (its stage 1 needs generation), and a
    stand-in model whose logits make TRL's `selective_log_softmax` return the given
    per-token log-probs (two-token vocabulary: the target at logit 0, the other at
    log((1 − p)/p)). TRL's dataset holds only the kept prompts, so it sees those rows,
    with V* from the formula in (a).
(c) The reference samples are drawn once per prompt and reused (`once = true`).
"""
from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

import ptdsl
from ptdsl.equivalence.strategies import inputs as leaf_inputs
from tests.helpers import assert_close, compiled, loss_and_grads
from tests.reference_cases import REFERENCE, TRL, checks
from tests.trl_harness import needs_trl

LP, REF, MASK = "logprobs(policy, y)", "logprobs(reference, y)", "mask(y)"


def _parts(x, n, beta1):
    m = x[MASK]
    h = (torch.where(m, x[LP], 0.0) - torch.where(m, x[REF], 0.0)).sum(1)
    r_ref = x["r(y_ref)"].view(-1, n)
    v_star = beta1 * (torch.logsumexp(r_ref / beta1, 1) - math.log(n))
    keep = r_ref.sum(1) != 0
    return h, v_star, keep


def a_star_po_reference(x, n, beta1=0.5, beta2=1e-3, filter_all_incorrect=True):
    h, v_star, keep = _parts(x, n, beta1)
    if not filter_all_incorrect:
        keep = torch.ones_like(keep)
    sq = (beta2 * h - (x["r(y)"] - v_star)) ** 2
    return torch.where(keep, sq, 0.0).sum() / keep.sum().clamp(min=1)


def _draw(data, c):
    x = data.draw(leaf_inputs([c.graph], max_rows=4, max_prompts=3))
    if data.draw(st.booleans()):  # binary rewards, so whole groups are sometimes all incorrect
        x["r(y_ref)"] = (x["r(y_ref)"] > 0.8).to(x["r(y_ref)"].dtype)
    return x


CASES = [(8, {}), (3, {"beta1": 0.2, "beta2": 0.05}), (2, {"filter_all_incorrect": False})]


@checks(REFERENCE, "a_star_po")
@pytest.mark.parametrize("n,params", CASES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_star_po_matches_reference(n, params, data):
    c = compiled("a_star_po", num_value_samples=n, **params)
    x = _draw(data, c)
    got, got_g = loss_and_grads(lambda i: c.loss(i)[0], x, [LP])
    want, want_g = loss_and_grads(lambda i: a_star_po_reference(i, n, **params), x, [LP])
    assert_close(got, want, rtol=1e-6, what="a_star_po loss")
    assert_close(got_g[LP], want_g[LP], rtol=1e-6, what="a_star_po grad")


class _LogprobLM:
    """Logits over a two-token vocabulary whose log-softmax at token 0 is the given log-prob."""

    def __init__(self, prompt_len):
        self.prompt_len, self.lp = prompt_len, None

    def __call__(self, input_ids=None, attention_mask=None, **_):
        p = self.lp.exp()
        other = torch.log1p(-p) - self.lp               # softmax([0, other])[0] = p
        step = torch.stack([torch.zeros_like(other), other], -1)
        pad = torch.zeros(self.lp.shape[0], self.prompt_len, 2, dtype=step.dtype)
        # column P − 1 + t scores completion token t; TRL drops the last column
        return SimpleNamespace(logits=torch.cat([pad[:, :-1], step, pad[:, :1]], 1))


def _trl_loss(x, keep, v_star, beta2):
    from trl.experimental.a2po import A2POTrainer
    trainer = object.__new__(A2POTrainer)
    trainer.args = SimpleNamespace(beta2=beta2)
    trainer.model = SimpleNamespace(training=True)
    trainer.model_kwarg_keys = set()
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    m = x[MASK][keep]
    rows, T = m.shape
    model = _LogprobLM(prompt_len=2)
    model.lp = torch.where(m, x[LP][keep], -1.0)       # masked-out positions: any finite value
    ref = torch.where(m, x[REF][keep], 0.0).sum(1)
    ids = torch.zeros(rows, 2 + T, dtype=torch.long)   # completion tokens are token 0
    att = torch.cat([torch.ones(rows, 2, dtype=torch.long), m.long()], 1)
    inputs = {"input_ids": ids, "attention_mask": att, "logits_to_keep": T, "ref_logps": ref,
              "rewards": x["r(y)"][keep], "v_star": v_star[keep]}
    return trainer.compute_loss(model, inputs), model


@needs_trl
@checks(TRL, "a_star_po")
@pytest.mark.parametrize("n,params", CASES[:2])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_star_po_matches_trl_stage_two(n, params, data):
    c = compiled("a_star_po", num_value_samples=n, **params)
    x = _draw(data, c)
    _, v_star, keep = _parts(x, n, c.params["beta1"])
    assume(keep.any())  # TRL's stage two has nothing to compare when every group is filtered out
    lp = x[LP].detach().clone().requires_grad_(True)
    ours = c.loss({**x, LP: lp})[0]
    (g_ours,) = torch.autograd.grad(ours, lp)
    lp_trl = x[LP].detach().clone().requires_grad_(True)
    theirs, _ = _trl_loss({**x, LP: lp_trl}, keep, v_star, c.params["beta2"])
    (g_trl,) = torch.autograd.grad(theirs, lp_trl)
    assert_close(ours.detach(), theirs.detach(), rtol=1e-6, what="loss vs TRL")
    m = x[MASK]
    assert_close(torch.where(m, g_ours, 0.0), torch.where(m, g_trl, 0.0), rtol=1e-6, what="grad vs TRL")


@needs_trl
def test_trl_defaults_match_spec_params(tmp_path):
    from trl.experimental.a2po import A2POConfig
    cfg = A2POConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    p = ptdsl.compile("a_star_po").params
    assert (cfg.beta1, cfg.beta2, cfg.num_value_samples, cfg.filter_all_incorrect, cfg.temperature,
            cfg.max_completion_length) == (p["beta1"], p["beta2"], p["num_value_samples"], p["filter_all_incorrect"],
                                           p["temperature"], p["max_completion_length"])


@pytest.mark.integration
def test_reference_samples_are_drawn_once_per_prompt(tmp_path, monkeypatch):
    from ptdsl.runtime import rollout
    from ptdsl.runtime.loop import train
    calls = defaultdict(int)
    real = rollout.sample

    def counting(model, tok, examples, spec, *a, **k):
        if spec.name == "y_ref":
            for e in examples:
                calls[e.index] += 1
        return real(model, tok, examples, spec, *a, **k)
    monkeypatch.setattr(rollout, "sample", counting)
    # 16 prompts, 4 per step, 8 steps: two epochs, every prompt seen twice
    train("a_star_po", output=str(tmp_path), steps=8, batch_size=4, max_examples=16, quiet=True,
          params={"num_value_samples": 2})
    assert len(calls) == 16 and set(calls.values()) == {1}


def test_once_draws_are_seeded_per_prompt():
    from ptdsl.runtime import embedded, rollout
    from ptdsl.runtime.setup import load_examples, load_models
    c = ptdsl.compile("a_star_po", num_value_samples=3)
    models = load_models(c, None, 0)
    ex = load_examples(c, None, models.tokenizer, 64, None, 0, log=lambda m: None)[:4]
    spec = c.plan.rollouts["y_ref"]
    ref = models.frozen["reference"]
    first = rollout.sample_once({}, ref, models.tokenizer, ex, spec, "cpu", {"max_tokens": 4}, seed=0)
    torch.manual_seed(123)  # the global generator does not matter
    again = rollout.sample_once({}, ref, models.tokenizer, ex[::-1], spec, "cpu", {"max_tokens": 4}, seed=0)
    back = [again.completion_ids[i * 3:(i + 1) * 3] for i in range(4)][::-1]
    assert [c for part in back for c in part] == first.completion_ids
    other = rollout.sample_once({}, ref, models.tokenizer, ex, spec, "cpu", {"max_tokens": 4}, seed=1)
    assert other.completion_ids != first.completion_ids


def test_once_is_only_for_models_that_never_change(tmp_path):
    path = tmp_path / "m.ptdsl"
    path.write_text('method m "m"\ndata prompts\npolicy\nreward r = verifier("accuracy")\n'
                    'rollout y = sample(policy, n = 2, once = true)\nloss -mean(r(y) * logp(policy, y))\n')
    with pytest.raises(ptdsl.SpecError) as err:
        ptdsl.compile(ptdsl.load(str(path)))
    assert any(d.code == "E0403" and "once" in d.message for d in err.value.diagnostics)
