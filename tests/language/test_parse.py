"""`parse` caches its ASTs (they are immutable): a library parent is parsed once, not once
per child; a failure is not cached, and different paths give different spans."""
import pytest

from ptdsl.syntax.parse import ParseFailed, parse

TEXT = 'method m "m"\ndata sft\npolicy\nloss -mean(logp(policy, completion))\n'


def test_same_text_same_ast():
    a, b = parse(TEXT, "a.ptdsl"), parse(TEXT, "a.ptdsl")
    assert a is b and parse("\ufeff" + TEXT, "a.ptdsl") is a


def test_path_is_part_of_the_key():
    assert parse(TEXT, "b.ptdsl").statements[0].span.file == "b.ptdsl"


def test_failures_raise_every_time():
    for _ in range(2):
        with pytest.raises(ParseFailed):
            parse(TEXT + "loss (", "a.ptdsl")
