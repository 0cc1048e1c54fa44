"""The spec language's builtin functions and how each lowers to IR ops.

Categories:
  query    model × set → a leaf (`logprobs`, `entropy`, `logits`, `values`, `score`, `token_score`)
  sugar    a query followed by a reduction (`logp` = sum_tokens ∘ logprobs, …)
  set      set → value (`mask`, `length`)
  op       n value operands → one IR op of the same arity (elementwise, reductions)
  scan     an op with constant keyword options (`gae(r, v, gamma = 1, lam = 0.95)`, `ema(x, decay = 0.9)`)
  random   a draw the runtime supplies as a leaf (`uniform(x)`, `bernoulli(p, x)`)
  time     the built-in scalar values `step`, `progress`, `epoch` (names, not calls)
Role sources (`frozen`, `model`, `value_head`, `critic`, `geometric_mixture`), reward sources (`verifier`,
`reward_model`), rollouts (`sample`) and set builders (`mismatched`) are only
valid in their own statements and are listed here so that errors can say so.
"""
from __future__ import annotations

from ptdsl.syntax.features import (STABLE, STABLE_01, STABLE_02, EXPERIMENTAL_02, EXPERIMENTAL_03, Deprecation, Feature,
                                   featured, names)

# Each entry carries its Feature (syntax/features.py): its level and the language version it
# arrived in. 0.2 (the training graph) brought the training time, random draws, ranks, running
# statistics, critics, the sampler role and per-example group reductions. A 0.2 feature is
# stable where a stable method needs it and reference tests hold it (`update`: grpo, ppo and
# their TRL cross-checks); the rest serve experimental methods only and may still change.
S1, S2, X2, X3 = STABLE_01, STABLE_02, EXPERIMENTAL_02, EXPERIMENTAL_03

QUERIES = featured({  # name → ((level kind, leaf kind), Feature)
    "logprobs": (("token", "logprobs"), S1),
    "entropy": (("token", "entropy"), S1),
    "logits": (("vocab", "logits"), S1),
    "values": (("token", "values"), S1),
    "score": (("seq", "score"), S1),
    "token_score": (("token", "token_score"), S1),  # the classifier head at every token (token classification)
})
SUGAR = featured({"logp": ("sum_tokens", S1), "mean_logp": ("mean_tokens", S1)})  # reductions of logprobs(M, S)
SET_FUNCS = names({"mask": S1, "length": S1, "position": S1})
# what an episode set's rows did: `turns(y)` and `tool_calls(y)` per row, `turn(y)` each token's turn (from 0)
EPISODE_FUNCS = featured({"turns": ("seq", X3), "tool_calls": ("seq", X3), "turn": ("token", X3)})
# Training time, supplied by the runtime at every optimizer step: optimizer steps done (0 at the
# first), progress from 0 at the first step to 1 at the last, and complete passes over the data.
# They are names, not calls, and nothing may rebind them.
TIME = names({"step": X2, "progress": X2, "epoch": X2})

_OPS_01 = ("exp", "log", "log1p", "expm1", "sigmoid", "logsigmoid", "softplus", "relu", "abs", "sqrt",
           "square", "tanh", "log1mexp", "sign", "stopgrad", "clip", "where", "logaddexp", "sum_tokens",
           "mean_tokens", "token_mean", "token_sum", "mean", "sum", "std", "group_mean", "group_std",
           "group_sum", "softmax", "log_softmax", "sum_vocab", "whiten", "sort_rows", "running_mean",
           "group_max", "group_min", "group_logsumexp", "group_suffix_logsumexp", "sum_pairs", "group_rank")
# sum_group/mean_group (a list's rows → one value per example) are stable: the stable listwise
# methods (pro, rrhf, infonca) need them on ranked lists of varying length, where their reference
# tests hold them (tests/methods/test_listwise.py). The other 0.2 builtins serve experimental methods.
_OPS_02 = {"running_var": X2, "row_rank": X2, "num_rows": X2, "token_rank": X2,
           "sum_group": S2, "mean_group": S2}
OPS = featured({  # builtin name → (IR op (arity from the op table), Feature)
    **{n: (n, S1) for n in _OPS_01},
    **{n: (n, f) for n, f in _OPS_02.items()},
    "other": ("pair_other", S1),
    "min": ("minimum", S1), "max": ("maximum", S1), "max_rows": ("max_rows", S1), "min_rows": ("min_rows", S1),
})
SCANS = featured({  # name → ((IR op, value operands, options), Feature); the options share the scan's
    "gae": (("gae", 2, ("gamma", "lam")), S1), "discounted_sum": (("discounted_sum", 1, ("gamma",)), S1),
    "token_quantile": (("token_quantile", 1, ("q",)), S1), "ema": (("ema", 1, ("decay", "init")), X2)})
# Scans whose options may be expressions (values the loss computes: per row, per token, or of the
# training time); with constant options they keep their own op and its fast path. The form is a
# feature of its own op (ir/ops.py: gae_varying).
VARYING_SCANS = {"gae": "gae_varying"}
OPTIONAL = {"init"}  # options a scan may leave out (ema: absent, it starts at the first batch's mean)
# Random draws: `uniform(x)` U[0, 1) at x's level; `bernoulli(p, x)` is `uniform(x) < p`.
RANDOM = featured({"uniform": (1, X2), "bernoulli": (2, X2)})
AT_LAST = "at_last"  # at_last(x, S): a per-sequence value at the last token of set S
AT_LAST_TABLE = names({AT_LAST: S1})

# The built-in roles expressions name. `old(policy)` is the old policy spelled the long way:
# the canonical leaf name was always `old` (docs/language.md §6), so the long spelling goes.
ROLES = names({"policy": S1, "old": S1, "sampler": X2,
               "old(policy)": Feature(STABLE, "0.1", Deprecation("old", "0.4", mechanical=True))})
ROLE_SOURCES = names({"frozen": S1, "model": S1, "value_head": S1, "critic": X2, "geometric_mixture": S1})
REWARD_SOURCES = names({"verifier": S1, "reward_model": S1, "environment": X3})  # environment: get_reward()
# `episode(policy, environment("name"), …)`: multi-turn rollouts with an environment's tools
ROLLOUTS = names({"sample": S1, "episode": X3})
SET_BUILDERS = names({"mismatched": S1, "best": S1, "worst": S1})
SAMPLE_OPTIONS = featured({
    "n": ("int", S1), "temperature": ("float", S1), "top_p": ("float", S1), "top_k": ("int", S1),
    "max_tokens": ("int", S1), "mask_truncated": ("bool", S1), "greedy": ("bool", S1),
    "score_temperature": ("float", S1),  # log-probs of the samples at this T (default: temperature)
    "on_policy": ("float", S1),  # probability that a batch samples; else the dataset's completions (GKD λ)
    "once": ("bool", S1)})  # a frozen model's samples, drawn once per prompt and reused (A*-PO's V*)
# an episode samples as `sample` does, for up to `max_turns` policy turns; `max_tokens` bounds a whole
# episode's completion (the policy's tokens and those the tools and chat template insert)
EPISODE_OPTIONS = featured({
    **{k: (SAMPLE_OPTIONS[k], X3) for k in ("n", "temperature", "top_p", "top_k", "max_tokens", "greedy")},
    "max_turns": ("int", X3), "tool_timeout": ("float", X3)})
# TR-DPO: θ_ref ← mixup·θ + (1 − mixup)·θ_ref
FROZEN_OPTIONS = featured({"sync_steps": ("int", S1), "mixup": ("float", S1)})
# `update passes = P, minibatches = M` (or `micro_batches = K`, TRL's steps_per_generation; 0: --grad-accum)
UPDATE_OPTIONS = featured({"passes": ("int", S2), "minibatches": ("int", S2), "micro_batches": ("int", S2)})
# `critic(policy)` / `critic("path")`: a separate value model, its learning rate a multiple of the
# policy's (unless --critic-lr) and, for its first `warmup_steps` optimizer steps, the only learner
CRITIC_OPTIONS = featured({"lr_scale": ("float", X2), "warmup_steps": ("int", X2)})
MIXTURE_OPTIONS = featured({"coef": ("float", S1)})  # geometric_mixture(A, B, coef = μ): sample ∝ exp((1 − μ)·z_A + μ·z_B)
# The tables that define features, for passes/features.py and the test that every entry has one.
FEATURE_TABLES = (("query", QUERIES), ("builtin", SUGAR), ("set function", SET_FUNCS),
                  ("episode function", EPISODE_FUNCS), ("time name", TIME),
                  ("builtin", OPS), ("scan", SCANS), ("random draw", RANDOM), ("builtin", AT_LAST_TABLE),
                  ("role", ROLES), ("role source", ROLE_SOURCES), ("reward source", REWARD_SOURCES),
                  ("rollout", ROLLOUTS), ("set builder", SET_BUILDERS), ("`sample` option", SAMPLE_OPTIONS),
                  ("`episode` option", EPISODE_OPTIONS),
                  ("`frozen` option", FROZEN_OPTIONS), ("`update` option", UPDATE_OPTIONS),
                  ("`critic` option", CRITIC_OPTIONS), ("`geometric_mixture` option", MIXTURE_OPTIONS))
# Valid ranges of constant options (low, high, low excluded); n is checked where it is declared.
OPTION_RANGES = {"temperature": (0, None, True), "score_temperature": (0, None, True), "top_p": (0, 1, True), "top_k": (0, None, False),
                 "max_tokens": (1, None, False), "sync_steps": (0, None, False), "mixup": (0, 1, False), "coef": (0, 1, False), "on_policy": (0, 1, False),
                 "gamma": (0, 1, False), "lam": (0, 1, False), "q": (0, 1, False), "decay": (0, 1, False),
                 "passes": (1, None, False), "minibatches": (1, None, False), "micro_batches": (0, None, False),
                 "lr_scale": (0, None, True), "warmup_steps": (0, None, False),
                 "max_turns": (1, None, False), "tool_timeout": (0, None, True)}


def option_range_error(name: str, value) -> str | None:
    """Why a constant option's value is out of its range, or None when it is in range."""
    if name not in OPTION_RANGES or isinstance(value, bool):
        return None
    low, high, open_low = OPTION_RANGES[name]
    if (value <= low if open_low else value < low) or (high is not None and value > high):
        bounds = f"{'>' if open_low else '≥'} {low}" + (f" and ≤ {high}" if high is not None else "")
        return f"option `{name}` must be {bounds}, got {value!r}"
    return None

ALL = sorted(set(QUERIES) | set(SUGAR) | set(SET_FUNCS) | set(EPISODE_FUNCS) | set(OPS) | set(SCANS) | set(RANDOM) | {AT_LAST}
             | set(ROLE_SOURCES) | set(REWARD_SOURCES) | set(ROLLOUTS) | set(SET_BUILDERS) | {"old"})
