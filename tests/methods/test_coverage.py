"""Every library method has at least one independent reference case, and every method TRL
1.16 implements a cross-check against TRL's own code.

The cases are the tests' own declarations (``checks`` in tests/reference_cases.py): every
test module under tests/methods and tests/equivalence is imported (importing runs no test)
and the ``checks`` of its tests are gathered. A new spec in methods/ therefore fails here
until some test compares its loss and gradient with a plain-torch reference, and, where TRL
implements it, with TRL.

``NOT_IN_TRL`` is the one hand-kept list: the methods TRL 1.16 does not implement, and why.
It cannot hide a method: an entry that has a TRL case, or that is not a library method,
fails too.
"""
from __future__ import annotations

import importlib
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from ptdsl import library
from tests.reference_cases import KINDS, REFERENCE, TRL

TESTS = Path(__file__).resolve().parents[1]
SCANNED = ("methods", "equivalence")

NO_TRAINER = "TRL 1.16 has no trainer or loss_type for it"
NOT_IN_TRL = {
    # offline preference
    "kto_pair": "TRL removed DPOTrainer's kto_pair loss; CPOTrainer rejects loss_type='kto_pair'",
    "cal_dpo": NO_TRAINER, "dpop": NO_TRAINER, "r_dpo": NO_TRAINER, "odpo": NO_TRAINER, "beta_dpo": NO_TRAINER,
    "sampo": NO_TRAINER, "tdpo1": NO_TRAINER, "tdpo2": NO_TRAINER, "slic": NO_TRAINER, "simper": NO_TRAINER,
    "gpo_exp": NO_TRAINER, "gpo_savage": NO_TRAINER, "gpo_truncated_quadratic": NO_TRAINER,
    "bco": "TRL 1.16 removed BCOTrainer (its unpaired BCO with running mean and UDM)",
    "sppo": "DPOTrainer has only the hard-label sppo_hard; the soft win-rate SPPO is not in TRL",
    # unlearning, several datasets
    "npo": NO_TRAINER, "npo_rt": NO_TRAINER,
    "dpo_sft_mix": "DPOTrainer's rpo_alpha adds NLL on the chosen responses of the same pairs, not on a second dataset",
    # listwise
    "pro": NO_TRAINER, "lipo": NO_TRAINER, "rrhf": NO_TRAINER, "infonca": NO_TRAINER,
    # reward models
    "orm": NO_TRAINER, "implicit_prm": NO_TRAINER,
    "prm": "TRL 1.16 removed PRMTrainer", "prm_last_step": "TRL 1.16 removed PRMTrainer",
    # online RL
    "ppo": "TRL 1.16 removed PPOTrainer", "ppo_critic": "TRL 1.16 removed PPOTrainer",
    "vapo": NO_TRAINER, "dual_clip_ppo": "TRL 1.16 removed PPOTrainer (it had no dual clip)",
    "reinforce": NO_TRAINER, "remax": NO_TRAINER, "reinforce_pp": NO_TRAINER, "reinforce_pp_baseline": NO_TRAINER,
    "gpg": NO_TRAINER, "opo": NO_TRAINER, "kimi_k15": NO_TRAINER, "rebel": NO_TRAINER,
    "grpo_k1": "GRPOTrainer's KL is k3 only",
    "gspo_token": "GRPOTrainer's importance_sampling_level is token or sequence; GSPO-token's mixed ratio is not in TRL",
    # online preference, self-training, distillation
    "xpo": "TRL 1.16 removed XPOTrainer", "nash_md": "TRL 1.16 removed NashMDTrainer", "spin": NO_TRAINER,
    "raft": NO_TRAINER, "rest_em": NO_TRAINER,
    "minillm": "TRL 1.16 removed MiniLLMTrainer", "distillm": NO_TRAINER,
}


def _module(path: Path):
    """The test module at `path`: the copy pytest already imported (under its basename), else
    an import under its dotted name."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)  # the name first: resolving every module's path is slow
        if file and file.endswith(path.name) and Path(file).resolve() == path:
            return module
    return importlib.import_module(".".join(path.relative_to(TESTS.parent).with_suffix("").parts))


def declared_cases() -> dict[str, dict[str, list[str]]]:
    """kind → method → the tests that declare a case of that kind for the method."""
    cases = {kind: defaultdict(list) for kind in KINDS}
    for folder in SCANNED:
        for path in sorted((TESTS / folder).glob("test_*.py")):
            for name, test in vars(_module(path.resolve())).items():
                for kind, method in getattr(test, "checks", ()):
                    cases[kind][method].append(f"{folder}/{path.name}::{name}")
    return cases


def gaps(names: list[str], cases) -> dict[str, list[str]]:
    """What the coverage rules find wrong, by rule (empty lists: nothing)."""
    return {
        "no reference case": [m for m in names if not cases[REFERENCE].get(m)],
        "no TRL case, and not listed in NOT_IN_TRL": [m for m in names if not cases[TRL].get(m) and m not in NOT_IN_TRL],
        "listed in NOT_IN_TRL but has a TRL case": sorted(m for m in NOT_IN_TRL if cases[TRL].get(m)),
        "listed in NOT_IN_TRL but not a library method": sorted(set(NOT_IN_TRL) - set(names)),
        "a case for a method the library does not have": sorted({m for kind in KINDS for m in cases[kind]} - set(names)),
    }


@pytest.fixture(scope="module")
def cases():
    return declared_cases()


@pytest.mark.parametrize("rule", ["no reference case", "no TRL case, and not listed in NOT_IN_TRL",
                                  "listed in NOT_IN_TRL but has a TRL case",
                                  "listed in NOT_IN_TRL but not a library method",
                                  "a case for a method the library does not have"])
def test_coverage(rule, cases):
    assert gaps(library.all_names(), cases)[rule] == []


def test_a_new_spec_without_cases_fails(cases, tmp_path, monkeypatch):
    """The rules above catch a spec added to the library with no test: a copy of the library
    plus one new spec, seen through `library.all_names`."""
    shutil.copytree(library.methods_dir(), tmp_path / "methods")
    (tmp_path / "methods" / "dpo_copy.ptdsl").write_text(
        (tmp_path / "methods" / "dpo.ptdsl").read_text().replace("method dpo ", "method dpo_copy "))
    monkeypatch.setattr(library, "methods_dir", lambda: tmp_path / "methods")
    found = gaps(library.all_names(), cases)
    assert found["no reference case"] == ["dpo_copy"]
    assert found["no TRL case, and not listed in NOT_IN_TRL"] == ["dpo_copy"]


def test_the_counts(cases):
    """Every one of the library's methods has a reference case; the TRL cases cover all but
    the NOT_IN_TRL methods (printed with -s for the record)."""
    names = library.all_names()
    print(f"{len(names)} methods; reference cases for {len(cases[REFERENCE])}, TRL cases for {len(cases[TRL])}, "
          f"{len(NOT_IN_TRL)} not in TRL 1.16")
    assert len(cases[TRL]) + len(NOT_IN_TRL) == len(names)
