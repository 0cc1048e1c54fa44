"""Which temperature each set's log-probs are taken at: a rollout's sampling temperature
(or its `score_temperature`, or the command-line override), 1 for dataset sets — per set,
even when one forward covers both (SPIN: the dataset completion and a sample at 0.8)."""
import torch

import ptdsl
from ptdsl.runtime import embedded
from ptdsl.runtime.batch import Batch, SetRows
from ptdsl.runtime.queries import run_model
from ptdsl.runtime.step import scoring_temperatures


def _direct(model, prompt, completion, temperature):
    """log softmax(logits / T)[next token] at each completion token, the plain way."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1] / temperature
    return torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def test_scoring_temperatures_follow_the_spec_and_the_override():
    grpo = ptdsl.compile("grpo", temperature=0.7).plan
    assert scoring_temperatures(grpo) == {"y": 0.7}
    assert scoring_temperatures(grpo, {"temperature": 0.5}) == {"y": 0.5}
    spin = ptdsl.compile("spin").plan
    assert scoring_temperatures(spin, {"temperature": 0.5}) == {"y": 1.0}  # score_temperature = 1
    assert scoring_temperatures(ptdsl.compile("remax").plan) == {"y": 1.0}  # the greedy rollout is untempered (1)


def test_one_forward_scores_each_set_at_its_own_temperature():
    tok = embedded.tokenizer()
    model = embedded.model(tok, seed=0).eval()
    prompt = tok.encode("12+7=")
    data, sampled = tok.encode("19"), tok.encode("21")
    sets = {"completion": SetRows([prompt], [data]), "y": SetRows([prompt], [sampled])}
    out = run_model(model, Batch(examples=[None], sets=sets).sets, ["completion", "y"],
                    {"completion": ["logprobs"], "y": ["logprobs"]}, tok.pad_token_id, "cpu", frozen=True,
                    temperatures={"y": 0.8})
    for s, completion, t in (("completion", data, 1.0), ("y", sampled, 0.8)):
        got = out[("logprobs", s)][0, :len(completion)].double()
        torch.testing.assert_close(got, _direct(model, prompt, completion, t), rtol=1e-5, atol=1e-5)
