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

QUERIES = {  # name → (level kind, leaf kind)
    "logprobs": ("token", "logprobs"),
    "entropy": ("token", "entropy"),
    "logits": ("vocab", "logits"),
    "values": ("token", "values"),
    "score": ("seq", "score"),
    "token_score": ("token", "token_score"),  # the classifier head at every token (token classification)
}
SUGAR = {"logp": "sum_tokens", "mean_logp": "mean_tokens"}  # reductions of logprobs(M, S)
SET_FUNCS = ("mask", "length", "position")
# Training time, supplied by the runtime at every optimizer step: optimizer steps done (0 at the
# first), progress from 0 at the first step to 1 at the last, and complete passes over the data.
# They are names, not calls, and nothing may rebind them.
TIME = ("step", "progress", "epoch")

OPS = {  # builtin name → IR op (arity from the op table)
    **{n: n for n in ("exp", "log", "log1p", "expm1", "sigmoid", "logsigmoid", "softplus", "relu",
                      "abs", "sqrt", "square", "tanh", "log1mexp", "sign", "stopgrad", "clip",
                      "where", "logaddexp", "sum_tokens", "mean_tokens", "token_mean", "token_sum",
                      "mean", "sum", "std", "group_mean", "group_std", "group_sum", "softmax",
                      "log_softmax", "sum_vocab", "whiten", "sort_rows", "running_mean",
                      "group_max", "group_min", "group_logsumexp", "group_suffix_logsumexp",
                      "sum_pairs", "group_rank", "running_var", "row_rank", "num_rows", "token_rank",
                      "sum_group", "mean_group")},
    "other": "pair_other",
    "min": "minimum", "max": "maximum", "max_rows": "max_rows", "min_rows": "min_rows",
}
SCANS = {"gae": ("gae", 2, ("gamma", "lam")), "discounted_sum": ("discounted_sum", 1, ("gamma",)),
         "token_quantile": ("token_quantile", 1, ("q",)), "ema": ("ema", 1, ("decay", "init"))}
# Scans whose options may be expressions (values the loss computes: per row, per token, or of the
# training time); with constant options they keep their own op and its fast path.
VARYING_SCANS = {"gae": "gae_varying"}
OPTIONAL = {"init"}  # options a scan may leave out (ema: absent, it starts at the first batch's mean)
# Random draws: `uniform(x)` U[0, 1) at x's level; `bernoulli(p, x)` is `uniform(x) < p`.
RANDOM = {"uniform": 1, "bernoulli": 2}
AT_LAST = "at_last"  # at_last(x, S): a per-sequence value at the last token of set S

ROLE_SOURCES = ("frozen", "model", "value_head", "critic", "geometric_mixture")
REWARD_SOURCES = ("verifier", "reward_model")
ROLLOUTS = ("sample",)
SET_BUILDERS = ("mismatched", "best", "worst")
SAMPLE_OPTIONS = {"n": "int", "temperature": "float", "top_p": "float", "top_k": "int",
                  "max_tokens": "int", "mask_truncated": "bool", "greedy": "bool",
                  "score_temperature": "float",  # log-probs of the samples at this T (default: temperature)
                  "on_policy": "float",  # probability that a batch samples; else the dataset's completions (GKD λ)
                  "once": "bool"}  # a frozen model's samples, drawn once per prompt and reused (A*-PO's V*)
FROZEN_OPTIONS = {"sync_steps": "int", "mixup": "float"}  # TR-DPO: θ_ref ← mixup·θ + (1 − mixup)·θ_ref
# `update passes = P, minibatches = M` (or `micro_batches = K`, TRL's steps_per_generation; 0: --grad-accum)
UPDATE_OPTIONS = {"passes": "int", "minibatches": "int", "micro_batches": "int"}
# `critic(policy)` / `critic("path")`: a separate value model, its learning rate a multiple of the
# policy's (unless --critic-lr) and, for its first `warmup_steps` optimizer steps, the only learner
CRITIC_OPTIONS = {"lr_scale": "float", "warmup_steps": "int"}
MIXTURE_OPTIONS = {"coef": "float"}  # geometric_mixture(A, B, coef = μ): sample ∝ exp((1 − μ)·z_A + μ·z_B)
# Valid ranges of constant options (low, high, low excluded); n is checked where it is declared.
OPTION_RANGES = {"temperature": (0, None, True), "score_temperature": (0, None, True), "top_p": (0, 1, True), "top_k": (0, None, False),
                 "max_tokens": (1, None, False), "sync_steps": (0, None, False), "mixup": (0, 1, False), "coef": (0, 1, False), "on_policy": (0, 1, False),
                 "gamma": (0, 1, False), "lam": (0, 1, False), "q": (0, 1, False), "decay": (0, 1, False),
                 "passes": (1, None, False), "minibatches": (1, None, False), "micro_batches": (0, None, False),
                 "lr_scale": (0, None, True), "warmup_steps": (0, None, False)}


def option_range_error(name: str, value) -> str | None:
    """Why a constant option's value is out of its range, or None when it is in range."""
    if name not in OPTION_RANGES or isinstance(value, bool):
        return None
    low, high, open_low = OPTION_RANGES[name]
    if (value <= low if open_low else value < low) or (high is not None and value > high):
        bounds = f"{'>' if open_low else '≥'} {low}" + (f" and ≤ {high}" if high is not None else "")
        return f"option `{name}` must be {bounds}, got {value!r}"
    return None

ALL = sorted(set(QUERIES) | set(SUGAR) | set(SET_FUNCS) | set(OPS) | set(SCANS) | set(RANDOM) | {AT_LAST}
             | set(ROLE_SOURCES) | set(REWARD_SOURCES) | set(ROLLOUTS) | set(SET_BUILDERS) | {"old"})
