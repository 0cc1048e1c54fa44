"""`rollout y = episode(policy, environment("NAME"), …)`: the language accepts and checks it,
environments are bound before step 1, and a training run plays episodes whose tool and
template tokens are context (never in the set's mask), scores them with the environment's
reward, and logs turns, tool calls and tool errors per step."""
import json

import pytest

import ptdsl
from ptdsl.diagnostics import SpecError
from ptdsl.runtime import episode_rollout
from ptdsl.runtime.batch import set_mask
from ptdsl.runtime.episode import Generation
from ptdsl.runtime.errors import RuntimeSetupError
from tests.tool_tokenizers import tiny_llama, tool_tokenizer

SPEC = """method ep "episodes"
experimental
data prompts
policy
reward r = environment("counter")
param n = 2 >= 1
rollout y = episode(policy, environment("counter"), n = n, max_turns = 3, max_tokens = 160)
let adv = r(y) - group_mean(r(y))
loss mean(mean_tokens(-adv * logprobs(policy, y)))
metric mean_reward = mean(r(y))
metric policy_tokens = mean(length(y))
metric calls = mean(tool_calls(y))
metric answer_tokens = mean(sum_tokens(where(turn(y) == turns(y) - 1, 1.0, 0.0)))
"""


class Counter:
    """A TRL-style environment: one tool; the reward is 1 once it was called."""

    def reset(self, **row):
        self.calls, self.answer = 0, row.get("answer")

    def bump(self, amount: int) -> str:
        """Add to the counter.

        Args:
            amount: how much to add.
        """
        self.calls += 1
        return f"counter is {self.calls * amount}"

    def get_reward(self) -> float:
        return float(self.calls > 0)


def _spec(tmp_path, text=SPEC):
    path = tmp_path / "ep.ptdsl"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("change, code, says", [
    (('episode(policy, environment("counter"), n', 'episode(policy, "counter", n'), "E0212",
     'must be `episode(MODEL, environment("NAME"), …)`'),
    (('episode(policy, environment("counter"), n = n, max_turns = 3, max_tokens = 160)', 'sample(policy, n = n)'),
     "E0210", "reward `r` reads environment `counter`'s reward, and `y` is sampled by `sample`"),
    (('episode(policy, environment("counter")', 'episode(policy, environment("other")'), "E0210",
     "and `y` plays environment `other`"),
    (("max_turns = 3", "on_policy = 0.5"), "E0209", "`episode` has no option `on_policy`"),
    (("max_turns = 3", "max_turns = 0"), "E0403", "option `max_turns` must be ≥ 1, got 0"),
])
def test_the_language_checks_episodes(tmp_path, change, code, says):
    with pytest.raises(SpecError) as info:
        ptdsl.compile(_spec(tmp_path, SPEC.replace(*change)))
    assert code in str(info.value) and says in str(info.value)


def test_turn_values_read_only_episodes(tmp_path):
    text = SPEC.replace('episode(policy, environment("counter"), n = n, max_turns = 3, max_tokens = 160)',
                        'sample(policy, n = n)').replace('environment("counter")', 'verifier("accuracy")')
    with pytest.raises(SpecError) as info:
        ptdsl.compile(_spec(tmp_path, text))
    assert "`tool_calls` reads what an episode did, and `y` is not an episode" in str(info.value)
    assert "`turn` reads what an episode did" in str(info.value)


def test_an_episode_compiles_to_a_rollout_with_its_environment(tmp_path):
    plan = ptdsl.compile(_spec(tmp_path)).plan
    (y,) = plan.rollouts.values()
    assert (y.kind, y.env, y.options) == ("episode", "counter", {"n": 2, "max_turns": 3, "max_tokens": 160})
    assert episode_rollout.uses(plan) == ["counter"]


def _model(tok):
    return tiny_llama(tok, layers=1)


def _data(tmp_path, k=4):
    rows = [{"prompt": [{"role": "user", "content": f"What is {a} plus 2?"}], "answer": str(a + 2)} for a in range(k)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_environments_are_bound_before_step_1(tmp_path):
    plan = ptdsl.compile(_spec(tmp_path)).plan
    tok = tool_tokenizer()
    with pytest.raises(RuntimeSetupError, match=r"unknown environment `counter` \(known: calculator\)"):
        episode_rollout.bind(plan, [], tok)
    with pytest.raises(RuntimeSetupError, match="--env binds `extra`, which the method does not play"):
        episode_rollout.bind(plan, {"counter": Counter, "extra": Counter}, tok)
    with pytest.raises(RuntimeSetupError, match="episodes need one with tool support"):
        from ptdsl.runtime import embedded
        episode_rollout.bind(plan, {"counter": Counter}, embedded.tokenizer())
    dpo = ptdsl.compile("dpo").plan
    with pytest.raises(RuntimeSetupError, match="--env is given, but the method plays no episode"):
        episode_rollout.bind(dpo, ["counter=mod:Counter"], tok)
    assert set(episode_rollout.bind(plan, {"counter": Counter}, tok)) == {"counter"}
    # a spec names an environment, never a module to import
    by_path = ptdsl.compile(_spec(tmp_path, SPEC.replace('environment("counter")', 'environment("os:getcwd")'))).plan
    with pytest.raises(RuntimeSetupError, match="the spec names environment `os:getcwd`, a module path"):
        episode_rollout.bind(by_path, [], tok)


class Scripted:
    """A generator (runtime/generators.py's interface) that calls the tool on an episode's first
    turn and answers on its second: the episode loop, the loss and the metrics see real token ids;
    only the choice of tokens is scripted."""

    def __init__(self, tok, call: str, answer: str):
        self.tok, self.version = tok, 0
        self.first = tok(f"<tool_call>\n{call}\n</tool_call>", add_special_tokens=False)["input_ids"] + \
            [tok.eos_token_id]
        self.then = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    def generate(self, prompts, limits, sampling):  # a conversation with a tool's reply gets the answer
        return [Generation((self.then if "<tool_response>" in self.tok.decode(p) else self.first)[:limit], None)
                for p, limit in zip(prompts, limits)]

    def sync(self, model):
        self.version += 1
        return self.version

    def close(self):
        pass


def _scripted(monkeypatch, tok, call: str, answer: str) -> Scripted:
    from ptdsl.runtime import generators
    scripted = Scripted(tok, call, answer)
    monkeypatch.setattr(generators, "make_generator", lambda *a, **kw: scripted)
    return scripted


@pytest.mark.integration
def test_a_run_plays_episodes_masks_tool_tokens_and_logs_tool_use(tmp_path, monkeypatch):
    tok = tool_tokenizer()
    scripted = _scripted(monkeypatch, tok, '{"name": "bump", "arguments": {"amount": 3}}', "It is 5.")
    first, then = scripted.first, scripted.then
    played = []
    play = episode_rollout.play

    def recording(*args, **kw):
        rows = play(*args, **kw)
        played.append(rows)
        return rows
    monkeypatch.setattr(episode_rollout, "play", recording)
    out = tmp_path / "out"
    result = ptdsl.train(_spec(tmp_path), model=_model(tok), tokenizer=tok, data=_data(tmp_path),
                         envs={"counter": Counter}, output=str(out), steps=2, batch_size=2, quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["episode/turns"], r["episode/tool_calls"], r["episode/tool_errors"], r["rewards/counter/mean"]) for r in rows] == \
        [(2.0, 1.0, 0.0, 1.0)] * 2
    assert result["mean_reward"] == 1.0
    y = played[0]
    assert len(y) == 4 and all(ep["reward"] == 1.0 and ep["messages"][1]["role"] == "tool" for ep in y.episodes)
    for completion, mask in zip(y.completion_ids, set_mask(y, max(len(c) for c in y.completion_ids))):
        policy = [t for t, m in zip(completion, mask.tolist()) if m]
        context = tok.decode([t for t, m in zip(completion, mask.tolist()) if not m])
        assert policy == first + then  # the set holds exactly what the policy sampled
        assert "counter is 3" in context and "It is 5" not in context  # the tool's reply is context
    # the loss reads the policy's tokens only: `length(y)` counts them
    assert rows[0]["policy_tokens"] == len(first + then)
    # what the episodes did, in the language: one call each, and the last turn's tokens are the answer's
    assert rows[0]["calls"] == 1.0 and rows[0]["answer_tokens"] == len(then)
    assert scripted.version == 1  # the generator was given the policy's weights before step 2's episodes


@pytest.mark.integration
def test_a_tool_that_raises_is_counted_and_the_run_goes_on(tmp_path, monkeypatch):
    tok = tool_tokenizer()
    _scripted(monkeypatch, tok, '{"name": "bump", "arguments": {"amount": "three"}}', "No idea.")
    out = tmp_path / "out"
    ptdsl.train(_spec(tmp_path), model=_model(tok), tokenizer=tok, data=_data(tmp_path), envs={"counter": Counter},
                output=str(out), steps=1, batch_size=2, quiet=True)
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert (row["episode/tool_calls"], row["episode/tool_errors"], row["rewards/counter/mean"]) == (1.0, 1.0, 0.0)


@pytest.mark.integration
def test_a_tiny_model_trains_on_episodes_from_the_command_line(tmp_path):
    """Sampled for real (transformers' generate): a random model rarely calls the tool, but the run
    plays its episodes, logs them and saves; the environment comes from --env."""
    import subprocess
    import sys
    from tests.runtime.test_train import ROOT
    tok = tool_tokenizer()
    _model(tok).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "envmod.py").write_text("from tests.runtime.test_episode_rollout import Counter\n")
    r = subprocess.run([sys.executable, "-m", "ptdsl", "train", _spec(tmp_path), "--model", str(tmp_path / "model"),
                        "--data", _data(tmp_path), "--env", "counter=envmod:Counter", "--steps", "2",
                        "--batch-size", "2", "--output", str(tmp_path / "out"), "--quiet"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(1.0 <= row["episode/turns"] <= 3.0 and "episode/tool_calls" in row for row in rows)
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
