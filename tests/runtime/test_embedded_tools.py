"""The embedded default of episode methods (runtime/embedded_tools.py): its tokenizer renders and
reads tool calls with transformers' own machinery, its warm-up is deterministic and cached, the
warm-started model calls the calculator on some prompts, and `grpo_tools` trained on it learns to
call the tool more and to answer right more often."""
import json

import pytest
import torch

import ptdsl
from ptdsl.runtime import embedded_tools as ET
from ptdsl.runtime import generators as G
from ptdsl.runtime import tools
from ptdsl.runtime.calculator import Calculator, answer_reward
from ptdsl.runtime.episode import run_episodes
from ptdsl.runtime.episode_tokens import check_template, extension, render


@pytest.fixture(scope="module")
def tok():
    return ET.tokenizer()


def _schemas():
    return tools.toolbox(Calculator(), "calculator").schemas


def test_a_call_is_rendered_parsed_and_rendered_again_token_for_token(tok):
    check_template(tok)
    prompt = render(tok, [{"role": "user", "content": "372+458="}], _schemas(), True)
    turn = tok.encode('<call>calculate{expression:"372+458"}</call>', add_special_tokens=False) + [tok.eos_token_id]
    parsed = tools.parse_turn(tok, turn, prompt, _schemas())
    assert parsed.malformed is None and parsed.calls == [("calculate", {"expression": "372+458"})]
    assert tools.parser_name(tok) == "transformers response_template"
    messages = [{"role": "user", "content": "372+458="}, parsed.message,
                {"role": "tool", "name": "calculate", "content": "830"}]
    inserted, exact = extension(tok, prompt + turn, messages, 2, _schemas(), {tok.eos_token_id})
    assert exact and tok.convert_ids_to_tokens(inserted) == ["<result>", "8", "3", "0", "<bot>"]
    answer = tools.parse_turn(tok, tok.encode("830", add_special_tokens=False) + [tok.eos_token_id],
                              prompt + turn + inserted, _schemas())
    assert answer.calls == [] and answer.message["content"] == "830"


def test_an_unclosed_call_is_malformed_not_a_crash(tok):
    prompt = render(tok, [{"role": "user", "content": "1+2="}], _schemas(), True)
    turn = tok.encode('<call>calculate{expression:"1+2"', add_special_tokens=False) + [tok.eos_token_id]
    parsed = tools.parse_turn(tok, turn, prompt, _schemas())
    assert parsed.calls == [] and parsed.malformed


def test_demonstrations_train_only_the_assistants_tokens(tok):
    row = {"prompt": "964+494=", "answer": "1458"}
    ids, mask = ET.demonstration(tok, row, use_tool=True)
    words = tok.convert_ids_to_tokens(ids)
    taught = "".join(w for w, m in zip(words, mask) if m)
    assert taught == '<call>calculate{expression:"964+494"}</call></s>1458</s>'
    assert ids == render(tok, [{"role": "user", "content": "964+494="}, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calculate", "arguments": {"expression": "964+494"}}}]},
        {"role": "tool", "name": "calculate", "content": "1458"}, {"role": "assistant", "content": "1458"}],
        _schemas(), False)
    ids, mask = ET.demonstration(tok, row, use_tool=False)
    assert "".join(w for w, m in zip(tok.convert_ids_to_tokens(ids), mask) if m) == "1458</s>"


def test_the_task_needs_the_tool():
    rows = ET.dataset(200, seed=3)
    sums = [sum(map(int, r["prompt"].rstrip("=").split("+"))) for r in rows]
    assert all(len(r["prompt"]) == 8 and int(r["answer"]) == s for r, s in zip(rows, sums))
    assert ET.dataset(5, seed=3) == rows[:5] and ET.dataset(5, seed=4) != rows[:5]


def test_the_warm_up_is_deterministic_and_cached(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("PTDSL_CACHE", str(tmp_path / "cache"))
    said = []
    first = ET.model(tok, seed=5, log=said.append, steps=3)
    second = ET.model(tok, seed=5, log=said.append, steps=3)
    assert len(said) == 1 and "warming up" in said[0]  # the second came from the cache
    assert len(list((tmp_path / "cache" / "embedded-tools").glob("*.safetensors"))) == 1
    monkeypatch.setenv("PTDSL_CACHE", str(tmp_path / "other"))
    again = ET.model(tok, seed=5, log=said.append, steps=3)  # warmed up afresh: the same weights
    untrained = ET.embedded.model(tok, 5)
    for (name, a), b, c, d in zip(first.state_dict().items(), second.state_dict().values(),
                                  again.state_dict().values(), untrained.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c), name
    assert any(not torch.equal(a, d) for a, d in zip(first.state_dict().values(), untrained.state_dict().values()))


def test_a_cache_that_cannot_be_written_costs_only_the_warm_up(tok, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PTDSL_CACHE", str(blocker))
    said = []
    model = ET.model(tok, seed=1, log=said.append, steps=2)
    assert model is not None and any("could not cache" in s for s in said)


@pytest.mark.integration
def test_the_warm_started_model_calls_the_tool_on_some_prompts(tok):
    """Sampled episodes of the cached default model: some call the tool and most calls are well
    formed; answers after a call are right far more often than answers without one."""
    model = ET.model(tok, seed=0)
    gen = G.HFGenerator(model, tok, torch.device("cpu"))
    rows = ET.dataset(192, seed=99)
    torch.manual_seed(0)
    episodes = run_episodes(lambda p, n: gen.generate(p, n, G.Sampling()), tok, Calculator, rows, max_turns=3,
                            max_tokens=ET.MAX_EPISODE_TOKENS, tool_timeout=None)
    rewards = answer_reward(None, [e.completion_messages for e in episodes], [r["answer"] for r in rows])
    called = [r for r, e in zip(rewards, episodes) if e.tool_calls]
    direct = [r for r, e in zip(rewards, episodes) if not e.tool_calls]
    assert 0.25 <= len(called) / len(rows) <= 0.75  # seen: 0.51
    assert sum(sum(e.errors.values()) for e in episodes) <= 0.25 * len(called)
    assert sum(called) / len(called) > 0.6 and sum(called) / len(called) > 4 * sum(direct) / len(direct)  # 0.98, 0.01


@pytest.mark.integration
def test_grpo_tools_learns_to_call_the_calculator(tmp_path):
    """`ptdsl train grpo_tools` on the embedded default: tool calls per episode and the reward rise."""
    ptdsl.train("grpo_tools", steps=24, log_steps=1, output=str(tmp_path), seed=0)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "tool_calls" in r]
    first, last = rows[:4], rows[-6:]

    def mean(rs, key):
        return sum(r[key] for r in rs) / len(rs)
    assert mean(first, "tool_calls") < 0.75 and mean(last, "tool_calls") > 0.9  # seen: 0.58 → 0.99
    assert mean(last, "mean_reward") > mean(first, "mean_reward") + 0.15  # seen: 0.56 → 0.91
    assert all(r["turns"] >= 1 for r in rows) and mean(last, "turns") > mean(first, "turns")
    assert mean(last, "episode/tool_errors") < 0.2
