"""Tools: schemas from TRL-convention environment classes, tool calls read with the tokenizer's
response template (or ptdsl's fallback), and every way a call can fail turned into a counted
tool result."""
from __future__ import annotations

import time

import pytest

from ptdsl.runtime import tools
from ptdsl.runtime.errors import RuntimeSetupError
from tests.tool_tokenizers import tool_tokenizer


class Shop:
    """A TRL-style environment: public methods are tools."""

    def reset(self, **row):
        self.stock = dict(row.get("stock", {"apple": 3}))

    def count(self, item: str) -> str:
        """How many of an item are in stock.

        Args:
            item: The item's name.
        """
        return str(self.stock.get(item, 0))

    def buy(self, item: str, n: int) -> str:
        """Buy items.

        Args:
            item: The item's name.
            n: How many.
        """
        if n > self.stock.get(item, 0):
            raise ValueError(f"only {self.stock.get(item, 0)} {item} left")
        self.stock[item] -= n
        return "ok"

    def price(self, item: str) -> float:
        """The unit price.

        Args:
            item: The item's name.
        """
        return 1.5

    def inventory(self) -> str:
        """The whole stock, as an object (not a string: a bad result)."""
        return dict(self.stock)

    def wait(self, seconds: float) -> str:
        """Wait.

        Args:
            seconds: How long.
        """
        time.sleep(seconds)
        return "waited"

    async def ping(self) -> str:
        """An async tool, as TRL allows."""
        return "pong"

    def get_reward(self) -> float:
        return 1.0

    def _helper(self):
        return None

    @property
    def broken(self):
        raise AssertionError("properties must not be evaluated when listing tools")


@pytest.fixture(scope="module")
def tok():
    return tool_tokenizer()


@pytest.fixture(scope="module")
def plain_tok():
    return tool_tokenizer(response_template=False)


@pytest.fixture
def box():
    env = Shop()
    env.reset()
    return tools.toolbox(env, "shop")


def test_tools_are_the_public_methods_with_transformers_schemas(box):
    from transformers.utils import get_json_schema
    assert list(box.methods) == ["buy", "count", "inventory", "ping", "price", "wait"]
    buy = next(s for s in box.schemas if s["function"]["name"] == "buy")
    assert buy == get_json_schema(Shop().buy)
    assert buy["function"]["parameters"]["properties"]["n"] == {"type": "integer", "description": "How many."}


def test_schemas_render_as_trl_renders_bound_methods(tok, box):
    """TRL passes the bound methods to apply_chat_template; our schemas render the same prompt."""
    env = Shop()
    msgs = [{"role": "user", "content": "Buy two apples."}]
    ours = tok.apply_chat_template(msgs, tools=box.schemas, add_generation_prompt=True, tokenize=False)
    trls = tok.apply_chat_template(msgs, tools=[getattr(env, n) for n in box.methods], add_generation_prompt=True,
                                   tokenize=False)
    assert ours == trls and '"name": "buy"' in ours


def test_a_tool_without_docstring_or_types_is_a_setup_error_naming_it():
    class NoDoc:
        def reset(self, **row):
            pass

        def look(self, where: str) -> str:
            return where

    class NoTypes:
        def reset(self, **row):
            pass

        def look(self, where) -> str:
            """Look.

            Args:
                where: Where.
            """
            return where
    with pytest.raises(RuntimeSetupError, match=r"tool `.*NoDoc.look` has no usable schema: .*no docstring"):
        tools.toolbox(NoDoc(), "nodoc")
    with pytest.raises(RuntimeSetupError, match=r"tool `.*NoTypes.look` has no usable schema: .*missing a type hint"):
        tools.toolbox(NoTypes(), "notypes")


def test_an_environment_without_reset_is_a_setup_error():
    class Bare:
        pass
    with pytest.raises(RuntimeSetupError, match=r"environment `bare` \(.*Bare\) has no `reset` method"):
        tools.toolbox(Bare(), "bare")


def test_parser_name_says_which_reader_is_used(tok, plain_tok):
    assert tools.parser_name(tok) == "transformers response_template"
    assert tools.parser_name(plain_tok) == tools.FALLBACK


def _turn(tok, text, schemas):
    prefix = tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=schemas, add_generation_prompt=True,
                                     tokenize=True, return_dict=False)
    return tools.parse_turn(tok, tok.encode(text, add_special_tokens=False), prefix, schemas)


@pytest.mark.parametrize("which", ["tok", "plain_tok"])
def test_both_readers_agree_on_calls_and_answers(which, request, box):
    tok = request.getfixturevalue(which)
    two = ('<tool_call>\n{"name": "buy", "arguments": {"item": "apple", "n": 2}}\n</tool_call>\n'
           '<tool_call>\n{"name": "count", "arguments": {"item": "apple"}}\n</tool_call><|im_end|>')
    parsed = _turn(tok, two, box.schemas)
    assert parsed.malformed is None
    assert parsed.calls == [("buy", {"item": "apple", "n": 2}), ("count", {"item": "apple"})]
    answer = _turn(tok, "There are 3 apples.<|im_end|>", box.schemas)
    assert answer.calls == [] and answer.message["content"] == "There are 3 apples."


@pytest.mark.parametrize("which", ["tok", "plain_tok"])
def test_unreadable_json_is_malformed_with_the_reason(which, request, box):
    tok = request.getfixturevalue(which)
    parsed = _turn(tok, '<tool_call>\n{"name": "buy", "arguments": {"n": }\n</tool_call><|im_end|>', box.schemas)
    assert parsed.calls == [] and "Expecting value" in parsed.malformed
    assert parsed.message["content"].startswith("<tool_call>")  # the raw text stays in the conversation


def test_fallback_rejects_an_unclosed_call(plain_tok, box):
    parsed = _turn(plain_tok, '<tool_call>\n{"name": "count"<|im_end|>', box.schemas)
    assert parsed.malformed == "a <tool_call> without </tool_call>"


def test_a_working_call_returns_its_string(box):
    r = tools.run(box, "buy", {"item": "apple", "n": 2}, timeout=5)
    assert r.error is None and r.message == {"role": "tool", "name": "buy", "content": "ok"}
    assert tools.run(box, "count", {"item": "apple"}, timeout=None).message["content"] == "1"


def test_numbers_become_strings_and_async_tools_run(box):
    assert tools.run(box, "price", {"item": "apple"}, timeout=5).message["content"] == "1.5"
    assert tools.run(box, "ping", {}, timeout=5).message["content"] == "pong"


@pytest.mark.parametrize("name, args, kind, text", [
    ("steal", {}, "unknown_tool",
     "Error: unknown tool `steal`; the tools are: buy, count, inventory, ping, price, wait"),
    ("buy", {"item": "apple"}, "bad_arguments", "Error: wrong arguments for `buy`: missing a required argument: 'n'"),
    ("count", {"item": "apple", "colour": "red"}, "bad_arguments",
     "Error: wrong arguments for `count`: got an unexpected keyword argument 'colour'"),
    ("buy", {"item": "apple", "n": "two"}, "bad_arguments",
     "Error: wrong arguments for `buy`: `n` should be integer, got str 'two'"),
    ("count", ["apple"], "bad_arguments",
     "Error: wrong arguments for `count`: expected an object of arguments, got list"),
    ("buy", {"item": "apple", "n": 9}, "tool_raised", "Error: `buy` raised ValueError: only 3 apple left"),
    ("inventory", {}, "bad_result", "Error: `inventory` returned a dict, not a string"),
])
def test_each_failure_is_a_tool_result_with_its_kind(box, name, args, kind, text):
    r = tools.run(box, name, args, timeout=5)
    assert (r.error, r.message) == (kind, {"role": "tool", "name": name, "content": text})


def test_a_raising_tool_reports_its_own_traceback(box):
    r = tools.run(box, "buy", {"item": "apple", "n": 9}, timeout=5)
    assert "test_tools.py" in r.report and 'raise ValueError(f"only' in r.report
    assert r.report.startswith("tool `buy` raised ValueError: only 3 apple left:\n    File")
    assert "env_calls.py" not in r.report and r.report.endswith("ValueError: only 3 apple left")


def test_a_hanging_tool_times_out_and_the_call_returns_promptly(box):
    start = time.monotonic()
    r = tools.run(box, "wait", {"seconds": 3.0}, timeout=0.2)
    assert time.monotonic() - start < 1.5
    assert (r.error, r.message["content"]) == ("timeout", "Error: `wait` did not return within 0.2 s")


def test_malformed_result_tells_the_model_the_format():
    r = tools.malformed("Expecting value")
    assert (r.error, r.message["content"]) == ("malformed", "Error: the tool call could not be read (Expecting value)")


def test_calls_reuse_one_worker_until_one_times_out():
    """A call with a timeout runs in a reused worker thread (a thread per call cost ~1 ms each);
    a call that times out abandons its worker, the next call gets a fresh one, and the abandoned
    worker ends once the hung call returns."""
    import threading
    from ptdsl.runtime import env_calls
    release = threading.Event()

    def ident():
        return threading.get_ident()

    first, second = (env_calls.call(ident, {}, 5).value for _ in range(2))
    assert first == second != threading.get_ident()
    hung = env_calls.call(lambda: (release.wait(5), threading.current_thread())[1], {}, 0.1)
    assert hung.timed_out
    fresh = env_calls.call(ident, {}, 5).value
    assert fresh != first
    abandoned = next(t for t in threading.enumerate() if t.ident == first)
    release.set()
    abandoned.join(5)
    assert not abandoned.is_alive()
    assert env_calls.call(ident, {}, 5).value == fresh
