"""Memory options (issue 12 item 2): gradient checkpointing, the weights' dtype, the attention
implementation, and LoRA's target modules, dropout and a starting adapter. Each is checked by
what it does to the model and by the numbers it must leave unchanged."""
import json

import pytest
import torch
from safetensors.torch import load_file

import ptdsl
from ptdsl.runtime import embedded, loop

pytestmark = pytest.mark.integration
OPTS = dict(steps=3, batch_size=4, max_examples=16, learning_rate=1e-2, quiet=True, log_steps=1)


def _losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _layer_calls(model) -> list:
    """Calls of each layer's MLP: inside the layer's checkpointed forward, so a recomputation in
    backward calls it again (transformers keeps a layer's own hooks outside the checkpoint). A
    pre-hook: torch's recomputation stops early once the saved tensors are back, before the
    MLP's forward would return to a post-hook."""
    calls = []
    for layer in model.model.layers:
        layer.mlp.register_forward_pre_hook(lambda m, a: calls.append(1))
    return calls


def test_gradient_checkpointing_recomputes_layers_and_keeps_the_numbers(tmp_path):
    tok = embedded.tokenizer()
    plain, ckpt = embedded.model(tok, seed=4), embedded.model(tok, seed=4)
    plain_calls, ckpt_calls = _layer_calls(plain), _layer_calls(ckpt)
    ptdsl.train("sft", model=plain, tokenizer=tok, output=str(tmp_path / "a"), **OPTS)
    ptdsl.train("sft", model=ckpt, tokenizer=tok, output=str(tmp_path / "b"), gradient_checkpointing=True, **OPTS)
    assert len(ckpt_calls) == 2 * len(plain_calls) > 0  # every layer runs again in backward
    assert _losses(tmp_path / "b") == pytest.approx(_losses(tmp_path / "a"), rel=1e-6)
    assert ckpt.is_activation_checkpointing and ckpt.training


def test_torch_dtype_sets_the_weights_dtype(tmp_path):
    tok = embedded.tokenizer()
    path = tmp_path / "m"
    embedded.model(tok, seed=2).save_pretrained(path)
    tok.save_pretrained(path)
    r = ptdsl.train("sft", model=str(path), output=str(tmp_path / "o"), torch_dtype="bfloat16", **OPTS)
    assert {p.dtype for p in r.model.parameters()} == {torch.bfloat16}
    r = ptdsl.train("sft", output=str(tmp_path / "e"), torch_dtype="bfloat16", **OPTS)  # the embedded default too
    assert {p.dtype for p in r.model.parameters()} == {torch.bfloat16}


def test_attention_implementations_agree(tmp_path):
    runs = {}
    for attn in ("eager", "sdpa"):
        r = ptdsl.train("dpo", output=str(tmp_path / attn), attn_implementation=attn, **OPTS)
        assert r.model.config._attn_implementation == attn
        runs[attn] = _losses(tmp_path / attn)
    assert runs["eager"] == pytest.approx(runs["sdpa"], rel=1e-5)


def test_lora_target_modules_and_dropout(tmp_path):
    r = ptdsl.train("sft", output=str(tmp_path / "o"), lora_r=4, lora_target_modules="q_proj,v_proj",
                    lora_dropout=0.1, **OPTS)
    trainable = [n for n, p in r.model.named_parameters() if p.requires_grad]
    assert trainable and all(("q_proj.lora_" in n or "v_proj.lora_" in n) for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    drops = {n: m.p for n, m in r.model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert drops and all(p == 0.1 for n, p in drops.items() if "lora_dropout" in n)
    assert all(p == 0.0 for n, p in drops.items() if "lora_dropout" not in n) and r.model.training


def test_lora_path_continues_from_the_saved_adapter(tmp_path, monkeypatch):
    ptdsl.train("sft", output=str(tmp_path / "first"), lora_r=4, **OPTS)
    saved = load_file(str(tmp_path / "first" / "final" / "adapter_model.safetensors"))
    start = {}
    make = loop._adamw

    def adamw(params, lr, weight_decay):  # the adapter's weights as the first optimizer step finds them
        opt = make(params, lr, weight_decay)
        named = {id(p): n for n, p in result_model[0].named_parameters()}

        def first(o, a, k):
            if not start:
                start.update({named[id(p)]: p.detach().clone() for g in o.param_groups for p in g["params"]
                              if id(p) in named})
        opt.register_step_pre_hook(first)
        return opt
    result_model = []
    load = loop.load_models

    def load_models(*a, **k):
        models = load(*a, **k)
        result_model.append(models.policy)
        return models
    monkeypatch.setattr(loop, "_adamw", adamw)
    monkeypatch.setattr(loop, "load_models", load_models)
    ptdsl.train("sft", output=str(tmp_path / "second"), lora_path=str(tmp_path / "first" / "final"), **OPTS)
    # saved keys name the adapter without its name ("default"); the first step's pre-hook sees the
    # weights before that step's update: they are the saved ones
    got = {n.replace(".default", ""): t for n, t in start.items()}
    assert set(saved) == set(got)
    for k, v in saved.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("opts,message", [
    ({"lora_r": 4, "lora_target_modules": "no_such_proj"}, "--lora-target-modules no_such_proj"),
    ({"lora_path": "/nonexistent/adapter"}, "--lora-path /nonexistent/adapter"),
    ({"torch_dtype": "float8"}, "--torch-dtype float8"),
    ({"attn_implementation": "made_up"}, "--attn-implementation made_up"),
])
def test_bad_memory_options_are_setup_errors(tmp_path, opts, message):
    with pytest.raises(ptdsl.RuntimeSetupError, match=message):
        ptdsl.train("sft", output=str(tmp_path / "o"), steps=1, quiet=True, **opts)


def test_gradient_checkpointing_and_prompt_sharing_together_keep_the_numbers(tmp_path):
    """transformers drops the cache inside checkpointed layers, which the shared-prompt forward
    continues: with checkpointing the policy's forward encodes every prompt (the reference, under
    inference_mode, still shares), and the losses are those of the plain run."""
    a = ptdsl.train("dpo", output=str(tmp_path / "a"), **OPTS)
    b = ptdsl.train("dpo", output=str(tmp_path / "b"), gradient_checkpointing=True, **OPTS)
    assert b.model.training
    assert _losses(tmp_path / "b") == pytest.approx(_losses(tmp_path / "a"), rel=1e-5)
