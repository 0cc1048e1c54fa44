"""Episode rollouts: `rollout y = episode(policy, environment("NAME"), n = …, max_turns = …)`.

Each prompt of a micro-batch is played n times against a fresh instance of the environment
(runtime/episode.py: turns of generation, tool calls through the chat template, the
environment's replies) and the episodes become the set's rows (SetRows): the completion is
everything after the prompt, and its token mask holds only the tokens the policy sampled,
so the loss never trains on tool results or template tokens (TRL's tool mask). Each row also
carries its episode's record (`record`, plain data: saved with an experience): the environment's reward (`environment("NAME")`
in a reward), the turns, tool calls and errors (logged per step as `episode/turns`,
`episode/tool_calls`, `episode/tool_errors`: a namespace no spec metric can take) and the
completion messages reward functions get, as TRL passes them.

Environments are bound before step 1 (`bind`): `--env NAME=module:factory`, a registered
name (`@ptdsl.environments.register`), or a built-in (`calculator`)."""
from __future__ import annotations

from ptdsl.runtime import environments
from ptdsl.runtime.batch import SetRows
from ptdsl.runtime.episode import Generation, run_episodes
from ptdsl.runtime.episode_tokens import check_template
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.generators import Sampling

DEFAULT_MAX_TURNS = 4
DEFAULT_MAX_TOKENS = 256
STATS = ("turns", "tool_calls", "tool_errors")  # the per-episode numbers logged as step means (episode/NAME)


def uses(plan) -> list[str]:
    """The environments a plan plays or reads rewards from."""
    played = {r.env for r in plan.rollouts.values() if r.kind == "episode"}
    scored = {t.name for terms in plan.rewards.values() for t in terms if t.kind == "environment"}
    return sorted(played | scored)


def bind(plan, env_flags, tokenizer) -> dict[str, environments.Environment]:
    """{name: environment} for every environment the plan uses, resolved now (before step 1),
    and the tokenizer's chat template checked for tool support. `env_flags`: `NAME=module:factory`
    strings, or a {name: factory} mapping (the Python API)."""
    names = uses(plan)
    if not names:
        if env_flags:
            raise RuntimeSetupError(f"--env is given, but the method plays no episode ({', '.join(env_flags)})",
                                    help="drop --env, or use a method with `episode(…)`")
        return {}
    bound = _bound(env_flags)
    unused = sorted(set(bound) - set(names))
    if unused:
        raise RuntimeSetupError(f"--env binds {', '.join(f'`{n}`' for n in unused)}, which the method does not "
                                f"play (it plays {', '.join(f'`{n}`' for n in names)})",
                                help="name the environment as the spec does: --env NAME=module:factory")
    for name in names:  # spec text names an environment; it never says which Python to import
        if ":" in name and name not in bound:
            raise RuntimeSetupError(f"the spec names environment `{name}`, a module path: a spec only names an "
                                    "environment, the Python that runs is bound where training starts",
                                    help=f"write `environment(\"NAME\")` in the spec and pass "
                                         f"`--env NAME={name}` (or register it)")
    check_template(tokenizer)
    return {name: environments.resolve(name, bound) for name in names}


def _bound(env_flags) -> dict[str, environments.Environment]:
    if isinstance(env_flags, dict):
        return {name: environments.Environment(name, factory) for name, factory in env_flags.items()}
    return environments.parse_env_flags(list(env_flags or ()))


def play(generator, tok, examples, rollout, env, overrides: dict | None = None, keep_logprobs: bool = False,
         stops=None) -> SetRows:
    """n episodes per example, as the rows of the rollout's set, sampled by `generator`
    (runtime/generators.py); `stops`: the tokens that end a policy turn (`stop_ids`)."""
    opts = {**rollout.options, **(overrides or {})}
    n = int(opts.get("n", 1))
    stops = list(stops) if stops is not None else [tok.eos_token_id]
    sampling = Sampling.from_options(opts, tuple(stops), keep_logprobs)

    def generate(prompts: list[list[int]], limits: list[int]) -> list[Generation]:
        return generator.generate(prompts, limits, sampling)
    rows = [_row(e) for e in examples for _ in range(n)]
    labels = [e.where or f"example {e.index + 1}" for e in examples for _ in range(n)]
    episodes = run_episodes(generate, tok, env, rows, max_turns=int(opts.get("max_turns", DEFAULT_MAX_TURNS)),
                            max_tokens=int(opts.get("max_tokens", DEFAULT_MAX_TOKENS)),
                            tool_timeout=float(opts.get("tool_timeout", 30.0)), stop_ids=stops, row_labels=labels)
    return SetRows([ep.prompt_ids for ep in episodes], [ep.completion_ids for ep in episodes],
                   [ep.truncated is not None for ep in episodes],
                   [tok.decode(ep.completion_ids, skip_special_tokens=True) for ep in episodes],
                   token_mask=[[bool(m) for m in ep.token_mask] for ep in episodes],
                   sampler_logprobs=[list(ep.logprobs or []) for ep in episodes] if keep_logprobs else None,
                   episodes=[_record(ep) for ep in episodes])


def _record(ep) -> dict:
    return {"reward": ep.reward, "turns": ep.turns, "tool_calls": ep.tool_calls,
            "tool_errors": sum(ep.errors.values()), "truncated": ep.truncated, "turn_ids": list(ep.turn_ids),
            "messages": list(ep.completion_messages)}


def _row(example) -> dict:
    """The dataset row an environment's reset() gets: its columns and the prompt (messages, or text)."""
    prompt = example.prompt_messages if example.prompt_messages is not None else example.prompt_text
    return {**example.columns, "prompt": prompt}


def stop_ids(model, tok) -> list[int]:
    """The tokens that end a policy turn: the generation config's EOS ids (e.g. `<|im_end|>` as
    well as `<|endoftext|>`, as TRL stops) and the tokenizer's."""
    config = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = config if isinstance(config, (list, tuple)) else [config] if config is not None else []
    return sorted({int(i) for i in ids} | {tok.eos_token_id})


def leaf(name: str, rows: SetRows, device):
    """The value of `turns(s)` / `tool_calls(s)` ([rows]) or `turn(s)` ([rows, width], each
    completion token's turn from 0; the set's mask keeps only the policy's tokens)."""
    import torch
    from ptdsl.runtime.batch import completion_width
    what = name.split("(", 1)[0]
    if what != "turn":
        return torch.tensor([float(r[what]) for r in rows.episodes], device=device)
    out = torch.zeros((len(rows.episodes), completion_width(rows)))
    for i, r in enumerate(rows.episodes):
        out[i, :len(r["turn_ids"])] = torch.tensor(r["turn_ids"], dtype=out.dtype)
    return out.to(device)


def means(rows: SetRows) -> dict[str, list[float]]:
    """Each logged episode number over a set's rows (for the step means)."""
    if rows.episodes is None:
        return {}
    return {f"episode/{k}": [float(r[k]) for r in rows.episodes] for k in STATS}
