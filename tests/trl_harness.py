"""TRL 1.16's own loss code, run without a model: the stand-ins every TRL cross-check shares.

TRL keeps its losses inside trainer methods. A cross-check calls the unbound method with a
stand-in ``self`` (``stub``: exactly the attributes the method reads, and a single-process
``Accelerator``) and stand-in models that return the test's numbers:

* ``FusedLM`` replaces a model patched by ``trl.trainer.utils.add_fused_lm_head`` (what DPO,
  KTO and SFT ask for with ``fused_lm_head=True``). It looks a batch up by its ``input_ids``
  and returns the given per-token log-probs (and, for WPO, ``log Σ_v π²``), exactly 0 where
  the label is −100, as the real fused head does. ``layout`` puts a sequence set down as one
  prompt token, the completion, then padding, so TRL's shifted completion mask is ``mask(S)``.
* ``LogitsLM`` returns fixed logits (CPO, ORPO and TPO compute log-probs from logits).

The drivers of the trainers more than one test module uses live in trl_drivers.py.

The stand-ins follow TRL 1.16.0's attribute layout exactly, so ``needs_trl`` fails a test on
any other TRL instead of skipping it, and skips only where TRL is missing together with the
rest of the test extra (a plain ``pip install .``).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import tomllib
import types
import warnings
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = Path(__file__).resolve().parents[1]
PIN = "1.16.0"   # the TRL whose trainer internals the stand-ins follow

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import trl
        import trl.trainer.utils as trl_utils
    TRL_VERSION: str | None = trl.__version__
except ImportError:
    TRL_VERSION, trl_utils = None, None


def test_extra() -> list[str]:
    """The requirements of pyproject.toml's `test` extra."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]["test"]


def _installed(requirement: str) -> bool:
    name = requirement.split(">")[0].split("=")[0].split("<")[0].strip()
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def trl_problem(version: str | None = TRL_VERSION, installed=_installed) -> tuple[str, str] | None:
    """None if TRL 1.16.0 is importable, else ("skip" | "fail", why)."""
    if version == PIN:
        return None
    if version is not None:
        return "fail", (f"found trl {version}; the TRL cross-checks drive trainer internals of trl=={PIN} "
                        "(install the test extra: pip install '.[test]')")
    if all(installed(r) for r in test_extra() if not r.startswith("trl")):
        return "fail", f"trl is not importable although the rest of the test extra is installed: pip install trl=={PIN}"
    return "skip", f"needs trl=={PIN} (pip install '.[test]')"


def needs_trl(test, problem=None):
    """Decorator for a test that drives TRL's code: runs it on TRL 1.16.0, fails it on any
    other TRL (or a broken test extra), skips it only without the test extra."""
    problem = problem or trl_problem()
    if problem is None:
        return test
    action, why = problem
    if action == "skip":
        return pytest.mark.skip(reason=why)(test)

    def fails():
        pytest.fail(why, pytrace=False)
    fails.__name__, fails.__qualname__, fails.__module__ = test.__name__, test.__qualname__, test.__module__
    fails.checks = getattr(test, "checks", ())  # keeps its coverage declaration (tests/reference_cases.py)
    return fails


class Accelerator:
    """A single process: every collective is the identity; ``backward`` records the loss."""

    device = torch.device("cpu")
    num_processes = 1
    process_index = 0
    sync_gradients = True
    parallelism_config = None

    def __init__(self):
        self.loss = None

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x

    def backward(self, loss, **kwargs):
        self.loss = loss

    def autocast(self):
        return contextlib.nullcontext()


def metrics() -> defaultdict:
    return defaultdict(lambda: defaultdict(list))


def stub(cls=None, methods=(), **attrs) -> SimpleNamespace:
    """A stand-in ``self``: ``attrs`` as attributes, ``methods`` of ``cls`` bound to it."""
    attrs.setdefault("accelerator", Accelerator())
    attrs.setdefault("_metrics", metrics())
    attrs.setdefault("_total_train_tokens", 0)
    attrs.setdefault("_tp_size", 1)
    attrs.setdefault("aux_loss_enabled", False)
    this = SimpleNamespace(**attrs)
    for name in methods:
        setattr(this, name, types.MethodType(getattr(cls, name), this))
    return this


class FusedLM(torch.nn.Module):
    """A model patched with ``add_fused_lm_head``: per-token outputs looked up by ``input_ids``.

    ``table`` holds ``(input_ids, log_probs)`` or ``(input_ids, log_probs, log_sum_sq)`` per
    batch the model will see; column t of ``log_probs`` scores token t + 1.
    """

    is_gradient_checkpointing = False

    def __init__(self, table):
        super().__init__()  # a Module: accelerate's is_peft_model (TRL calls it) walks _modules
        self.table = table

    def forward(self, input_ids=None, labels=None, fused_lm_head=False, **kwargs):
        assert fused_lm_head, "TRL is expected to ask for the fused LM head"
        found = [row[1:] for row in self.table if row[0].shape == input_ids.shape and torch.equal(row[0], input_ids)]
        assert len(found) == 1, "a batch the stand-in was not given"
        log_probs, *sq = found[0]
        mask = labels[:, 1:] != -100
        zero = torch.zeros((), dtype=log_probs.dtype)
        log_probs = torch.where(mask, log_probs, zero)
        sq = torch.where(mask, sq[0], zero).detach() if sq and sq[0] is not None else torch.zeros_like(log_probs)
        return trl_utils.FusedCausalLMOutput(
            loss=-log_probs.sum() / mask.sum().clamp(min=1), log_probs=log_probs, entropy=torch.zeros_like(log_probs),
            log_sum_sq_probs=sq, mean_logits=torch.zeros_like(log_probs), is_top1=torch.zeros_like(mask),
            label_mask=mask)


class LogitsLM:
    """A causal LM that returns fixed logits for the one batch it expects."""

    training = True

    def __init__(self, logits, input_ids):
        self.logits, self.input_ids = logits, input_ids

    def __call__(self, input_ids, attention_mask=None, use_cache=None, **kwargs):
        assert torch.equal(input_ids, self.input_ids), "a batch the stand-in was not given"
        return SimpleNamespace(logits=self.logits)


def layout(mask: torch.Tensor, code: int, width: int | None = None):
    """One prompt token, the completion (its mask's pattern), padding: ``input_ids``,
    ``attention_mask`` and ``completion_mask`` of shape [rows, width + 1] (``width``: the
    mask's T by default). ``code`` makes the ids of different sets differ."""
    rows, t = mask.shape
    width = t if width is None else width
    padded = torch.zeros(rows, width, dtype=torch.bool)
    padded[:, :t] = mask
    ones = torch.ones(rows, 1, dtype=torch.long)
    completion = torch.cat([torch.zeros_like(ones), padded.long()], dim=1)
    attention = torch.cat([ones, padded.long()], dim=1)
    ids = (torch.arange(width + 1) + 1 + 100 * code).repeat(rows, 1) * attention
    return ids, attention, completion


def pad_tokens(x: torch.Tensor, width: int) -> torch.Tensor:
    """[rows, T, ...] → [rows, width, ...], zero-padded on the token axis."""
    pad = torch.zeros((x.shape[0], width - x.shape[1], *x.shape[2:]), dtype=x.dtype)
    return torch.cat([x, pad], dim=1)


def zero_outside(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """What a real model hands TRL on padding: finite numbers (0 here), which TRL masks."""
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype))
