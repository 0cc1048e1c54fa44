"""Every library method compiles to a training step that runs an optimizer step on
the embedded tiny model (online, distillation and reward-model methods included)."""
import math

import pytest

from ptdsl import library
from ptdsl.runtime.loop import train


@pytest.mark.integration
@pytest.mark.parametrize("name", library.all_names())
def test_one_optimizer_step(tmp_path, name):
    # the default path (reference precompute included) on a small slice of the embedded data
    metrics = train(name, output=str(tmp_path), steps=1, batch_size=4, max_examples=16, quiet=True)
    assert metrics["step"] == 1 and math.isfinite(metrics["loss"])
    # (the gradient may be zero: e.g. a group whose rewards are all equal has no advantage)
    assert math.isfinite(metrics.get("grad_norm", 0.0))
    assert (tmp_path / "final" / "config.json").exists()
