"""Dataset formats (TRL's), field checks and tokenisation, without a model."""
import pytest

from ptdsl.runtime import embedded
from ptdsl.runtime.data import Chat, normalise, tokenize
from ptdsl.runtime.datafiles import Table
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.setup import load_tokenizer
from ptdsl.runtime.validate import validate

TOK = embedded.tokenizer()


def test_implicit_prompt_is_the_common_prefix_with_the_space_in_the_completions():
    # as TRL's extract_prompt: a space before the point where they differ starts the completions
    (row,) = normalise({"chosen": "3+4= 7", "rejected": "3+4= 8"}, "preference", TOK)
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("3+4=", " 7", " 8")
    (row,) = normalise({"chosen": "3+4=7", "rejected": "3+4=8"}, "preference", TOK)
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("3+4=", "7", "8")


def test_conversational_preference_with_implicit_prompt():
    user = {"role": "user", "content": "3+4="}
    row = {"chosen": [user, {"role": "assistant", "content": "7"}],
           "rejected": [user, {"role": "assistant", "content": "8"}]}
    tok = load_tokenizer(None, chat_template="plain")
    (out,) = normalise(row, "preference", tok)
    assert out["prompt"] == Chat("<s>user: 3+4=\nassistant: ", [user])
    # each completion is the whole conversation as the template renders it, its end of turn included
    assert out["chosen"].text == "<s>user: 3+4=\nassistant: 7</s>" and out["rejected"].content() == "8"
    with pytest.raises(RuntimeSetupError, match="has no chat template"):  # no template: no invented transcript
        normalise(row, "preference", TOK)


def test_language_modelling_text_and_messages_for_sft():
    (a,) = normalise({"text": "12+1=13"}, "sft", TOK)
    assert (a["prompt"], a["completion"]) == ("", "12+1=13")
    msgs = [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]
    (b,) = normalise({"messages": msgs}, "sft", load_tokenizer(None, chat_template="plain"))
    assert b["completion"].messages == msgs[1:] and b["prompt"].messages == msgs[:1]


def test_preference_data_is_unpaired_for_unpaired_methods():
    rows = normalise({"prompt": "1+1=", "chosen": "2", "rejected": "3"}, "unpaired", TOK)
    assert [(r["completion"], r["label"]) for r in rows] == [("2", True), ("3", False)]


def test_missing_field_and_non_numeric_extra_field():
    with pytest.raises(RuntimeSetupError, match="needs the field `label`"):
        validate(Table([{"prompt": "a", "completion": "b"}], "rows"), "unpaired", "kto")
    with pytest.raises(RuntimeSetupError, match=r"row 1: `margin` must be a number, got \"big\""):
        validate(Table([{"prompt": "a", "chosen": "b", "rejected": "c", "margin": "big"}], "rows"), "preference",
                 "rm", ("margin",))


def test_tokenize_masks_truncates_and_counts_skips():
    rows = [{"prompt": "1+1=", "completion": "2"}, {"prompt": "1+1=", "completion": " "},
            {"prompt": "9" * 40, "completion": "1"}, {"prompt": "1+", "completion": "9" * 40}]
    ex, skipped = tokenize(rows, TOK, "sft", (), max_length=16, max_prompt_length=None)
    assert skipped.empty_completion == 1 and skipped.prompt_too_long == 1
    assert len(ex) == 2
    first = ex[0]
    assert first.prompt_ids[0] == TOK.bos_token_id and first.completions["completion"][-1] == TOK.eos_token_id
    assert len(ex[1].prompt_ids) + len(ex[1].completions["completion"]) == 16  # truncated to max_length


class _Counting:
    """The tokenizer, remembering every text it was called on."""

    def __init__(self, tok):
        self.tok, self.texts = tok, []

    def __call__(self, text, **kw):
        self.texts += text if isinstance(text, list) else [text]
        return self.tok(text, **kw)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def test_a_limit_keeps_the_first_usable_rows_and_tokenises_no_further():
    """--max-examples N: the first N rows that fit (skipped rows do not count), and the rows
    after them are never tokenised, so a small N on a large dataset is cheap."""
    rows = [{"prompt": f"{i}+1=", "completion": "" if i % 3 == 0 else str(i + 1)} for i in range(1000)]
    tok = _Counting(TOK)
    ex, skipped = tokenize(rows, tok, "sft", (), max_length=16, max_prompt_length=None, limit=4)
    assert [e.index for e in ex] == [1, 2, 4, 5] and skipped.empty_completion == 2
    assert max(int(t.split("+")[0]) for t in tok.texts if "+" in t) == 5   # rows 6..999 untouched
    everything, _ = tokenize(rows, TOK, "sft", (), max_length=16, max_prompt_length=None)
    assert [e.completions for e in ex] == [e.completions for e in everything[:4]]


def test_ranked_lists_of_two_to_size_responses_are_kept_others_skipped_and_counted():
    """A ranked list holds 2 to `size` (K_max) responses, each example its own K; a list of one
    ranks nothing and a list longer than `size` would not fit the method's bound: both skipped,
    each counted by its reason."""
    lists = [["2"], ["2", "3"], ["2", "3", "4"], ["2", "3", "4", "5"], ["2", "3", "4", "5", "6"]]
    rows = [r for resp in lists for r in normalise({"prompt": "1+1=", "responses": resp}, "ranked", TOK)]
    examples, skipped = tokenize(rows, TOK, "ranked", ("rating",), 64, None, list_size=4)
    assert [len(e.completions["responses"]) for e in examples] == [2, 3, 4]
    assert [e.fields["rating"] for e in examples][1] == [2.0, 1.0, 0.0]  # default ratings: the ranks
    assert (skipped.list_too_short, skipped.list_too_long) == (1, 1)
    assert str(skipped) == ("skipped rows: 1 whose list has fewer than 2 responses, "
                            "1 whose list has more responses than the method's `size`")


def test_no_prompt_tokens_make_the_first_token_the_prompt():
    from tests.chat_tokenizers import chat_tokenizer
    tok = chat_tokenizer("chatml")  # adds no BOS: language-modelling text has no prompt tokens
    (e,), _ = tokenize([{"prompt": "", "completion": "The sky is blue."}], tok, "sft", (), 64, None)
    whole = tok("The sky is blue.<|endoftext|>")["input_ids"]
    assert (e.prompt_ids, e.completions["completion"]) == (whole[:1], whole[1:])
    # completions that start differently share no first token: counted, not a crash in the forward
    ex, skipped = tokenize([{"prompt": "", "chosen": "blue", "rejected": "green"}], tok, "preference", (), 64, None)
    assert ex == [] and skipped.empty_prompt == 1 and "1 with no prompt tokens" in str(skipped)
