"""The shared-prompt forward (runtime/prefix.py) equals the plain forward: hidden states,
per-token log-probs and every trainable parameter's gradient within 1e-5 in fp32, on
Llama, Qwen2, Mistral (sliding window shorter than the rows) and Gemma2 (alternating
sliding layers) configs built offline, with ragged prompts (left padding), ragged and
empty completions (right padding), pairs, groups of n and rows that share nothing."""
import pytest
import torch
import transformers as tf

from ptdsl import sharing
from ptdsl.runtime import prefix
from ptdsl.runtime.batch import SetRows, layout
from ptdsl.runtime.queries import Trunk, decoder, hidden_states, run_model, sharing_for

VOCAB, PAD = 97, 0
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD)


def _model(kind):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = tf.LlamaConfig(**SMALL)
    elif kind == "qwen2":
        cfg = tf.Qwen2Config(**SMALL)
    elif kind == "mistral":
        cfg = tf.MistralConfig(**SMALL, sliding_window=5)
    else:
        cfg = tf.Gemma2Config(**SMALL, head_dim=8, sliding_window=4, query_pre_attn_scalar=8)
    cfg._attn_implementation = "eager" if kind == "gemma2" else "sdpa"
    return tf.AutoModelForCausalLM.from_config(cfg).float().eval()


def _ids(g, n):
    return torch.randint(1, VOCAB, (n,), generator=g).tolist()


def _sets():
    """Two sets over the same 3 prompts (a preference pair, one empty completion), a group of 3
    samples of each of 2 prompts, and a set whose prompts nobody else has."""
    g = torch.Generator().manual_seed(1)
    p = [_ids(g, n) for n in (7, 4, 9)]
    chosen = SetRows(p, [_ids(g, 3), _ids(g, 6), []])
    rejected = SetRows(p, [_ids(g, 5), _ids(g, 2), _ids(g, 4)])
    q = [_ids(g, 6), _ids(g, 3)]
    group = SetRows([q[i // 3] for i in range(6)], [_ids(g, n) for n in (4, 1, 6, 2, 5, 3)])
    alone = SetRows([_ids(g, 8), _ids(g, 5)], [_ids(g, 3), _ids(g, 7)])
    return {"chosen": chosen, "rejected": rejected, "group": group, "alone": alone}


def _share(lay):
    """A Sharing whatever the rule says (the rule is tested on its own)."""
    first = {}
    for r, gid in enumerate(lay.prompt_groups):
        first.setdefault(gid, r)
    return prefix.Sharing(torch.tensor(list(first.values())), torch.tensor(lay.prompt_groups), lay.prompt_len)


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral", "gemma2"])
def test_hidden_states_and_gradients_match(kind):
    model, sets = _model(kind), _sets()
    lay = layout(sets, list(sets), PAD, "cpu")
    share = _share(lay)
    assert len(share.unique) == 7 and lay.input_ids.shape[0] == 14  # 3 pairs, 2 groups, 2 alone
    weight = torch.randn(lay.input_ids.shape + (32,), generator=torch.Generator().manual_seed(2))
    real = lay.attention_mask.bool()[..., None]  # padding columns' states are never read
    out = {}
    for mode in (None, share):
        h = Trunk(model)(lay.input_ids, lay.attention_mask, lay.position_ids, mode)
        out[mode is None] = (h.detach(), _grads(model, (h * weight * real).sum() / real.sum()))  # gradients O(1)
    (h0, g0), (h1, g1) = out[True], out[False]
    torch.testing.assert_close(h1 * real, h0 * real, atol=1e-5, rtol=1e-5)
    assert g0.keys() == g1.keys() and len(g0) == len(list(decoder(model).parameters()))  # all the body's
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-5, msg=n)


def _logprob_loss(model, sets, on, frozen=False):
    res = run_model(model, sets, list(sets), {s: ["logprobs"] for s in sets}, PAD, "cpu", frozen=frozen,
                    prefix_sharing=on)
    return {s: res[("logprobs", s)] for s in sets}


@pytest.mark.parametrize("kind", ["llama", "mistral"])
def test_logprobs_and_all_gradients_match(kind, monkeypatch):
    monkeypatch.setattr(sharing, "MIN_SAVED_FRACTION", 0.0)  # share whatever the lengths
    model, sets = _model(kind), _sets()
    results = []
    for on in (False, True):
        lp = _logprob_loss(model, sets, on)
        loss = sum((v * (i + 1)).sum() for i, v in enumerate(lp.values()))
        results.append(({s: v.detach() for s, v in lp.items()}, _grads(model, loss)))
    (lp0, g0), (lp1, g1) = results
    for s in sets:
        torch.testing.assert_close(lp1[s], lp0[s], atol=1e-5, rtol=1e-5)
    assert len(g0) == len(list(model.parameters()))  # the LM head's too (tied or not)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-5, msg=n)


def test_frozen_reference_under_inference_mode(monkeypatch):
    monkeypatch.setattr(sharing, "MIN_SAVED_FRACTION", 0.0)
    model, sets = _model("qwen2"), _sets()
    with torch.inference_mode():
        plain, shared = (_logprob_loss(model, sets, s, frozen=True) for s in (False, True))
    for s in sets:
        assert shared[s].is_inference()
        torch.testing.assert_close(shared[s], plain[s], atol=1e-5, rtol=1e-5)


def test_lora_policy_and_its_adapter_disabled_base(monkeypatch):
    peft = pytest.importorskip("peft")
    from ptdsl.runtime.setup import AdapterDisabled
    monkeypatch.setattr(sharing, "MIN_SAVED_FRACTION", 0.0)
    lm = peft.get_peft_model(_model("llama"), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    sets = _sets()
    results = []
    for on in (False, True):
        lp = _logprob_loss(lm, sets, on)
        results.append((lp["group"].detach(), _grads(lm, sum(v.sum() for v in lp.values()))))
        base = _logprob_loss(AdapterDisabled(lm), sets, on, frozen=True)["group"]
        results[-1] += (base,)
    (lp0, g0, b0), (lp1, g1, b1) = results
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b1, b0, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(b0, lp0)  # the adapters matter, so the base is really adapter-free
    assert g0 and all("lora_" in n for n in g0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-5, msg=n)


def test_rows_are_grouped_by_prompt_ids_whatever_their_set():
    sets = _sets()
    lay = layout(sets, list(sets), PAD, "cpu")
    assert lay.prompt_groups == [0, 1, 2, 0, 1, 2, 3, 3, 3, 4, 4, 4, 5, 6]


def test_the_rule_shares_long_prompts_not_short_ones():
    pairs = [0, 0, 1, 1]  # a DPO micro-batch of 2: saved (4 − 2) × P of 4 × (P + C)
    assert sharing.pays(pairs, prompt_len=64, completion_len=16)       # saved 0.40
    assert not sharing.pays(pairs, prompt_len=8, completion_len=64)    # saved 0.06
    assert sharing.pays(pairs, prompt_len=16, completion_len=64)       # saved 0.10
    assert not sharing.pays([0, 1, 2, 3], prompt_len=64, completion_len=1)  # nothing shared
    assert sharing.pays([0] * 8, prompt_len=16, completion_len=64)     # a group of 8: 0.18


def test_off_and_unshareable_models_use_the_plain_forward(monkeypatch):
    monkeypatch.setattr(sharing, "MIN_SAVED_FRACTION", 0.0)
    model, sets = _model("llama"), _sets()
    lay = layout(sets, list(sets), PAD, "cpu")
    assert sharing_for(model, lay) is not None and sharing_for(model, lay, enabled=False) is None
    model.config.layer_types = ["full_attention", "linear_attention", "full_attention"]
    assert sharing_for(model, lay) is None
    h = hidden_states(model, lay, None)
    assert h.shape[:2] == lay.input_ids.shape


class _Losses:
    def __init__(self):
        self.losses = []

    def on_step_end(self, step, metrics):
        self.losses.append(metrics["loss"])


@pytest.mark.integration
@pytest.mark.parametrize("method,params", [("dpo", {}), ("grpo", {"num_generations": 4})])
def test_training_with_and_without_sharing_gives_the_same_losses(tmp_path, monkeypatch, method, params):
    """`ptdsl.train` end to end: the per-step losses with prefix sharing (forced on, and seen to run)
    equal those with `prefix_sharing=False` within 1e-5 (fp32)."""
    import ptdsl
    monkeypatch.setattr(sharing, "MIN_SAVED_FRACTION", 0.0)
    calls = []
    real = prefix.shared_forward
    monkeypatch.setattr("ptdsl.runtime.queries.shared_forward", lambda *a: calls.append(1) or real(*a))
    runs = {}
    for on in (True, False):
        cb = _Losses()
        ptdsl.train(method, output=str(tmp_path / str(on)), steps=3, batch_size=4, max_examples=32, params=params,
                    precompute=False, prefix_sharing=on, log_steps=1, callbacks=[cb], quiet=True)
        runs[on] = cb.losses
        if on:
            assert calls, "the shared forward never ran"
            calls.clear()
    assert not calls  # prefix_sharing=False: never
    assert len(runs[True]) == 3
    assert runs[True] == pytest.approx(runs[False], abs=1e-5, rel=1e-5)
