"""Fuzzing: no input, however malformed, makes ptdsl raise anything but SpecError,
hang, report an internal error (E0901), or compile a spec whose loss cannot run.

Generators (tests/fuzzing.py): grammar-aware whole specs, AST-level mutations and
children of library specs, token-level mutations, random text. Each spec gets a time
budget (SIGALRM, SPEC_SECONDS); a computation stuck in C code, where the alarm cannot
interrupt it, is caught by a faulthandler backstop that writes the spec and the stack
to HANG_LOG and ends the process. A spec that compiles must run: on random inputs
(ptdsl/equivalence/strategies.py), `.loss` and its gradient equal the IR interpreter's.

The default run checks a few thousand specs; `pytest -m slow tests/test_fuzz.py` checks
PTDSL_FUZZ_EXAMPLES of them (default 100,000) and prints what it found, by outcome.
"""
from __future__ import annotations

import faulthandler
import os
import re
import signal
import sys
import tempfile
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import ptdsl
from ptdsl.equivalence.strategies import inputs as input_strategy, trainable_names
from tests.fuzzing import ast_mutated, generated, mutated
from tests.helpers import loss_and_grads
from tests.near_ties import flipped_near_tie

SPEC_SECONDS = 20           # one spec: compile, and run its loss
HANG_LOG = Path(tempfile.gettempdir()) / "ptdsl-fuzz-hang.txt"
MAX_GROUP = 8               # larger rollouts are compiled, but their loss is not run here
CODE = re.compile(r"E0[1-5]\d\d")  # user-error codes; E09xx is a bug in ptdsl
OUTCOMES = Counter()


class SpecTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise SpecTimeout(f"a spec took more than {SPEC_SECONDS} s")


@contextmanager
def time_limit(text: str):
    """SIGALRM for Python-level hangs; faulthandler for one inside a C call, which the alarm
    cannot interrupt (before issue 9's fix, Python big-int powers were such a hang)."""
    HANG_LOG.write_text(f"ptdsl fuzz: this spec hung; stacks follow\n{text}\n\n")
    log = HANG_LOG.open("a")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, SPEC_SECONDS)
    faulthandler.dump_traceback_later(SPEC_SECONDS * 3, exit=True, file=log)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        log.close()


class FuzzFailure(AssertionError):
    """A finding: `kind` is one of the outcomes the issue counts."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def check_spec(text: str, data, folder: Path) -> str:
    """Compile `text` (and run its loss); the outcome's name for the counts, or FuzzFailure."""
    path = folder / "fuzz.ptdsl"
    path.write_text(text, errors="surrogatepass")
    try:
        with time_limit(text):
            try:
                c = ptdsl.compile(str(path))
            except ptdsl.SpecError as err:
                return _rejected(err)
            except Exception as exc:
                raise FuzzFailure("uncaught exception", f"{type(exc).__name__}: {exc}") from exc
            return _run_loss(c, data)
    except SpecTimeout as exc:
        raise FuzzFailure("hang", str(exc)) from None


def _rejected(err: ptdsl.SpecError) -> str:
    codes = [d.code for d in err.diagnostics]
    if "E0901" in codes:
        raise FuzzFailure("E0901", str(err))
    if not codes or not all(CODE.fullmatch(code) for code in codes):
        raise FuzzFailure("bad diagnostic codes", f"{codes}\n{err}")
    str(err)  # renders
    return "rejected"


def _run_loss(c, data) -> str:
    if any((n or 1) > MAX_GROUP for n in c.graph.graph["rows"].values()):
        return "compiled (groups too large to run here)"
    x = data.draw(input_strategy([c.graph, c.unoptimised_graph]), label="inputs")
    names = trainable_names([c.unoptimised_graph])
    try:
        gen_loss, gen_g = loss_and_grads(lambda i: c.loss(i)[0], x, names)
        gen_m = c.loss(x)[1]
    except Exception as exc:
        raise FuzzFailure("compile-then-crash", f"{type(exc).__name__}: {exc}\n{c.source}") from exc
    ref_loss, ref_g = loss_and_grads(lambda i: c.interpret(i)[0], x, names)
    ref_m = c.interpret(x)[1]
    pairs = [("loss", gen_loss, ref_loss)] + [(f"grad {n}", gen_g[n], ref_g[n]) for n in names] \
        + [(f"metric {k}", gen_m.get(k), ref_m[k]) for k in ref_m]
    for what, a, b in pairs:
        if not _close(a, b):
            if flipped_near_tie(c, x):  # rounding decided a comparison (tests/near_ties.py)
                return "compiled and ran (a comparison within rounding went either way)"
            raise FuzzFailure("generated code differs from the interpreter", f"{what}: {a} vs {b}\n{c.source}")
    return "compiled and ran"


def _close(a, b) -> bool:
    """tests.helpers.assert_close's test (equal finiteness, rtol 1e-6, atol 1e-9, nan = nan), at a
    fraction of torch.testing's cost per call."""
    if a is None or a.shape != b.shape or bool(torch.isfinite(a).all()) != bool(torch.isfinite(b).all()):
        return False
    return bool(torch.allclose(a.detach().double(), b.detach().double(), rtol=1e-6, atol=1e-9, equal_nan=True))


SPECS = {"generated": generated(), "ast_mutated": ast_mutated(), "mutated": mutated(),
         "text": st.text(max_size=300)}
DEFAULT_COUNTS = {"generated": 800, "ast_mutated": 800, "mutated": 500, "text": 400}


def _fuzz(kind: str, n: int, folder: Path, collect: list | None = None) -> None:
    """n specs of one generator; a failure raises, or with `collect` is appended to it and
    written to folder/failure-N.ptdsl at once (a long run that is stopped keeps its findings).
    The default run's specs are fixed (the profile derandomizes: tests/conftest.py); a collecting
    run draws fresh ones for every chunk, else each chunk would repeat the first."""
    explore = {"derandomize": False} if collect is not None else {}
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck), **explore)
    @given(data=st.data())
    def one(data):
        warnings.simplefilter("ignore")  # torch's warnings on odd losses (std of one row) are not findings
        text = data.draw(SPECS[kind], label="spec")
        try:
            OUTCOMES[check_spec(text, data, folder)] += 1
        except FuzzFailure as exc:
            if collect is None:
                raise
            OUTCOMES[f"FAIL {exc.kind}"] += 1
            (folder / f"failure-{len(collect)}.ptdsl").write_text(f"# {exc}\n{text}", errors="surrogatepass")
            collect.append((text, str(exc)))
    one()


@pytest.mark.parametrize("kind", sorted(DEFAULT_COUNTS))
def test_fuzz(kind, tmp_path):
    _fuzz(kind, DEFAULT_COUNTS[kind], tmp_path)


@pytest.mark.slow
def test_fuzz_many(tmp_path):
    """PTDSL_FUZZ_EXAMPLES specs (default 100,000) over all generators, in chunks of 1,000 (a
    fresh hypothesis engine each); every failure is written under the pytest temp folder as it
    is found, counted by kind, and fails the test at the end."""
    total = int(os.environ.get("PTDSL_FUZZ_EXAMPLES", "100000"))
    weights = {"generated": 4, "ast_mutated": 4, "mutated": 2, "text": 1}
    failures: list = []
    OUTCOMES.clear()
    done = 0
    while done < total:
        for kind, w in weights.items():
            n = min(100 * w, total - done)
            if n > 0:
                _fuzz(kind, n, tmp_path, failures)
                done += n
        print(f"fuzz: {done} specs: {dict(OUTCOMES)}", file=sys.stderr, flush=True)
    print(f"fuzz outcomes over {done} specs: {dict(sorted(OUTCOMES.items()))}", file=sys.stderr)
    assert not failures, f"{len(failures)} failures, first: {failures[0][1]}; specs in {tmp_path}"


def test_cli_never_prints_traceback(tmp_path):
    import subprocess
    bad = tmp_path / "bad.ptdsl"
    bad.write_bytes(b"\xff\xfe method \x00 (((")
    proc = subprocess.run([sys.executable, "-m", "ptdsl", "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "error[E0" in proc.stderr
