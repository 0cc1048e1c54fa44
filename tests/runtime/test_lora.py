"""With LoRA (peft), a frozen(policy) reference is the base model with adapters
disabled — no copy — and gives exactly the base model's log-probs; training moves the
adapters and leaves every base weight bitwise as it was."""
import pytest
import torch

import ptdsl

peft = pytest.importorskip("peft")

from ptdsl.runtime import embedded  # noqa: E402
from ptdsl.runtime.setup import AdapterDisabled, load_examples, load_models  # noqa: E402
from ptdsl.runtime.step import StepContext, build_batch, loss_inputs  # noqa: E402


def test_reference_is_the_adapter_disabled_base():
    c = ptdsl.compile("dpo")
    models = load_models(c, None, seed=0, lora_r=4)
    assert isinstance(models.frozen["reference"], AdapterDisabled)
    with torch.no_grad():  # move the adapters away from their zero start
        for name, p in models.policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    examples = load_examples(c, None, models.tokenizer, 64, None, 0, log=lambda m: None)[:4]
    batch = build_batch(c, examples)
    x = loss_inputs(StepContext(c, models, "cpu", {}, {}), batch)
    base = embedded.model(models.tokenizer, seed=0)
    plain = load_models(c, None, seed=0)
    plain.policy.load_state_dict(base.state_dict())
    y = loss_inputs(StepContext(c, plain, "cpu", {}, {}), batch)
    torch.testing.assert_close(x["logprobs(reference, chosen)"], y["logprobs(policy, chosen)"].detach())
    assert not torch.allclose(x["logprobs(policy, chosen)"], y["logprobs(policy, chosen)"])


@pytest.mark.integration
def test_lora_trains_only_adapters(tmp_path, monkeypatch):
    """After training, every base weight is bitwise the embedded model's (which a fresh build
    gives independently), every adapter tensor moved, and final/ holds exactly the adapters
    as trained."""
    from safetensors.torch import load_file

    from ptdsl.runtime import loop
    loaded, start = [], {}

    def spy(*args, **kw):
        models = load_models(*args, **kw)
        start.update({n: p.detach().clone() for n, p in models.policy.named_parameters()})
        loaded.append(models)
        return models
    monkeypatch.setattr(loop, "load_models", spy)
    loop.train("dpo", output=str(tmp_path), steps=3, lora_r=4, max_examples=64, quiet=True)
    trained = {n: p.detach() for n, p in loaded[0].policy.named_parameters()}
    adapters = sorted(n for n in trained if "lora_" in n)
    # peft's names: base_model.model.<name>, a wrapped linear's weight under `.base_layer`
    base = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
            for n, p in trained.items() if "lora_" not in n}
    fresh = embedded.model(embedded.tokenizer(), seed=0).state_dict()
    assert adapters and base.keys() == fresh.keys()
    changed = [n for n in base if not torch.equal(base[n], fresh[n])]
    assert not changed, f"LoRA training changed base weights: {changed[:5]}"
    still = [n for n in adapters if torch.equal(trained[n], start[n])]
    assert not still, f"adapters that did not move: {still[:5]}"
    saved = load_file(str(tmp_path / "final" / "adapter_model.safetensors"))
    assert len(saved) == len(adapters)
    for name, tensor in saved.items():  # peft saves `…lora_A.weight` for the adapter named `…lora_A.default.weight`
        torch.testing.assert_close(tensor, trained[name.replace(".weight", ".default.weight")], rtol=0, atol=0)
