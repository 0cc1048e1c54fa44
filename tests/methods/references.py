"""Plain-torch reference losses: the oracle the compiled methods are tested against.

Written from the formulas in ``/work/shared/METHODS.md`` (section ids quoted in each
docstring) and from the semantics and defaults of TRL 1.16, independently of the ptdsl
compiler.  They are meant to be read, not to be fast: one formula per line, no fusion,
no in-place tricks.

Inputs
------
Every function takes ``inputs``, a dict of tensors keyed by the canonical leaf names of
ptdsl specs, plus keyword params.  Token-level tensors are ``[rows, T]`` and aligned with
the bool mask of their sequence set, e.g. ``logprobs(policy, chosen)`` with
``mask(chosen)``.  Positions where the mask is False may hold *anything* (huge numbers,
nan, inf): every reference selects the masked positions with ``torch.where`` before doing
arithmetic, so garbage neither leaks into the value nor into the gradient.

Notation (METHODS.md section 0), for a set S with mask m and token log-probs l:

* ``logp(S)      = sum_t m_t * l_t``            (per-sequence sum)
* ``|S|          = sum_t m_t``                  (completion length)
* ``mean_logp(S) = logp(S) / |S|``              (token mean)
* ``h(S)         = logp_policy(S) - logp_reference(S)``

Everything is computed in the dtype of the inputs (float64 in the tests).  Each function
returns a scalar tensor that is differentiable w.r.t. the ``logprobs(policy, ...)`` inputs.

``DEFAULTS`` lists exactly the params of the method contract with their defaults (TRL
1.16 defaults except where the contract fixes a value; see the docstrings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Inputs = dict[str, torch.Tensor]

DEFAULTS: dict[str, dict[str, float | int]] = {
    "sft": {},
    "dpo": {"beta": 0.1, "label_smoothing": 0.0},
    "cdpo": {"beta": 0.1, "label_smoothing": 0.1},
    "ipo": {"beta": 0.1},
    "simpo": {"beta": 0.1, "gamma": 0.5, "label_smoothing": 0.0},
    "orpo": {"beta": 0.1},
    "kto": {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0},
    "grpo": {"beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.2, "n": 8},
    "dr_grpo": {"beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.2, "n": 8, "max_completion_length": 512},
    "dapo": {"beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.28, "n": 8},
}


# ----------------------------------------------------------------------------------------
# Building blocks (sequence-level reductions over the masked tokens only)
# ----------------------------------------------------------------------------------------


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` where ``mask`` is True, exactly 0 elsewhere (garbage-proof, also for grads)."""
    return torch.where(mask, values, torch.zeros_like(values))


def _length(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``|S|`` per row, as a float tensor of ``dtype``."""
    return mask.sum(dim=-1).to(dtype)


def _logp(inputs: Inputs, model: str, seqs: str) -> torch.Tensor:
    """``logp(model, seqs) = sum_t m_t * logprobs(model, seqs)_t`` per row."""
    mask = inputs[f"mask({seqs})"]
    return _masked(inputs[f"logprobs({model}, {seqs})"], mask).sum(dim=-1)


def _mean_logp(inputs: Inputs, model: str, seqs: str) -> torch.Tensor:
    """``mean_logp(model, seqs) = logp(model, seqs) / |seqs|`` per row."""
    logp = _logp(inputs, model, seqs)
    return logp / _length(inputs[f"mask({seqs})"], logp.dtype)


def _token_mean_nll(inputs: Inputs, seqs: str) -> torch.Tensor:
    """``-sum_{i,t} m * logprobs(policy, seqs) / sum_{i,t} m`` over the whole batch (METHODS.md S1)."""
    mask = inputs[f"mask({seqs})"]
    logprobs = inputs[f"logprobs(policy, {seqs})"]
    total = _masked(logprobs, mask).sum()
    return -total / mask.sum().to(logprobs.dtype)


def _log_ratio(inputs: Inputs, seqs: str) -> torch.Tensor:
    """``h(seqs) = logp(policy, seqs) - logp(reference, seqs)`` per row."""
    return _logp(inputs, "policy", seqs) - _logp(inputs, "reference", seqs)


def _smoothed_logistic(u: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """``-(1 - ls) * log sigma(u) - ls * log sigma(-u)`` elementwise."""
    return -(1.0 - label_smoothing) * F.logsigmoid(u) - label_smoothing * F.logsigmoid(-u)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for x < 0, computed as ``log(-expm1(x))`` (no cancellation near 0)."""
    return torch.log(-torch.expm1(x))


# ----------------------------------------------------------------------------------------
# S — supervised
# ----------------------------------------------------------------------------------------


def sft(inputs: Inputs) -> torch.Tensor:
    """SFT / NLL (METHODS.md S1; TRL ``SFTConfig(loss_type="nll")``).

    ``L = -sum_{i,t} m_{i,t} l_{i,t} / sum_{i,t} m_{i,t}`` with ``l = logprobs(policy, completion)``,
    ``m = mask(completion)``: one token mean over all completion tokens of the batch (not a
    mean of per-sequence means).
    """
    return _token_mean_nll(inputs, "completion")


# ----------------------------------------------------------------------------------------
# P — pairwise, reference-based
# ----------------------------------------------------------------------------------------


def _dpo_family(inputs: Inputs, beta: float, label_smoothing: float) -> torch.Tensor:
    z = beta * (_log_ratio(inputs, "chosen") - _log_ratio(inputs, "rejected"))
    return _smoothed_logistic(z, label_smoothing).mean()


def dpo(inputs: Inputs, *, beta: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (METHODS.md P1; TRL ``DPOConfig(loss_type="sigmoid")``).

    ``h(y) = logp_policy(y) - logp_ref(y)`` (token sums), ``z = beta * (h(chosen) - h(rejected))``,
    ``L = mean_batch[ -(1 - ls) log sigma(z) - ls log sigma(-z) ]``.
    With the default ``label_smoothing = 0`` this is ``mean_batch[-log sigma(z)]``.
    """
    return _dpo_family(inputs, beta, label_smoothing)


def cdpo(inputs: Inputs, *, beta: float = 0.1, label_smoothing: float = 0.1) -> torch.Tensor:
    """cDPO, conservative DPO (METHODS.md P2).

    Same formula as :func:`dpo` with a non-zero default ``label_smoothing = 0.1``:
    ``L = mean_batch[ -(1 - ls) log sigma(z) - ls log sigma(-z) ]``.
    (TRL >= 0.29 no longer applies ``label_smoothing`` to ``loss_type="sigmoid"``; the formula
    is the TRL <= 0.28 one, which TRL 1.16 still uses in CPO's ``sigmoid`` loss.)
    """
    return _dpo_family(inputs, beta, label_smoothing)


def ipo(inputs: Inputs, *, beta: float = 0.1) -> torch.Tensor:
    """IPO, TRL 1.x length-normalised form (METHODS.md P4; TRL ``DPOConfig(loss_type="ipo")``).

    ``L = mean_batch[ (h(chosen)/|chosen| - h(rejected)/|rejected| - 1/(2 beta))^2 ]`` where each
    log-ratio is divided by its own completion length.
    """
    h_chosen = _log_ratio(inputs, "chosen")
    h_rejected = _log_ratio(inputs, "rejected")
    chosen = h_chosen / _length(inputs["mask(chosen)"], h_chosen.dtype)
    rejected = h_rejected / _length(inputs["mask(rejected)"], h_rejected.dtype)
    return ((chosen - rejected - 1.0 / (2.0 * beta)) ** 2).mean()


# ----------------------------------------------------------------------------------------
# R — pairwise, reference-free
# ----------------------------------------------------------------------------------------


def simpo(inputs: Inputs, *, beta: float = 0.1, gamma: float = 0.5, label_smoothing: float = 0.0) -> torch.Tensor:
    """SimPO (METHODS.md R2; TRL ``CPOConfig(loss_type="simpo", cpo_alpha=0.0)``).

    ``d = mean_logp_policy(chosen) - mean_logp_policy(rejected)``, ``u = beta * d - gamma``,
    ``L = mean_batch[ -(1 - ls) log sigma(u) - ls log sigma(-u) ]``.  No reference model.
    """
    d = _mean_logp(inputs, "policy", "chosen") - _mean_logp(inputs, "policy", "rejected")
    u = beta * d - gamma
    return _smoothed_logistic(u, label_smoothing).mean()


def orpo(inputs: Inputs, *, beta: float = 0.1) -> torch.Tensor:
    """ORPO (METHODS.md R5; TRL ``trl.experimental.orpo.ORPOConfig(beta=lambda)``).

    ``a = mean_logp_policy(chosen)``, ``b = mean_logp_policy(rejected)``,
    ``log_odds = (a - b) - (log(1 - e^a) - log(1 - e^b))`` (``log(1 - e^x)`` as ``log(-expm1(x))``),
    ``L = NLL(chosen) - mean_batch[ beta * log sigma(log_odds) ]`` where
    ``NLL(chosen) = -sum_{i,t} m l / sum_{i,t} m`` over all chosen completion tokens of the batch.
    (TRL computes the odds-ratio term in float32; this reference stays in the input dtype.)
    """
    a = _mean_logp(inputs, "policy", "chosen")
    b = _mean_logp(inputs, "policy", "rejected")
    log_odds = (a - b) - (_log1mexp(a) - _log1mexp(b))
    nll = _token_mean_nll(inputs, "chosen")
    return nll - (beta * F.logsigmoid(log_odds)).mean()


# ----------------------------------------------------------------------------------------
# U — unpaired / binary feedback
# ----------------------------------------------------------------------------------------


def kto(
    inputs: Inputs, *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> torch.Tensor:
    """KTO (METHODS.md U1; TRL ``KTOConfig(loss_type="kto")``).

    Reference point from the mismatched pairs (prompt i with completion i-1, built by the runtime):
    ``z0 = sg(max(0, mean_batch[ logp_policy(y') - logp_ref(y') ]))`` (detached).
    With ``h = logp_policy(completion) - logp_ref(completion)`` per row:

    * desirable rows (``label`` True):   ``desirable_weight   * (1 - sigma(beta * (h - z0)))``
    * undesirable rows (``label`` False): ``undesirable_weight * (1 - sigma(beta * (z0 - h)))``

    ``L`` = mean over all rows of the batch.
    """
    mismatched = "mismatched(completion)"
    kl = _logp(inputs, "policy", mismatched) - _logp(inputs, "reference", mismatched)
    z0 = kl.mean().clamp(min=0.0).detach()
    h = _log_ratio(inputs, "completion")
    desirable_loss = desirable_weight * (1.0 - torch.sigmoid(beta * (h - z0)))
    undesirable_loss = undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - h)))
    per_row = torch.where(inputs["label"].to(torch.bool), desirable_loss, undesirable_loss)
    return per_row.mean()


# ----------------------------------------------------------------------------------------
# G — online RL with group-relative advantages (TRL GRPOTrainer, METHODS.md 8.0)
# ----------------------------------------------------------------------------------------


def _group_advantages(rewards: torch.Tensor, n: int, scale: bool) -> torch.Tensor:
    """Per-row advantage for contiguous groups of ``n`` rows (METHODS.md 8.0 step 3).

    ``A_i = R_i - mean_group(R)``, divided by ``(std_group(R) + 1e-4)`` when ``scale``; std is the
    Bessel-corrected (n - 1) standard deviation.  A group of one sample has std 0 (as TRL does
    when ``num_generations == 1``), so its advantage is 0.
    """
    groups = rewards.reshape(-1, n)
    mean = groups.mean(dim=1, keepdim=True)
    centred = groups - mean
    if not scale:
        return centred.reshape(-1)
    if n > 1:
        std = torch.sqrt((centred**2).sum(dim=1, keepdim=True) / (n - 1))
    else:
        std = torch.zeros_like(mean)
    return (centred / (std + 1e-4)).reshape(-1)


def _clipped_surrogate_per_token(
    inputs: Inputs,
    advantages: torch.Tensor,
    *,
    beta: float,
    epsilon: float,
    epsilon_high: float,
    use_bias_correction_kl: bool,
) -> torch.Tensor:
    """Per-token loss ``l_{i,t}`` ([rows, T]; 0 on masked-out positions).

    ``ratio = exp(l_policy - l_old)``;
    ``l = -min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A)``;
    if ``beta > 0``: ``l += beta * k3`` with ``k3 = exp(l_ref - l_pol) - (l_ref - l_pol) - 1``,
    multiplied by the (differentiable, unclipped) ``ratio`` when ``use_bias_correction_kl``.
    """
    mask = inputs["mask(y)"]
    policy = _masked(inputs["logprobs(policy, y)"], mask)
    old = _masked(inputs["logprobs(old, y)"], mask)
    ratio = torch.exp(policy - old)
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
    adv = advantages.to(policy.dtype).unsqueeze(1)
    per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)
    if beta != 0.0:
        reference = _masked(inputs["logprobs(reference, y)"], mask)
        d = reference - policy
        k3 = torch.exp(d) - d - 1.0
        if use_bias_correction_kl:
            k3 = k3 * ratio
        per_token = per_token + beta * k3
    return _masked(per_token, mask)


def grpo(
    inputs: Inputs,
    *,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float = 0.2,
    n: int = 8,
    use_bias_correction_kl: bool = True,
) -> torch.Tensor:
    """GRPO (METHODS.md G9 and 8.0; TRL ``GRPOConfig(loss_type="grpo")``, ``scale_rewards="group"``).

    Rows are ``P`` prompts x ``n`` samples in contiguous groups.
    ``A_i = (R_i - mean_group R) / (std_group R + 1e-4)`` (Bessel std), per-token ``l`` as in
    :func:`_clipped_surrogate_per_token`, and
    ``L = (1/B) sum_i (sum_t m_{i,t} l_{i,t}) / |y_i|`` (per-sequence token mean, then mean over rows).

    ``use_bias_correction_kl`` is not a contract param (not in ``DEFAULTS``): it mirrors TRL 1.16's
    ``GRPOConfig.use_bias_correction_kl`` whose default is True, and matters only when ``beta > 0``.
    """
    mask = inputs["mask(y)"]
    advantages = _group_advantages(inputs["r(y)"], n, scale=True)
    per_token = _clipped_surrogate_per_token(
        inputs,
        advantages,
        beta=beta,
        epsilon=epsilon,
        epsilon_high=epsilon_high,
        use_bias_correction_kl=use_bias_correction_kl,
    )
    per_sequence = per_token.sum(dim=1) / _length(mask, per_token.dtype)
    return per_sequence.mean()


def dr_grpo(
    inputs: Inputs,
    *,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float = 0.2,
    n: int = 8,
    max_completion_length: int = 512,
    use_bias_correction_kl: bool = True,
) -> torch.Tensor:
    """Dr. GRPO (METHODS.md G10; TRL ``loss_type="dr_grpo"`` **with** ``scale_rewards="none"``).

    ``A_i = R_i - mean_group R`` (no std division), same per-token ``l`` as :func:`grpo`,
    ``L = sum_{i,t} m l / (B * max_completion_length)`` with ``B`` the number of rows.
    """
    mask = inputs["mask(y)"]
    advantages = _group_advantages(inputs["r(y)"], n, scale=False)
    per_token = _clipped_surrogate_per_token(
        inputs,
        advantages,
        beta=beta,
        epsilon=epsilon,
        epsilon_high=epsilon_high,
        use_bias_correction_kl=use_bias_correction_kl,
    )
    rows = mask.shape[0]
    return per_token.sum() / (rows * max_completion_length)


def dapo(
    inputs: Inputs,
    *,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float = 0.28,
    n: int = 8,
    use_bias_correction_kl: bool = True,
) -> torch.Tensor:
    """DAPO loss (METHODS.md G11; TRL ``loss_type="dapo"``, clip-higher ``epsilon_high=0.28``).

    Group-std-scaled advantages as :func:`grpo`, same per-token ``l``, and
    ``L = sum_{i,t} m l / sum_{i,t} m`` (one token mean over the whole batch; single process,
    no gradient accumulation).  Dynamic sampling and overlong shaping are outside the loss.
    """
    mask = inputs["mask(y)"]
    advantages = _group_advantages(inputs["r(y)"], n, scale=True)
    per_token = _clipped_surrogate_per_token(
        inputs,
        advantages,
        beta=beta,
        epsilon=epsilon,
        epsilon_high=epsilon_high,
        use_bias_correction_kl=use_bias_correction_kl,
    )
    return per_token.sum() / mask.sum().to(per_token.dtype)


METHODS = {
    "sft": sft,
    "dpo": dpo,
    "cdpo": cdpo,
    "ipo": ipo,
    "simpo": simpo,
    "orpo": orpo,
    "kto": kto,
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "dapo": dapo,
}
