"""With LoRA (peft), a frozen(policy) reference is the base model with adapters
disabled — no copy — and gives exactly the base model's log-probs."""
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


def test_lora_trains_only_adapters(tmp_path):
    from ptdsl.runtime.loop import train
    train("dpo", output=str(tmp_path), steps=3, lora_r=4, quiet=True)
    assert (tmp_path / "final" / "adapter_config.json").exists()
