"""No input, however malformed, makes ptdsl raise anything but SpecError (and the
CLI never prints a traceback): mutated library specs and random text."""
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings, strategies as st

import ptdsl
from ptdsl import library

SPECS = [p.read_text() for p in library.all_paths().values()]
TOKENS = ["(", ")", ",", "=", "+", "-", "*", "/", "^", ">", "in", "[", "let", "loss", "policy", "chosen",
          "logp", "mean", "y", "r", "0", "1e-4", '"', "#", "\n", "not", "and", "where", "extends", "dpo",
          "sample", "n", "old", "stopgrad", "group_std", "mismatched", "param", "metric"]


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SPECS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 12)))
        insert = draw(st.sampled_from(TOKENS + [""]))
        text = text[:i] + insert + text[j:]
    return text


def _load(tmp_path, text):
    f = tmp_path / "fuzz.ptdsl"
    f.write_text(text)
    try:
        ptdsl.compile(str(f))
    except ptdsl.SpecError as err:
        assert err.diagnostics and all(d.code.startswith("E0") for d in err.diagnostics)
        assert "E0901" not in {d.code for d in err.diagnostics}, str(err)
        str(err)  # renders


@settings(max_examples=150)
@given(text=mutated())
def test_mutated_specs_give_diagnostics(tmp_path_factory, text):
    _load(tmp_path_factory.mktemp("f"), text)


@settings(max_examples=100)
@given(text=st.text(max_size=200))
def test_random_text_gives_diagnostics(tmp_path_factory, text):
    _load(tmp_path_factory.mktemp("f"), text)


def test_cli_never_prints_traceback(tmp_path):
    bad = tmp_path / "bad.ptdsl"
    bad.write_bytes(b"\xff\xfe method \x00 (((")
    proc = subprocess.run([sys.executable, "-m", "ptdsl", "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "error[E0" in proc.stderr
