"""Episodes driven by a real (tiny, random) LlamaForCausalLM through `model.generate`: the
sequence an episode returns is the one the policy was conditioned on, token for token — a
forward pass over prompt_ids + completion_ids gives back the sampler's log-probs at every
policy token, across the tool results the template inserted between its turns."""
from __future__ import annotations

import pytest

from ptdsl.runtime import environments
from ptdsl.runtime.episode import Generation, run_episodes
from tests.tool_tokenizers import tiny_llama, tool_tokenizer

torch = pytest.importorskip("torch")
CALL = '<tool_call>\n{"name": "calculate", "arguments": {"expression": "12 * 34"}}\n</tool_call><|im_end|>'


class HFGenerate:
    """The generator interface on transformers' generate: left-padded batch, sampling at
    temperature 1, log-probs from the raw logits. The first call forces the calculator call
    (a random model would never write one), so that later turns follow inserted tool results."""

    def __init__(self, model, tok):
        self.model, self.tok, self.calls = model, tok, 0
        self.forced = tok.encode(CALL, add_special_tokens=False)

    def __call__(self, prompts, limits):
        pad, eos = self.tok.pad_token_id, self.tok.eos_token_id
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        force = self.calls == 0
        self.calls += 1
        allowed = (lambda b, seq: [self.forced[min(seq.shape[0] - width, len(self.forced) - 1)]]) if force else None
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                      top_p=1.0, max_new_tokens=len(self.forced) if force else max(limits),
                                      eos_token_id=eos, pad_token_id=pad, prefix_allowed_tokens_fn=allowed,
                                      output_logits=True, return_dict_in_generate=True)
        new = out.sequences[:, width:]
        logps = torch.stack(out.logits, 1).float().log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        results = []
        for row, lp in zip(new.tolist(), logps.tolist()):
            n = row.index(eos) + 1 if eos in row else len(row)
            results.append(Generation(row[:n], lp[:n]))
        return results


def test_a_real_model_episode_is_one_valid_sequence_with_aligned_logprobs():
    tok = tool_tokenizer()
    model = tiny_llama(tok)
    gen = HFGenerate(model, tok)
    rows = [{"prompt": [{"role": "user", "content": "What is 12 * 34?"}]},
            {"prompt": [{"role": "user", "content": "Two plus two is four. What is 12 * 34?"}]}]
    budget = len(gen.forced) + 40
    eps = run_episodes(gen, tok, environments.resolve("calculator"), rows, max_turns=3, max_tokens=budget)
    for ep in eps:
        n = len(ep.completion_ids)
        assert n <= budget and len(ep.token_mask) == len(ep.turn_ids) == len(ep.logprobs) == n
        assert ep.completion_ids[:len(gen.forced)] == gen.forced and ep.tool_calls == 1
        assert ep.messages[2] == {"role": "tool", "name": "calculate", "content": "408"}
        gap = [i for i, m in enumerate(ep.token_mask) if m == 0]
        assert gap == list(range(len(gen.forced), gap[-1] + 1))  # one inserted span, right after the call
        assert tok.decode([ep.completion_ids[i] for i in gap]).startswith("\n<|im_start|>user\n<tool_response>\n408")
        assert set(ep.turn_ids[gap[-1] + 1:]) <= {1, 2} and ep.truncated in (None, "budget", "max_turns")
        sequence = torch.tensor([ep.prompt_ids + ep.completion_ids])
        with torch.no_grad():
            logits = model(sequence).logits[0, len(ep.prompt_ids) - 1:-1].float().log_softmax(-1)
        forward = logits.gather(-1, torch.tensor(ep.completion_ids)[:, None]).squeeze(-1)
        policy = torch.tensor(ep.token_mask, dtype=torch.bool)
        torch.testing.assert_close(forward[policy], torch.tensor(ep.logprobs)[policy], atol=1e-4, rtol=0)
        assert all(lp == 0.0 for lp, m in zip(ep.logprobs, ep.token_mask) if m == 0)
