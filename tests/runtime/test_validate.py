"""Every training row is validated before step 1 (runtime/validate.py, schema.py): real
files in tmp_path through the real reader and `load_examples`, each bad row named by
row (from 1), line, column and value, all rows checked, or skipped and counted."""
import functools
import json
import math

import pytest

import ptdsl
from ptdsl.ir.datakinds import DATA_KINDS
from ptdsl.runtime import embedded
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.schema import kind_format
from ptdsl.runtime.setup import load_examples, load_models, load_tokenizer

TOK = embedded.tokenizer()
U, A = "user", "assistant"


@functools.cache
def _compiled(method):
    return ptdsl.compile(method)


def _load(method, path, log=None, **kw):
    return load_examples(_compiled(method), str(path), TOK, 64, None, 0, log=log or (lambda m: None), **kw)


def _jsonl(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


def _error(method, path, **kw) -> str:
    with pytest.raises(RuntimeSetupError) as e:
        _load(method, path, **kw)
    return str(e.value)


def _msg(role, content):
    return {"role": role, "content": content}


def _pair(i):
    return {"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": str(i + 2)}


def _text(ids):
    return TOK.decode(ids)


def test_every_row_is_checked_not_only_the_first(tmp_path):
    rows = [_pair(i) for i in range(10)]
    del rows[3]["rejected"]
    rows[8]["chosen"] = None
    msg = _error("dpo", _jsonl(tmp_path, rows))
    assert "2 of 10 rows of" in msg and "do not fit `dpo` (data preference: prompt, chosen, rejected)" in msg
    assert "rows counted from 1" in msg
    assert "row 4 (line 4): `rejected` is missing" in msg and "row 9 (line 9): `chosen` is null" in msg


def test_lists_and_dicts_are_not_text(tmp_path):
    rows = [_pair(0), {"prompt": "1+1=", "chosen": [1, 2], "rejected": {"a": 1}}]
    msg = _error("dpo", _jsonl(tmp_path, rows))
    assert "row 2 (line 2): `chosen` message 1 must be an object with `role` and `content`, got 1" in msg
    assert 'row 2 (line 2): `rejected` must be text or a list of messages (a completion), got {"a": 1} ' \
           "(an object)" in msg


def test_csv_blank_cell_is_an_error_and_numbers_stay_as_written(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("prompt,chosen,rejected\n1+1=,2,3\n1+2=,,4\n", encoding="utf-8")
    assert "row 2 (line 3): `chosen` is null" in _error("dpo", p)
    p.write_text("prompt,chosen,rejected\n1+1=,2,3\n1+2=,3,14\n", encoding="utf-8")
    ex = _load("dpo", p)
    # the integer column trains as written ("2"), not as the float datasets would make of it ("2.0")
    assert [_text(e.completions["chosen"]) for e in ex] == ["2</s>", "3</s>"]
    assert _text(ex[1].completions["rejected"]) == "14</s>"


def test_kto_labels_are_booleans_or_0_1(tmp_path):
    bad = [{"prompt": "1+1=", "completion": "2", "label": v} for v in ["false", "no", 0.3, None, 2]]
    msg = _error("kto", _jsonl(tmp_path, bad))
    assert "5 of 5 rows" in msg
    assert 'row 1 (line 1): `label` must be true/false or 1/0, got "false" (a string)' in msg
    assert 'row 2 (line 2): `label` must be true/false or 1/0, got "no" (a string)' in msg
    assert "row 3 (line 3): `label` must be true/false or 1/0, got 0.3 (a number)" in msg
    assert "row 4 (line 4): `label` is null" in msg and "row 5 (line 5): `label` must be" in msg
    good = [{"prompt": "1+1=", "completion": "2", "label": v} for v in [True, False, 1, 0, 1.0]]
    assert [e.fields["label"] for e in _load("kto", _jsonl(tmp_path, good))] == [True, False, True, False, True]
    p = tmp_path / "k.csv"  # CSV has no types: true/false/1/0 as written, any case
    p.write_text("prompt,completion,label\na,1,True\nb,2,false\nc,3,1\nd,4,0\n", encoding="utf-8")
    assert [e.fields["label"] for e in _load("kto", p)] == [True, False, True, False]
    p.write_text("prompt,completion,label\na,1,yes\n", encoding="utf-8")
    assert 'row 1 (line 2): `label` must be true/false or 1/0, got "yes" (a string)' in _error("kto", p)


def test_chat_roles_and_where_a_conversation_ends(tmp_path):
    rows = [{"messages": [_msg(U, "1+1="), _msg(A, "2")]},
            {"messages": [_msg(A, "1+1="), _msg(U, "2")]},          # SFT would train the user's turn
            {"messages": [_msg("wizard", "1+1="), _msg(A, "2")]},
            {"messages": [_msg("system", "be brief"), _msg(A, "2")]}]
    msg = _error("sft", _jsonl(tmp_path, rows))
    assert "row 2 (line 2): `messages` ends with a user turn; it must end with an assistant turn" in msg
    assert 'row 3 (line 3): `messages` message 1 has role "wizard" (a string); a role is one of system, user, ' \
           "assistant, tool" in msg
    assert "row 4 (line 4): `messages` has a system turn before its last assistant turn" in msg
    conv = [{"prompt": [_msg(U, "1+1="), _msg(A, "2")], "completion": [_msg(A, "2")]},
            {"prompt": [_msg(U, "1+1=")], "completion": [_msg(U, "more?"), _msg(A, "2")]},
            {"prompt": [_msg(U, "1+1="), _msg("tool", "2")], "completion": [_msg(A, "2")]}]
    msg = _error("sft", _jsonl(tmp_path, conv))
    assert "2 of 3 rows" in msg
    assert "row 1 (line 1): `prompt` ends with an assistant turn; it must end with a user or tool turn" in msg
    assert "row 2 (line 2): `completion` message 1 is a user turn; a completion holds only assistant turns" in msg


def test_what_gave_an_internal_error_is_a_named_row(tmp_path):
    rows = [{"prompt": "1+1=", "answer": "2"}, {"prompt": None, "answer": "3"}, {"prompt": True, "answer": "4"}]
    msg = _error("grpo", _jsonl(tmp_path, rows))
    assert "row 2 (line 2): `prompt` is null" in msg
    assert "row 3 (line 3): `prompt` must be text or a list of messages (a prompt), got true (a boolean)" in msg
    sft = [{"messages": [_msg(U, "1")]}, {"messages": [_msg(U, "1"), {"role": A}]}, {"messages": []},
           {"messages": [_msg(U, "1"), _msg(A, 7)]}]
    msg = _error("sft", _jsonl(tmp_path, sft))
    assert "row 2 (line 2): `messages` message 2 has no text `content`" in msg
    assert "row 3 (line 3): `messages` is an empty list of messages" in msg
    assert "row 4 (line 4): `messages` message 2 has no text `content`, got 7 (a number)" in msg


def test_a_file_that_is_not_utf8_is_a_setup_error(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"prompt": "1+1=", "chosen": "2", "rejected": "\xff"}\n')
    with pytest.raises(RuntimeSetupError, match=r"d.jsonl` is not UTF-8 text: byte 0xff at line 1"):
        _load("dpo", p)


def test_numeric_fields_are_finite_numbers(tmp_path):
    p = tmp_path / "m.jsonl"
    lines = [json.dumps({**_pair(0), "margin": 1.5}), json.dumps({**_pair(1), "margin": True}),
             json.dumps({**_pair(2), "margin": "big"}), '{"prompt": "a", "chosen": "1", "rejected": "2", '
             '"margin": NaN}', '{"prompt": "a", "chosen": "1", "rejected": "2", "margin": 1' + "0" * 400 + "}"]
    p.write_text("\n".join(lines), encoding="utf-8")
    msg = _error("reward_model_margin", p)
    assert "4 of 5 rows" in msg and "row 2 (line 2): `margin` must be a number, got true (a boolean)" in msg
    assert 'row 3 (line 3): `margin` must be a number, got "big" (a string)' in msg
    assert "row 4 (line 4): `margin` must be a finite number, got NaN" in msg
    assert "row 5 (line 5): `margin` must be a finite number" in msg
    c = tmp_path / "m.csv"
    c.write_text("prompt,chosen,rejected,margin\na,1,2,2\nb,3,4,-0.5\n", encoding="utf-8")
    assert [e.fields["margin"] for e in _load("reward_model_margin", c)] == [2.0, -0.5]


def test_stepwise_and_ranked_lists_are_well_formed(tmp_path):
    steps = [{"prompt": "1+2+3=", "completions": ["1+2=3", "3+3=6"], "labels": [True, True]},
             {"prompt": "p", "completions": ["a", "b"], "labels": [True]},
             {"prompt": "p", "completions": ["a"], "labels": ["yes"]},
             {"prompt": "p", "completions": "a b", "labels": [True]}]
    msg = _error("prm", _jsonl(tmp_path, steps))
    assert "row 2 (line 2): `labels` has 1 element, and `completions` 2 elements: give one per element" in msg
    assert 'row 3 (line 3): `labels` element 1 must be true/false or 1/0, got "yes" (a string)' in msg
    assert 'row 4 (line 4): `completions` must be a list of step texts, got "a b" (a string)' in msg
    ranked = [{"prompt": "1+1=", "responses": ["2", "3", "4", "5"], "ratings": [4, 3, 2]},
              {"prompt": "1+1=", "responses": ["2", None, "4", "5"]},
              {"prompt": "1+1=", "responses": ["2", "3", "4", "5"], "ratings": [1, 2, math.inf, 0]}]
    msg = _error("pro", _jsonl(tmp_path, ranked))
    assert "row 1 (line 1): `ratings` has 3 elements, and `responses` 4 elements" in msg
    assert "row 2 (line 2): `responses` element 2 is null" in msg
    assert "row 3 (line 3): `ratings` element 3 must be a finite number, got Infinity" in msg


def test_an_implicit_prompt_is_the_shared_start_ending_in_a_user_turn(tmp_path):
    ok = {"chosen": [_msg(U, "1+1="), _msg(A, "2")], "rejected": [_msg(U, "1+1="), _msg(A, "3")]}
    plain = load_tokenizer(None, chat_template="plain")  # --chat-template plain: a transcript with the generation prompt
    (ex,) = load_examples(_compiled("dpo"), str(_jsonl(tmp_path, [ok])), plain, 64, None, 0, log=lambda m: None)
    assert _text(ex.completions["chosen"]) == "2</s>" and ex.prompt_text == "<s>user: 1+1=\nassistant: "
    bad = {"chosen": [_msg(U, "1+1="), _msg(A, "2"), _msg(U, "and 2+2="), _msg(A, "4")],
           "rejected": [_msg(U, "1+1="), _msg(A, "2"), _msg(U, "and 3+3="), _msg(A, "5")]}
    msg = _error("dpo", _jsonl(tmp_path, [ok, bad]))
    assert "row 2 (line 2): `chosen` and the other completions share 2 messages, ending with an assistant turn"\
        in msg
    mixed = {"chosen": "1+1=2", "rejected": [_msg(U, "1+1="), _msg(A, "3")]}
    assert "`chosen` and `rejected` must be all texts or all conversations" in _error("dpo", _jsonl(tmp_path, [mixed]))


def test_implicit_prompt_for_unpaired_and_triple_data(tmp_path):
    # preference data for an unpaired method: the shared start is the prompt of both rows
    rows = _load("kto", _jsonl(tmp_path, [{"chosen": "1+1=2", "rejected": "1+1=3"}]))
    assert [(_text(e.prompt_ids), _text(e.completions["completion"]), e.fields["label"]) for e in rows] == \
        [("<s>1+1=", "2</s>", True), ("<s>1+1=", "3</s>", False)]
    # a triple's gold response loses the same prompt (it used to keep it)
    (t,) = _load("tpo", _jsonl(tmp_path, [{"chosen": "1+1=2", "rejected": "1+1=3", "reference": "1+1=2"}]))
    assert _text(t.prompt_ids) == "<s>1+1=" and _text(t.completions["gold"]) == "2</s>"


def test_a_column_null_everywhere_or_absent_is_one_error(tmp_path):
    rows = [{"prompt": "a", "chosen": None, "rejected": "b"}] * 3
    with pytest.raises(RuntimeSetupError, match=r"needs the field `chosen`, and it is null in every row"):
        _load("dpo", _jsonl(tmp_path, rows))
    with pytest.raises(RuntimeSetupError, match=r"needs the field `label`, and `.*\.jsonl` does not have it") as e:
        _load("kto", _jsonl(tmp_path, [{"prompt": "a", "completion": "b"}]))
    assert "the dataset has: `completion`, `prompt`" in e.value.help


def test_many_bad_rows_show_the_first_few_and_a_count(tmp_path):
    rows = [_pair(i) for i in range(3)] + [{"prompt": "a", "chosen": 1, "rejected": 2}] * 100
    msg = _error("dpo", _jsonl(tmp_path, rows))
    assert "100 of 103 rows" in msg and msg.count("\n  row ") == 5 and "… and 195 more problems" in msg


def test_skip_invalid_rows_skips_counts_and_shows_the_first(tmp_path):
    rows = [_pair(i) for i in range(6)]
    rows[1]["chosen"], rows[4]["rejected"] = None, ["x"]
    logged = []
    ex = _load("dpo", _jsonl(tmp_path, rows), log=logged.append, skip_invalid_rows=True)
    assert [e.prompt_text for e in ex] == ["0+1=", "2+1=", "3+1=", "5+1="]
    (note,) = [m for m in logged if "skipped" in m]
    assert note.startswith("skipped 2 of 6 rows of") and "(--skip-invalid-rows)" in note
    assert "row 2 (line 2): `chosen` is null" in note and "row 5 (line 5): `rejected` message 1" in note
    with pytest.raises(RuntimeSetupError, match="no row is left"):
        _load("dpo", _jsonl(tmp_path, [rows[1], rows[4]]), skip_invalid_rows=True)


def test_required_columns_are_present_and_not_null_in_every_row(tmp_path):
    rows = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "1+2=", "answer": None}, {"prompt": "1+3="},
            {"prompt": "1+4=", "answer": 5}]
    msg = _error("grpo", _jsonl(tmp_path, rows), require_columns=("answer",))
    assert "2 of 4 rows" in msg and "row 2 (line 2): `answer` is null" in msg
    assert "row 3 (line 3): `answer` is missing" in msg
    ex = _load("grpo", _jsonl(tmp_path, rows), require_columns=("answer",), skip_invalid_rows=True)
    assert [e.columns["answer"] for e in ex] == ["2", 5]  # any non-null value: the verifier decides its type
    with pytest.raises(RuntimeSetupError, match=r"needs the field `answer` \(a verifier reads it\), and "
                                                r"`.*\.jsonl` does not have it"):
        _load("grpo", _jsonl(tmp_path, [{"prompt": "1+1="}]), require_columns=("answer",))
    assert len(_load("grpo", _jsonl(tmp_path, [{"prompt": "1+1="}]))) == 1  # nothing required: fine


def test_parquet_rows_are_validated(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["1+1=", "1+2="], "chosen": ["2", None], "rejected": ["3", "4"]}), p)
    assert "row 2: `chosen` is null" in _error("dpo", p)


def test_a_chat_template_that_rejects_a_conversation_names_the_row(tmp_path):
    tok = embedded.tokenizer()
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system "
                         "turns') }}{% endif %}{{ m.content }}{% endfor %}")
    rows = [{"prompt": [_msg(U, "1+1=")], "completion": "2"},
            {"prompt": [_msg("system", "s"), _msg(U, "1+1=")], "completion": "2"}]
    with pytest.raises(RuntimeSetupError) as e:
        load_examples(_compiled("sft"), str(_jsonl(tmp_path, rows)), tok, 64, None, 0, log=lambda m: None)
    assert "row 2 (line 2): the tokenizer's chat template cannot render the conversation" in str(e.value)
    assert "no system turns" in str(e.value)


def test_the_embedded_default_says_what_it_makes_up():
    logged = []
    _ = load_examples(_compiled("reward_model_margin"), None, TOK, 64, None, 0, log=logged.append)
    assert any("the embedded dataset has no column `margin`" in m and "margin = 1.0" in m for m in logged)
    logged.clear()
    load_models(_compiled("gkd"), None, 0, log=logged.append)
    assert any('`teacher = model("teacher-model")` is not loaded with the embedded default' in m for m in logged)


def test_every_data_kind_has_a_typed_format_over_its_columns():
    # the schema is derived from the data kind table: a new kind gets checked rows or fails here
    for kind in DATA_KINDS.values():
        assert kind_format(kind).names() == ("prompt",) + tuple(c for c in kind.columns if c != "prompt")


# ---- property: any value in any column is a clean error or a row that tokenises ------------

BASE = {"sft": {"prompt": "1+1=", "completion": "2"},
        "preference": {"prompt": "1+1=", "chosen": "2", "rejected": "3"},
        "unpaired": {"prompt": "1+1=", "completion": "2", "label": True},
        "prompts": {"prompt": "1+1=", "answer": "2"},
        "ranked": {"prompt": "1+1=", "responses": ["2", "3", "4", "5"], "ratings": [3, 2, 1, 0]},
        "triple": {"prompt": "1+1=", "chosen": "2", "rejected": "3", "reference": "2"},
        "stepwise": {"prompt": "1+2+3=", "completions": ["1+2=3", "3+3=6"], "labels": [True, True]}}


def _values():
    from hypothesis import strategies as st
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
                                     "content": st.one_of(st.text(max_size=5), st.none(), st.integers())})
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(), st.text(max_size=6))
    return st.recursive(st.one_of(scalar, message), lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["role", "content", "a"]), inner, max_size=3)),
        max_leaves=8)


def test_any_value_in_any_column_is_a_clean_error_or_tokenises():
    from hypothesis import given
    from hypothesis import strategies as st

    from ptdsl.runtime.data import normalise, tokenize
    from ptdsl.runtime.datafiles import Table
    from ptdsl.runtime.validate import validate

    @given(st.sampled_from(sorted(BASE)), st.data(), st.booleans())
    def prop(kind, data, textual):
        row = {**BASE[kind], "margin": 1.0}
        column = data.draw(st.sampled_from(sorted(row) + ["margin"]))
        value = data.draw(st.one_of(st.none(), st.text(max_size=6)) if textual else _values())
        if textual:  # CSV: every cell is text or missing
            row = {k: v if isinstance(v, str) else "1.0" if k == "margin" else None for k, v in row.items()}
        row[column] = value
        fields = ("margin",)
        table = Table([row], "rows", textual=textual)
        try:
            valid = validate(table, kind, "m", fields, ("answer",) if kind == "prompts" else ())
        except RuntimeSetupError:
            return
        rows = [r for _, v in valid for r in normalise(v, kind, TOK)]
        own = tuple(f for f, _ in DATA_KINDS[kind].fields) + tuple(f for f, _, _ in DATA_KINDS[kind].token_fields)
        tokenize(rows, TOK, kind, own + fields, 64, None, 4, " ")
    prop()
