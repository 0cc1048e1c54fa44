"""Golden tests of rendered diagnostics: `ptdsl check` on each broken spec in
tests/golden/ prints exactly the committed .txt (compiler-style: file:line:col,
the source line, carets, code and help) and exits 1; a spec whose .txt holds only
warnings compiles, so `check` prints them, then `ok: …`, and exits 0.

They run in-process through the CLI's own `main()` (a subprocess per spec cost a Python
start each). Regenerate after an intended change with `python tests/regenerate_golden.py`:
a test run never writes the expected files."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.regenerate_golden import GOLDEN, check  # noqa: E402


@pytest.mark.parametrize("spec", GOLDEN, ids=lambda p: p.stem)
def test_golden(spec):
    rel = str(spec.relative_to(ROOT))
    code, out, err = check(rel)
    expected = spec.with_suffix(".txt").read_text()
    if "error[" in expected:
        assert code == 1
        assert out == ""
    else:  # warnings only
        assert code == 0
        assert out.startswith("ok: ") and out.endswith(f"({rel})\n")
    assert "Traceback" not in err
    assert err == expected


def test_every_golden_names_a_code_with_a_page():
    import re
    for txt in (ROOT / "tests" / "golden").glob("*.txt"):
        for code in re.findall(r"(?:error|warning)\[([EW]\d{4})\]", txt.read_text()):
            assert (ROOT / "docs" / "errors" / f"{code}.md").is_file(), f"{code} has no docs/errors page"


# ---- internal errors: every stage is guarded, and the CLI exits 3 --------------------

def _boom(*args, **kwargs):
    raise RuntimeError("injected fault")


@pytest.mark.parametrize("stage", ["parse", "resolve", "bind", "fold_constants"])
def test_a_crash_in_any_stage_is_e0901_never_a_bare_exception(monkeypatch, stage):
    import ptdsl
    import ptdsl.compiler
    monkeypatch.setattr(ptdsl.compiler, stage, _boom)
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile("dpo")
    (d,) = info.value.diagnostics
    assert d.code == "E0901" and "RuntimeError: injected fault" in d.notes[0]


@pytest.mark.parametrize("command", [["compile", "dpo"], ["show", "dpo"]])
def test_cli_exits_3_on_an_internal_error(monkeypatch, capsys, command):
    import ptdsl.compiler
    from ptdsl.cli.main import main
    monkeypatch.setattr(ptdsl.compiler, "fold_constants", _boom)
    assert main(command) == 3
    err = capsys.readouterr().err
    assert "error[E0901]" in err and "Traceback" not in err
