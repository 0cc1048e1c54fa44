"""Multi-turn episodes (ptdsl/runtime/episode.py) with a real Qwen 2.5 chat template and a
scripted generator: the policy's turns are fixed texts, so every token of the result can be
checked against what the script generated and what the template inserts."""
from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdsl.runtime import environments
from ptdsl.runtime.episode import Generation, run_episodes
from ptdsl.runtime.episode_tokens import render
from ptdsl.runtime.errors import RuntimeSetupError
from tests.tool_tokenizers import tool_tokenizer

CALL = '<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'
END = "<|im_end|>"


def call(name, args):
    return CALL.format(name=name, args=args)


def inserted(*results):
    """What Qwen 2.5's template writes after a tool turn, by hand from the template's text."""
    body = "".join(f"\n<tool_response>\n{r}\n</tool_response>" for r in results)
    return f"\n<|im_start|>user{body}<|im_end|>\n<|im_start|>assistant\n"


class Scripted:
    """A generator playing fixed turns: each prompt gets the next turn of the script whose key
    (a question) it contains. A turn is a text (encoded as the tokenizer would) or token ids.
    Log-probs are -0.01, -0.02, … per turn, so their placement can be checked."""

    def __init__(self, tok, scripts: dict, logprobs: bool = True, header: str = "<|im_start|>assistant"):
        self.tok, self.scripts, self.logprobs, self.header = tok, scripts, logprobs, header
        self.calls, self.generated = [], {k: [] for k in scripts}

    def __call__(self, prompts, limits):
        self.calls.append(([list(p) for p in prompts], list(limits)))
        out = []
        for p in prompts:
            text = self.tok.decode(p)
            key = next(k for k in self.scripts if k in text)
            turn = self.scripts[key][text.count(self.header) - 1]  # generation headers so far
            ids = self.tok.encode(turn, add_special_tokens=False) if isinstance(turn, str) else list(turn)
            self.generated[key].append(ids)
            out.append(Generation(ids, [-(i + 1) / 100 for i in range(len(ids))] if self.logprobs else None))
        return out


def row(question, **columns):
    return {"prompt": [{"role": "user", "content": question}], **columns}


def spans(ep, mask_value):
    """The completion's maximal runs of tokens with `mask_value`, as id lists."""
    runs, current = [], []
    for t, m in zip(ep.completion_ids, ep.token_mask):
        if m == mask_value:
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.fixture(scope="module")
def tok():
    return tool_tokenizer()


@pytest.fixture(scope="module")
def plain_tok():
    return tool_tokenizer(response_template=False)


CALC = environments.resolve("calculator")
ROWS = [row("What is 12 * 34?", answer="408"), row("Say hi.", answer="")]


def calculator_script():
    return {"12 * 34": [call("calculate", '{"expression": "12 * 34"}') + END, "The answer is 408." + END],
            "Say hi": ["Hi!" + END]}


@pytest.mark.parametrize("which", ["tok", "plain_tok"])
def test_masks_cover_exactly_the_generated_tokens(which, request):
    tok = request.getfixturevalue(which)
    gen = Scripted(tok, calculator_script())
    a, b = run_episodes(gen, tok, CALC, ROWS, max_turns=4, max_tokens=200)
    assert spans(a, 1) == gen.generated["12 * 34"] and spans(b, 1) == gen.generated["Say hi"]
    assert [tok.decode(s) for s in spans(a, 0)] == [inserted("408")] and spans(b, 0) == []
    assert a.turn_ids == [0] * (len(gen.generated["12 * 34"][0]) + len(spans(a, 0)[0])) + \
        [1] * len(gen.generated["12 * 34"][1])
    assert (a.turns, a.tool_calls, a.truncated, dict(a.errors), a.refitted) == (2, 1, None, {}, 0)
    assert (b.turns, b.tool_calls, b.truncated) == (1, 0, None)
    assert a.completion_messages == a.messages[1:] and a.messages[-2:] == [
        {"role": "tool", "name": "calculate", "content": "408"}, {"role": "assistant", "content": "The answer is 408."}]
    assert b.completion_messages == [{"role": "assistant", "content": "Hi!"}]


def test_turns_are_batched_and_limits_are_the_remaining_budget(tok):
    gen = Scripted(tok, calculator_script())
    a, b = run_episodes(gen, tok, CALC, ROWS, max_turns=4, max_tokens=200)
    (first, limits0), (second, limits1) = gen.calls
    assert first == [a.prompt_ids, b.prompt_ids] and limits0 == [200, 200]
    n = len(gen.generated["12 * 34"][0]) + len(spans(a, 0)[0])
    assert second == [a.prompt_ids + a.completion_ids[:n]] and limits1 == [200 - n]


def test_prompt_plus_completion_is_the_chat_template_rendering(tok):
    gen = Scripted(tok, calculator_script())
    for ep in run_episodes(gen, tok, CALC, ROWS, max_turns=4, max_tokens=200):
        final = render(tok, ep.messages, _calc_schemas(), False)
        sequence = ep.prompt_ids + ep.completion_ids
        assert final[:len(sequence)] == sequence and tok.decode(final[len(sequence):]) == "\n"
        assert ep.prompt_ids == render(tok, ep.messages[:1], _calc_schemas(), True)


def _calc_schemas():
    from ptdsl.runtime.tools import toolbox
    return toolbox(CALC(), "calculator").schemas


def test_sampler_logprobs_align_with_the_policy_tokens(tok):
    gen = Scripted(tok, calculator_script())
    a, _ = run_episodes(gen, tok, CALC, ROWS, max_turns=4, max_tokens=200)
    want = []
    for turn_ids, gap in zip(gen.generated["12 * 34"], spans(a, 0) + [[]]):
        want += [-(i + 1) / 100 for i in range(len(turn_ids))] + [0.0] * len(gap)
    assert a.logprobs == want and len(a.logprobs) == len(a.completion_ids)
    a2, _ = run_episodes(Scripted(tok, calculator_script(), logprobs=False), tok, CALC, ROWS, max_turns=4,
                         max_tokens=200)
    assert a2.logprobs is None and a2.completion_ids == a.completion_ids


def test_a_tokenization_the_template_would_not_produce_keeps_the_sampled_tokens(tok):
    """The policy spells its call one character per token: re-rendering does not extend the
    sequence, so the inserted tokens come from TRL's fallback and the sampled ids stay."""
    text = call("calculate", '{"expression": "12 * 34"}')
    odd = [i for ch in text for i in tok.encode(ch, add_special_tokens=False)] + [tok.eos_token_id]
    assert odd != tok.encode(text + END, add_special_tokens=False)
    gen = Scripted(tok, {"12 * 34": [odd, "408." + END]})
    ep, = run_episodes(gen, tok, CALC, ROWS[:1], max_turns=4, max_tokens=300)
    assert spans(ep, 1) == gen.generated["12 * 34"] and ep.refitted == 1
    assert [tok.decode(s) for s in spans(ep, 0)] == [inserted("408")]
    assert ep.truncated is None and ep.messages[2]["content"] == "408"


class Faulty:
    """Tools that fail in each way a tool can."""

    def reset(self, **row):
        return None

    def boom(self) -> str:
        """Fail."""
        raise KeyError("lost the ledger")

    def slow(self) -> str:
        """Hang."""
        time.sleep(5)
        return "late"

    def blob(self) -> str:
        """Return an object."""
        return {"not": "a string"}

    def number(self) -> str:
        """Return a number."""
        return 42

    def echo(self, text: str) -> str:
        """Echo.

        Args:
            text: What to echo.
        """
        return text


def test_each_error_kind_is_counted_and_returned_to_the_model(tok):
    turn0 = "".join([call("boom", "{}"), call("slow", "{}"), call("blob", "{}"), call("number", "{}"),
                     call("nope", "{}"), call("echo", '{"words": "x"}'), call("echo", '{"text": 5}')]) + END
    turn1 = '<tool_call>\n{"name": "echo", "arguments": {"text": }\n</tool_call>' + END
    gen = Scripted(tok, {"faults": [turn0, turn1, "Giving up." + END]})
    start = time.monotonic()
    ep, = run_episodes(gen, tok, Faulty, [row("faults")], max_turns=4, max_tokens=2000, tool_timeout=0.3)
    assert time.monotonic() - start < 3
    assert dict(ep.errors) == {"tool_raised": 1, "timeout": 1, "bad_result": 1, "unknown_tool": 1,
                               "bad_arguments": 2, "malformed": 1}
    assert (ep.tool_calls, ep.turns, ep.truncated) == (8, 3, None)
    results = [m["content"] for m in ep.messages if m["role"] == "tool"]
    assert results[:5] == ["Error: `boom` raised KeyError: 'lost the ledger'",
                           "Error: `slow` did not return within 0.3 s",
                           "Error: `blob` returned a dict, not a string", "42",
                           "Error: unknown tool `nope`; the tools are: blob, boom, echo, number, slow"]
    assert results[5].startswith("Error: wrong arguments for `echo`: missing a required argument")
    assert results[6] == "Error: wrong arguments for `echo`: `text` should be string, got int 5"
    assert results[7] == ("Error: the tool call could not be read (ValueError: json parser could not parse region as "
                          "JSON. Error: Expecting value: line 2 column 40 (char 40))")
    assert [tok.decode(s) for s in spans(ep, 0)][0] == inserted(*results[:7])
    # the environment's failures are reported with its traceback; the model's own mistakes only counted
    assert len(ep.reports) == 3 and 'raise KeyError("lost the ledger")' in ep.reports[0]
    assert ep.reports[0].startswith("environment `Faulty` on row 0: tool `boom` raised KeyError: 'lost the ledger':\n"
                                    '    File "') and "test_episode.py" in ep.reports[0]
    assert ep.reports[1] == ("environment `Faulty` on row 0: tool `slow` did not return within 0.3 s "
                             "(its thread is abandoned)")


class Broken:
    """An environment whose reset or reward fails according to the row."""

    def reset(self, **row):
        self.row = row
        if row["mode"] == "reset_raises":
            raise RuntimeError("no such puzzle")
        if row["mode"] == "observation_list":
            return ["not", "text"]
        if row["mode"] == "observation":
            return " (hint: 7)"
        return None

    def get_reward(self):
        mode = self.row["mode"]
        if mode == "reward_raises":
            raise ZeroDivisionError("score of nothing")
        if mode == "reward_hangs":
            time.sleep(5)
        return {"reward_nan": math.nan, "reward_inf": math.inf, "reward_text": "high"}.get(mode, 0.5)


def test_environment_failures_are_reported_with_its_traceback_and_the_row(tok, caplog):
    modes = ["ok", "reset_raises", "observation_list", "observation", "reward_raises", "reward_hangs",
             "reward_nan", "reward_inf", "reward_text"]
    rows = [row(f"case {m}", mode=m) for m in modes]
    gen = Scripted(tok, {f"case {m}": ["Done." + END] for m in modes})
    with caplog.at_level("WARNING", logger="ptdsl.episodes"):
        eps = dict(zip(modes, run_episodes(gen, tok, environments.Environment("broken", Broken), rows, max_turns=2,
                                           max_tokens=50, tool_timeout=0.3,
                                           row_labels=[f"row {i + 1} of data.jsonl" for i in range(len(rows))])))
    assert (eps["ok"].reward, eps["ok"].truncated, eps["ok"].reports) == (0.5, None, [])
    bad = eps["reset_raises"]
    assert (bad.truncated, dict(bad.errors), bad.completion_ids, bad.turns) == ("env_error", {"reset_error": 1}, [], 0)
    assert bad.prompt_ids == render(tok, [rows[1]["prompt"][0]], [], True) and bad.reward is None  # not scored
    assert bad.reports[0].startswith("environment `broken` on row 2 of data.jsonl: failed in reset: raised "
                                     "RuntimeError: no such puzzle:")
    assert 'raise RuntimeError("no such puzzle")' in bad.reports[0] and "test_episode.py" in bad.reports[0]
    assert (eps["observation_list"].truncated, dict(eps["observation_list"].errors)) == ("env_error",
                                                                                        {"bad_observation": 1})
    assert eps["observation"].messages[0]["content"] == "case observation (hint: 7)"
    assert "case observation (hint: 7)" in tok.decode(eps["observation"].prompt_ids)
    for mode, kind in [("reward_raises", "reward_error"), ("reward_hangs", "reward_error"),
                       ("reward_nan", "reward_nan"), ("reward_inf", "reward_error"), ("reward_text", "reward_error")]:
        assert (eps[mode].reward, dict(eps[mode].errors), eps[mode].truncated) == (None, {kind: 1}, None), mode
    assert "ZeroDivisionError: score of nothing" in eps["reward_raises"].reports[0]
    assert "did not return within 0.3 s" in eps["reward_hangs"].reports[0]
    assert "get_reward returned 'high', not a finite number" in eps["reward_text"].reports[0]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 4  # the first of each kind: reset_error, bad_observation, reward_error, reward_nan


def test_an_environment_that_never_lets_go_is_truncated_at_max_turns(tok):
    gen = Scripted(tok, {"loop": [call("calculate", '{"expression": "1 + 1"}') + END] * 3})
    ep, = run_episodes(gen, tok, CALC, [row("loop")], max_turns=3, max_tokens=1000)
    assert (ep.turns, ep.tool_calls, ep.truncated) == (3, 2, "max_turns")
    assert spans(ep, 1) == gen.generated["loop"] and len(spans(ep, 0)) == 2
    assert ep.messages[-1]["role"] == "assistant"  # the last turn's call was not run: no turn left to read it


def test_a_turn_past_the_budget_is_cut_and_the_episode_truncated(tok):
    long = "The answer is certainly four hundred and eight, as computed." + END
    n = len(tok.encode(long, add_special_tokens=False))
    gen = Scripted(tok, {"12 * 34": [long]})  # the script ignores the limit: the loop cuts it
    ep, = run_episodes(gen, tok, CALC, ROWS[:1], max_turns=4, max_tokens=n - 5)
    assert ep.completion_ids == gen.generated["12 * 34"][0][:n - 5] and ep.truncated == "budget"
    assert len(ep.logprobs) == n - 5


def test_tool_results_that_do_not_fit_the_budget_are_dropped(tok):
    turn0 = call("calculate", '{"expression": "12 * 34"}') + END
    n = len(tok.encode(turn0, add_special_tokens=False))
    gen = Scripted(tok, {"12 * 34": [turn0, "408" + END]})
    ep, = run_episodes(gen, tok, CALC, ROWS[:1], max_turns=4, max_tokens=n + 10)  # the insert is longer
    assert ep.completion_ids == gen.generated["12 * 34"][0] and ep.token_mask == [1] * n
    assert (ep.truncated, ep.tool_calls, ep.messages[-1]["role"], len(gen.calls)) == ("budget", 1, "assistant", 1)


def test_rows_without_a_usable_prompt_are_all_reported(tok):
    rows = [row("fine"), {"prompt": 3}, {"prompt": []}, "text"]
    with pytest.raises(RuntimeSetupError, match=r"3 episode row\(s\) without a usable prompt: row 1: `prompt` is "
                                                 r"int 3; row 2: `prompt` is list \[\]; row 3: a str, not a mapping"):
        run_episodes(Scripted(tok, {}), tok, CALC, rows, max_turns=2, max_tokens=10)


class GuessTheNumber:
    """An environment written for TRL's GRPOTrainer(environment_factory=GuessTheNumber), in its
    documented convention: reset(**row) gets the row and returns the first observation, public
    methods are tools, get_reward() scores the episode from the instance's state."""

    def __init__(self):
        self.secret = None
        self.solved = False

    def reset(self, **kwargs) -> str | None:
        self.secret, self.solved, self.guesses = int(kwargs["secret"]), False, 0
        return " I am thinking of a number between 1 and 10."

    def guess(self, number: int) -> str:
        """Guess the secret number.

        Args:
            number: Your guess, between 1 and 10.

        Returns:
            Whether the secret is higher, lower, or your guess is correct.
        """
        self.guesses += 1
        if number == self.secret:
            self.solved = True
            return "correct"
        return "higher" if number < self.secret else "lower"

    def get_reward(self) -> float:
        return 1.0 / self.guesses if self.solved else 0.0


def test_a_trl_style_environment_class_works_unchanged(tok):
    gen = Scripted(tok, {"Find it": [call("guess", '{"number": 5}') + END, call("guess", '{"number": 8}') + END,
                                     "It is 8." + END]})
    ep, = run_episodes(gen, tok, GuessTheNumber, [{"prompt": [{"role": "user", "content": "Find it."}], "secret": 8}],
                       max_turns=5, max_tokens=500)
    assert [m["content"] for m in ep.messages if m["role"] == "tool"] == ["higher", "correct"]
    assert (ep.reward, ep.turns, ep.tool_calls, ep.truncated) == (0.5, 3, 2, None)
    assert ep.messages[0]["content"] == "Find it. I am thinking of a number between 1 and 10."
    assert [tok.decode(s) for s in spans(ep, 0)] == [inserted("higher"), inserted("correct")]


def test_a_string_prompt_is_a_user_message(tok):
    gen = Scripted(tok, {"Say hi": ["Hi!" + END]})
    ep, = run_episodes(gen, tok, CALC, [{"prompt": "Say hi."}], max_turns=1, max_tokens=20)
    assert ep.messages[0] == {"role": "user", "content": "Say hi."} and ep.truncated is None


def test_an_observation_joins_a_message_of_content_parts_as_a_text_part(tok):
    class Hinted:
        def reset(self, **row):
            return " (hint)"
    rows = [{"prompt": [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]}]
    captured = []

    def generate(prompts, limits):
        captured.extend(prompts)
        return [Generation(tok.encode("Hi!" + END, add_special_tokens=False))]
    parts = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}"
             "{% else %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %}"
             "{% for c in m.tool_calls or [] %}{{ c.function.name }}{% endfor %}<|im_end|>\n{% endfor %}"
             "<|im_start|>assistant\n")  # Qwen 2.5's is text-only: a template for parts (and tools)
    ep, = run_episodes(generate, tok, Hinted, rows, max_turns=1, max_tokens=20,
                       template_kwargs={"chat_template": parts})
    # (jinja drops the template's final newline)
    assert tok.decode(ep.prompt_ids) == "<|im_start|>user\nSay hi. (hint)<|im_end|>\n<|im_start|>assistant"
    assert ep.messages[0]["content"] == [{"type": "text", "text": "Say hi."}, {"type": "text", "text": " (hint)"}]
    assert ep.logprobs is None and ep.truncated is None and captured == [ep.prompt_ids]


@pytest.mark.parametrize("outs, message", [
    ([], "generate returned 0 results for 1 prompts"),
    ([Generation([1, 2], [0.0])], "generate returned 1 log-probs for 2 tokens"),
])
def test_a_generator_breaking_the_interface_is_a_plain_error(tok, outs, message):
    with pytest.raises(RuntimeError, match=message):
        run_episodes(lambda prompts, limits: outs, tok, CALC, [row("x")], max_turns=1, max_tokens=20)


def test_a_chat_template_without_tool_support_is_refused_before_generating(tok):
    from tests.chat_tokenizers import chat_tokenizer
    plain = chat_tokenizer("chatml")  # renders only role and content: a tool call would vanish
    with pytest.raises(RuntimeSetupError, match=r"the chat template of `test-chatml` drops the tool call or the "
                                                 r"tool result: episodes need one with tool support"):
        run_episodes(Scripted(plain, {}), plain, CALC, [row("x")], max_turns=2, max_tokens=10)


LLAMA_INSERT = "<|start_header_id|>ipython<|end_header_id|>\n\n{}<|eot_id|>"
LLAMA_HEADER = "<|start_header_id|>assistant"


def test_llama_3_1_template_tool_turn_is_an_exact_extension():
    """Llama 3.1's format: tools in the first user message, a call as {"name", "parameters"}, the
    result in an `ipython` turn (its template writes a string result as JSON: "408")."""
    tok = tool_tokenizer("llama3.1")
    one = '{"name": "calculate", "parameters": {"expression": "12 * 34"}}<|eot_id|>'
    gen = Scripted(tok, {"12 * 34": [one, "The answer is 408.<|eot_id|>"]}, header=LLAMA_HEADER)
    ep, = run_episodes(gen, tok, CALC, ROWS[:1], max_turns=4, max_tokens=300, stop_ids=[tok.eos_token_id])
    assert (ep.turns, ep.tool_calls, ep.truncated, dict(ep.errors), ep.refitted) == (2, 1, None, {}, 0)
    assert spans(ep, 1) == gen.generated["12 * 34"]
    assert [tok.decode(s) for s in spans(ep, 0)] == [LLAMA_INSERT.format('"408"') + "<|start_header_id|>assistant"
                                                     "<|end_header_id|>\n\n"]
    assert ep.prompt_ids + ep.completion_ids == render(tok, ep.messages, _calc_schemas(), False)


def test_a_turn_the_template_cannot_render_takes_trls_suffix():
    """Two calls in one turn (read by ptdsl's fallback reader): Llama 3.1's template raises on the
    re-rendering, so the inserted tokens come from the stand-in conversation."""
    tok = tool_tokenizer("llama3.1", response_template=False)
    two = call("calculate", '{"expression": "12 * 34"}') + call("calculate", '{"expression": "1 + 1"}') + "<|eot_id|>"
    gen = Scripted(tok, {"12 * 34": [two, "408<|eot_id|>"]}, header=LLAMA_HEADER)
    ep, = run_episodes(gen, tok, CALC, ROWS[:1], max_turns=4, max_tokens=300)
    assert (ep.tool_calls, ep.refitted, ep.truncated, dict(ep.errors)) == (2, 1, None, {})
    assert spans(ep, 1) == gen.generated["12 * 34"]
    assert [tok.decode(s) for s in spans(ep, 0)] == [LLAMA_INSERT.format('"408"') + LLAMA_INSERT.format('"2"') +
                                                     "<|start_header_id|>assistant<|end_header_id|>\n\n"]


TURNS = st.one_of(
    st.just(("answer", None)),
    st.tuples(st.just("call"), st.tuples(st.integers(0, 99), st.integers(0, 99))),
    st.just(("unknown", None)),
    st.just(("malformed", None)))


def _turn_text(kind, arg):
    if kind == "answer":
        return "Done." + END, None
    if kind == "call":
        return call("calculate", f'{{"expression": "{arg[0]} + {arg[1]}"}}') + END, str(arg[0] + arg[1])
    if kind == "unknown":
        return call("add", '{"a": 1}') + END, "Error: unknown tool `add`; the tools are: calculate"
    return "<tool_call>\n{oops}\n</tool_call>" + END, "Error: the tool call could not be read"


@settings(max_examples=25)
@given(script=st.lists(TURNS, min_size=1, max_size=5), max_turns=st.integers(1, 5), budget=st.integers(1, 160))
def test_episode_invariants_hold_for_any_script_and_budget(tok, script, max_turns, budget):
    """Whatever the policy does and however tight the limits: the arrays align, the budget holds,
    the policy's tokens are exactly what it generated (cut at the budget), every inserted span is
    the template's tool turn for the results expected, and the sequence is the template's."""
    texts = [_turn_text(*t) for t in script] + [("Done." + END, None)] * 5
    gen = Scripted(tok, {"12 * 34": [t for t, _ in texts]})
    ep, = run_episodes(gen, tok, CALC, ROWS[:1], max_turns=max_turns, max_tokens=budget)
    n = len(ep.completion_ids)
    assert len(ep.token_mask) == len(ep.turn_ids) == len(ep.logprobs) == n <= budget
    assert 1 <= ep.turns <= max_turns and ep.turn_ids == sorted(ep.turn_ids)
    sampled = [t for t, m in zip(ep.completion_ids, ep.token_mask) if m]
    generated = [i for ids in gen.generated["12 * 34"] for i in ids]
    assert sampled == generated[:len(sampled)] and sum(map(len, gen.generated["12 * 34"])) >= len(sampled)
    for turn, span in enumerate(spans(ep, 0)):
        expected = texts[turn][1]
        text = tok.decode(span)
        assert text.startswith(inserted(expected)[:-len("</tool_response><|im_end|>\n<|im_start|>assistant\n")])
        assert text.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert len(spans(ep, 0)) == ep.turns - 1 or ep.truncated in ("budget", "max_turns")
    if ep.truncated is None:
        assert script[ep.turns - 1][0] == "answer" if ep.turns <= len(script) else True
    final = render(tok, ep.messages, _calc_schemas(), False)
    assert final[:len(ep.prompt_ids) + n] == ep.prompt_ids + ep.completion_ids or ep.truncated == "budget"


def test_the_howto_example_environment_runs_an_episode(tok, root):
    """docs/howto/environments.md's class, as written there."""
    text = (root / "docs/howto/environments.md").read_text()
    namespace = {}
    exec(text.split("```python\n")[1].split("```")[0], namespace)  # our own documentation, not user text
    gen = Scripted(tok, {"Find it": [call("guess", '{"number": 3}') + END, "3" + END]})
    ep, = run_episodes(gen, tok, namespace["GuessTheNumber"], [{"prompt": "Find it.", "secret": 3}], max_turns=3,
                       max_tokens=300)
    assert (ep.reward, ep.tool_calls, ep.messages[2]["content"]) == (1.0, 1, "correct")


def test_tokens_after_the_stop_token_are_dropped(tok):
    """A batched generator pads a finished turn after its stop token: the turn ends at the stop."""
    ids = tok.encode("Hi!" + END, add_special_tokens=False)
    pads = [tok.pad_token_id] * 3
    ep, = run_episodes(lambda prompts, limits: [Generation(ids + pads, [-0.5] * (len(ids) + 3))], tok, CALC,
                       [row("Say hi.")], max_turns=2, max_tokens=50)
    assert (ep.completion_ids, ep.logprobs, ep.truncated) == (ids, [-0.5] * len(ids), None)
