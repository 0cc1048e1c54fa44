"""Token identity with TRL 1.16: for every dataset format ptdsl loads, standard and
conversational, the prompt and completion token ids ptdsl trains on are the ones TRL's own
trainers make from the same rows with the same tokenizer (DPO, KTO and SFT's
`_prepare_dataset`, GRPO's `_tokenize_prompts`, called on a stand-in `self`), for
tokenizers in the styles of ChatML (Qwen), Llama 3, Gemma and Phi-3 (tests/chat_tokenizers.py).

Deliberate difference, checked as such: for SFT `messages` TRL trains on every token of the
conversation; ptdsl trains on the last assistant turn (the turns before it are its prompt).
The token ids of the whole conversation are the same."""
import json
import warnings

import pytest

import ptdsl
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.setup import load_examples
from tests.chat_tokenizers import END_OF_TURN, STYLES, chat_tokenizer
from tests.trl_harness import needs_trl, stub

STYLE_NAMES = sorted(STYLES)
_TOKS = {}


def _tok(style):
    if style not in _TOKS:
        _TOKS[style] = chat_tokenizer(style)
    return _TOKS[style]


def _m(role, content):
    return {"role": role, "content": content}


Q1, Q2 = "What color is the sky?", "What is the capital of France?"
SYSTEM = _m("system", "You are a helpful assistant.")
# standard rows end their prompt mid-sentence and start the completion with a space, where
# byte-level BPE merges the space into the next word (the boundary TRL tokenises across)
STANDARD = {
    "preference": [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
                   {"prompt": Q2, "chosen": " The capital of France is Paris.", "rejected": " It is blue."}],
    "implicit": [{"chosen": "The sky is blue today.", "rejected": "The sky is green."},   # shared "The sky is "
                 {"chosen": "Two plus two is four.", "rejected": "Two plus two is seven, not eight."}],
    "sft": [{"prompt": Q1, "completion": " It is blue."}, {"prompt": "Three plus four is", "completion": " seven."}],
    "text": [{"text": "The sky is blue today."}, {"text": "Two plus two is four."}],
    "unpaired": [{"prompt": Q1, "completion": " It is blue.", "label": True},
                 {"prompt": Q1, "completion": " It is green.", "label": False}],
    "prompts": [{"prompt": Q1}, {"prompt": "Three plus four is"}],
}
CONVERSATIONAL = {
    "preference": [{"prompt": [_m("user", Q1)], "chosen": [_m("assistant", "It is blue.")],
                    "rejected": [_m("assistant", "It is green.")]},
                   {"prompt": [SYSTEM, _m("user", Q2)], "chosen": [_m("assistant", "Paris.")],
                    "rejected": [_m("assistant", "It is blue.")]}],
    "implicit": [{"chosen": [_m("user", Q1), _m("assistant", "It is blue.")],
                  "rejected": [_m("user", Q1), _m("assistant", "It is green.")]},
                 {"chosen": [SYSTEM, _m("user", Q2), _m("assistant", "Paris.")],
                  "rejected": [SYSTEM, _m("user", Q2), _m("assistant", "Lyon.")]}],
    "sft": [{"prompt": [_m("user", Q1)], "completion": [_m("assistant", "It is blue.")]},
            {"prompt": [SYSTEM, _m("user", Q2)], "completion": [_m("assistant", "Paris.")]}],
    "messages": [{"messages": [_m("user", Q1), _m("assistant", "It is blue.")]},
                 {"messages": [SYSTEM, _m("user", Q2), _m("assistant", "Paris.")]}],
    "unpaired": [{"prompt": [_m("user", Q1)], "completion": [_m("assistant", "It is blue.")], "label": True},
                 {"prompt": [SYSTEM, _m("user", Q2)], "completion": [_m("assistant", "Lyon.")], "label": False}],
    "prompts": [{"prompt": [_m("user", Q1)]}, {"prompt": [SYSTEM, _m("user", Q2)]}],
}
ROWS = {"standard": STANDARD, "conversational": CONVERSATIONAL}


def _ptdsl(method, rows, tok, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return load_examples(ptdsl.compile(method), str(path), tok, 512, None, 0, log=lambda m: None)


def _dataset(rows):
    from datasets import Dataset
    return Dataset.from_list(rows)


def _args(**kw):
    from types import SimpleNamespace
    return SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start", **kw)


def _trl_dpo(rows, tok):
    from trl.trainer.dpo_trainer import DPOTrainer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = DPOTrainer._prepare_dataset(stub(_tokenizer=tok), _dataset(rows), tok, _args(), "train")
    return [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in out]


def _trl_kto(rows, tok):
    from trl.trainer.kto_trainer import KTOTrainer
    out = KTOTrainer._prepare_dataset(stub(_tokenizer=tok, calculate_KL=False), _dataset(rows), tok, _args(), "train")
    return sorted((r["prompt_ids"], r["completion_ids"], r["label"]) for r in out)


def _trl_sft(rows, tok):
    """(input_ids, number of leading tokens not trained on) per row."""
    from trl.trainer.sft_trainer import SFTTrainer
    self = stub(_tokenizer=tok, completion_only_loss=True, chat_template=None)
    args = _args(dataset_text_field="text", assistant_only_loss=False, shuffle_dataset=False)
    out = SFTTrainer._prepare_dataset(self, _dataset(rows), tok, args, False, None, "train")
    return [(r["input_ids"], next(i for i, t in enumerate(r["labels"]) if t != -100)) for r in out]


def _trl_grpo(rows, tok):
    from trl.trainer.grpo_trainer import GRPOTrainer
    self = stub(processing_class=tok, _is_vlm=False, environment_factories=None, tools=None, chat_template=None,
                chat_template_kwargs={})
    return GRPOTrainer._tokenize_prompts(self, [r["prompt"] for r in rows])[0]


@needs_trl
@pytest.mark.parametrize("style", STYLE_NAMES)
@pytest.mark.parametrize("layout", sorted(ROWS))
@pytest.mark.parametrize("fmt", ["preference", "implicit"])
def test_preference_rows_tokenise_as_trls_dpo(style, layout, fmt, tmp_path):
    rows, tok = ROWS[layout][fmt], _tok(style)
    mine = [(e.prompt_ids, e.completions["chosen"], e.completions["rejected"])
            for e in _ptdsl("dpo", rows, tok, tmp_path)]
    assert mine == _trl_dpo(rows, tok)


@needs_trl
@pytest.mark.parametrize("style", STYLE_NAMES)
@pytest.mark.parametrize("layout", sorted(ROWS))
@pytest.mark.parametrize("fmt", ["unpaired", "preference", "implicit"])
def test_unpaired_rows_tokenise_as_trls_kto(style, layout, fmt, tmp_path):
    # preference rows for KTO are unpaired (chosen desirable, rejected not), as TRL does
    rows, tok = ROWS[layout][fmt], _tok(style)
    mine = sorted((e.prompt_ids, e.completions["completion"], e.fields["label"])
                  for e in _ptdsl("kto", rows, tok, tmp_path))
    assert mine == _trl_kto(rows, tok)


@needs_trl
@pytest.mark.parametrize("style", STYLE_NAMES)
@pytest.mark.parametrize("layout, fmt", [("standard", "sft"), ("standard", "text"),
                                         ("conversational", "sft"), ("conversational", "messages")])
def test_sft_rows_tokenise_as_trls_sft(style, layout, fmt, tmp_path):
    rows, tok = ROWS[layout][fmt], _tok(style)
    mine = [(e.prompt_ids + e.completions["completion"], len(e.prompt_ids)) for e in _ptdsl("sft", rows, tok, tmp_path)]
    theirs = _trl_sft(rows, tok)
    assert [ids for ids, _ in mine] == [ids for ids, _ in theirs]
    if fmt == "messages":  # deliberate: TRL trains on the whole conversation, ptdsl on the last turn
        assert all(n_trl == 0 and n > 0 for (_, n), (_, n_trl) in zip(mine, theirs))
    elif fmt == "text":  # TRL labels every token, but the first (BOS, or the first word where the
        # tokenizer adds no BOS) is never predicted: it is ptdsl's prompt
        assert [n for _, n in mine] == [1] * len(rows)
        assert all(n_trl == 0 for _, n_trl in theirs)
    else:
        assert [n for _, n in mine] == [n for _, n in theirs]


@needs_trl
@pytest.mark.parametrize("style", STYLE_NAMES)
@pytest.mark.parametrize("layout", sorted(ROWS))
def test_prompt_only_rows_tokenise_as_trls_grpo(style, layout, tmp_path):
    rows, tok = ROWS[layout]["prompts"], _tok(style)
    assert [e.prompt_ids for e in _ptdsl("grpo", rows, tok, tmp_path)] == _trl_grpo(rows, tok)


# ---- the bugs, each on its own -----------------------------------------------------------------

@pytest.mark.parametrize("style", ["llama3", "gemma"])
def test_a_template_with_bos_token_gives_one_bos(style, tmp_path):
    tok = _tok(style)
    (e,) = _ptdsl("dpo", CONVERSATIONAL["preference"][:1], tok, tmp_path)
    assert e.prompt_ids[0] == tok.bos_token_id and e.prompt_ids.count(tok.bos_token_id) == 1


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_a_conversational_completion_ends_with_the_templates_end_of_turn(style, tmp_path):
    tok = _tok(style)
    (e,) = _ptdsl("dpo", CONVERSATIONAL["preference"][:1], tok, tmp_path)
    end = tok.convert_tokens_to_ids(END_OF_TURN[style])
    for ids in e.completions.values():
        assert end in ids and tok.decode(ids[:ids.index(end)]).strip() in ("It is blue.", "It is green.")
        # the EOS only where the template writes it (Phi-3 ends a conversation with it)
        assert (tok.eos_token_id in ids) == (style == "phi3")


def test_an_implicit_prompt_leaves_the_space_to_the_completion(tmp_path):
    tok = _tok("llama3")
    (e,) = _ptdsl("dpo", STANDARD["implicit"][:1], tok, tmp_path)
    assert e.prompt_text == "The sky is"
    # " blue" starts with the space, as the tokenizer merges it (Ġ: a space); kept in the prompt,
    # the prompt would end with a lone space token the model never sees before a word
    assert tok.convert_ids_to_tokens(e.prompt_ids[-1:]) == ["Ġis"]
    assert tok.convert_ids_to_tokens(e.completions["chosen"][:1]) == ["Ġb"]


def test_conversational_data_without_a_chat_template_is_an_error_naming_the_tokenizer(tmp_path):
    from ptdsl.runtime.embedded import tokenizer
    with pytest.raises(RuntimeSetupError) as e:
        _ptdsl("sft", CONVERSATIONAL["sft"], tokenizer(), tmp_path)
    msg = e.value.render()
    assert "has no chat template" in msg and "--chat-template" in msg and "row" not in msg.split("help")[0]


def test_chat_template_plain_is_the_explicit_transcript(tmp_path):
    from ptdsl.runtime.setup import load_tokenizer
    tok = load_tokenizer(None, chat_template="plain")
    (e,) = _ptdsl("sft", [{"prompt": [_m("user", "1+1=")], "completion": [_m("assistant", "2")]}], tok, tmp_path)
    assert e.prompt_text == "<s>user: 1+1=\nassistant: " and e.prompt_ids.count(tok.bos_token_id) == 1
    assert e.completions["completion"] == tok("2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_chat_template_from_a_file_and_a_missing_file(tmp_path):
    from ptdsl.runtime.setup import load_tokenizer
    f = tmp_path / "t.jinja"
    f.write_text(STYLES["chatml"]["template"], encoding="utf-8")
    assert load_tokenizer(None, chat_template=str(f)).chat_template == STYLES["chatml"]["template"]
    with pytest.raises(RuntimeSetupError, match="--chat-template .*nope.jinja: cannot read the file"):
        load_tokenizer(None, chat_template=str(tmp_path / "nope.jinja"))


@pytest.mark.integration
def test_language_modelling_text_trains_with_a_tokenizer_that_adds_no_bos(tmp_path):
    # the text's first token is the prompt (it used to be an empty prompt, and a crash in the forward)
    from ptdsl.runtime import embedded
    from ptdsl.runtime.loop import train
    tok = chat_tokenizer("chatml")
    embedded.model(tok).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    data = tmp_path / "t.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in STANDARD["text"] * 2) + "\n", encoding="utf-8")
    out = train("sft", model=str(tmp_path / "m"), data=str(data), steps=1, batch_size=2, output=str(tmp_path / "o"),
                quiet=True)
    assert out["step"] == 1 and out["loss"] > 0


@needs_trl
def test_a_reward_model_scores_conversational_rows_as_trls_grpo(tmp_path):
    """TRL renders prompt + answer with the reward model's chat template and tokenises it
    without adding special tokens; scores of the same texts, padded on the right, agree.
    Deliberate difference, for text rows: GRPOTrainer scores prompt + completion without the
    tokenizer's special tokens, ptdsl with them (its BOS), as TRL's RewardTrainer trains a
    reward model on text (tests/runtime/test_reward_sources.py checks that layout)."""
    import torch
    from trl.data_utils import apply_chat_template

    from ptdsl.runtime import embedded
    from ptdsl.runtime.rewards import RewardSources
    tok = _tok("llama3")  # BOS in the template and added to text: a second BOS would change the score
    embedded.model(tok, seed=3, sequence_classifier=True).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    spec = tmp_path / "g.ptdsl"
    spec.write_text(f'method g extends grpo "GRPO on a reward model"\nreward r = reward_model("{tmp_path / "rm"}")\n')
    src = RewardSources(ptdsl.compile(str(spec)).plan)
    chats = [[_m("user", Q1)], [SYSTEM, _m("user", Q2)], [_m("user", Q2)]]
    answers = ["It is blue.", "Paris.", "The capital of France is Paris."]
    mine = src.evaluate("r", ["(rendered)"] * 3, answers, {}, chats)
    texts = [apply_chat_template({"messages": m + [_m("assistant", a)]}, tok)["text"] for m, a in zip(chats, answers)]
    enc = tok(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    model = src.models[str(tmp_path / "rm")][1]
    with torch.inference_mode():
        theirs = model(**enc).logits[:, 0].tolist()
    assert mine == pytest.approx(theirs, abs=1e-6)


# ---- ptdsl's own formats (TRL has none): laid out as the TRL format they extend ----------------

@needs_trl
@pytest.mark.parametrize("style", STYLE_NAMES)
@pytest.mark.parametrize("layout", sorted(ROWS))
def test_a_ranked_list_tokenises_as_dpo_pairs_do(style, layout, tmp_path):
    rows, tok = ROWS[layout]["preference"], _tok(style)
    ranked = [{"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]} for r in rows]
    mine = [(e.prompt_ids, *e.completions["responses"]) for e in _ptdsl("pro", ranked, tok, tmp_path)]
    assert mine == _trl_dpo(rows, tok)


@needs_trl
@pytest.mark.parametrize("style", STYLE_NAMES)
@pytest.mark.parametrize("layout", sorted(ROWS))
def test_a_stepwise_prompt_tokenises_as_grpo_prompts_do(style, layout, tmp_path):
    rows, tok = ROWS[layout]["prompts"], _tok(style)
    steps = [{**r, "completions": ["Two plus two", " is four."], "labels": [True, False]} for r in rows]
    assert [e.prompt_ids for e in _ptdsl("prm", steps, tok, tmp_path)] == _trl_grpo(rows, tok)
