"""`ptdsl.train(..., callbacks=[...])`: the public way to observe the loop's own steps
(runtime/callbacks.py). The benchmarks time the product through it, so its contract is
tested here: every step seen once, in order, begin before the step's data is fetched,
end with the very record written to metrics.jsonl."""
import json

import pytest

from ptdsl.runtime import experience
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.loop import train


class Recorder:
    def __init__(self, events):
        self.events = events

    def on_step_begin(self, step):
        self.events.append(("begin", step))

    def on_step_end(self, step, metrics):
        self.events.append(("end", step, metrics))
        metrics["loss"] = "changed by a callback"  # a copy: the loop's record must not change


class EndOnly:
    def __init__(self):
        self.steps = []

    def on_step_end(self, step, metrics):
        self.steps.append(step)


@pytest.mark.integration
def test_callbacks_see_every_step_in_order_with_the_logged_metrics(tmp_path, monkeypatch):
    events = []
    fetch = experience.Experiences.minibatch

    def fetched(self, step):  # the loop fetches (or makes) the step's experience here
        events.append(("fetch", step))
        return fetch(self, step)

    monkeypatch.setattr(experience.Experiences, "minibatch", fetched)
    end_only = EndOnly()
    last = train("dpo", output=str(tmp_path), steps=3, batch_size=2, max_examples=8, quiet=True,
                 callbacks=[Recorder(events), end_only])
    assert [e[:2] for e in events] == [(k, s) for s in range(3) for k in ("begin", "fetch", "end")]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    seen = [e[2] for e in events if e[0] == "end"]
    assert [m["step"] for m in logged] == [1, 2, 3]
    assert all(m["loss"] == "changed by a callback" for m in seen)  # each callback got its own copy …
    for m, row in zip(seen, logged):
        assert {k: v for k, v in m.items() if k != "loss"} == {k: v for k, v in row.items() if k != "loss"}
    assert isinstance(last["loss"], float) and last["loss"] == logged[-1]["loss"]  # … and the loop kept its own
    assert end_only.steps == [0, 1, 2]


@pytest.mark.parametrize("callbacks, message", [
    ([EndOnly(), object()], "callbacks[1] (object) has neither `on_step_begin(step)` nor `on_step_end(step, metrics)`"),
    ([EndOnly], "callbacks[0] is the class `EndOnly`, not an object"),  # its hook would be unbound
    (EndOnly(), "callbacks must be a list or tuple of objects, got EndOnly"),
])
def test_a_bad_callback_is_reported_before_anything_loads(tmp_path, callbacks, message):
    with pytest.raises(RuntimeSetupError) as err:
        train("dpo", output=str(tmp_path / "out"), steps=1, quiet=True, callbacks=callbacks)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()
