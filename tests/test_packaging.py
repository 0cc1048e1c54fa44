"""A plain (non-editable) wheel carries the grammar and the method library, and
ptdsl finds them there; README's commands are the ones CI runs."""
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_grammar_and_methods(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("ptdsl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ptdsl/_data/grammar/ptdsl.lark" in names
    shipped = {n.rsplit("/", 1)[-1] for n in names if n.startswith("ptdsl/_data/methods/")}
    assert {p.name for p in (ROOT / "methods").glob("*.ptdsl")} <= shipped
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import ptdsl, ptdsl.resources as r; m = ptdsl.load('cdpo'); "
            "assert '_data' in str(r.grammar_path()) and '_data' in str(r.methods_dir()); print(m.name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cdpo"


def _block_after(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(re.escape(marker) + r"\s*```bash\n(.*?)\n```", text, re.S)
    assert m, f"README.md has no block after {marker}"
    return m.group(1).strip()


def test_readme_commands():
    main = _block_after("<!-- main-command -->")
    tests = _block_after("<!-- test-command -->")
    assert main.startswith("pip install torch==2.13.0 &&") and tests.startswith("pip install torch==2.13.0 &&")
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "torch==2.13.0" in ci
    sub = main.rsplit("ptdsl ", 1)[1].split()
    from ptdsl.cli.main import build_parser
    args = build_parser().parse_args(sub)  # a valid command (tests/runtime runs it for real)
    assert args.command == "train" and args.model is None and args.data is None
