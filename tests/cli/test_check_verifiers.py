"""`ptdsl check` warns (W0201, rendered like every diagnostic) about a verifier name no
built-in or registered verifier has, still exits 0, and stays torch-free."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = """\
warning[W0201]: no built-in or registered verifier is named `acuracy`
  --> typo.ptdsl:12:12
   |
12 | reward r = verifier("acuracy")
   |            ^^^^^^^^^^^^^^^^^^^ unknown verifier
   |
   = help: did you mean `accuracy`? Else `ptdsl train` needs `--reward-fn acuracy=module:function` (or ptdsl.rewards.register)

"""


def _check(tmp_path, *args):
    spec = tmp_path / "typo.ptdsl"
    spec.write_text((ROOT / "methods" / "grpo.ptdsl").read_text()
                    .replace("method grpo", "method grpo_typo").replace('"accuracy"', '"acuracy"'))
    code = ("import sys; from ptdsl.cli.main import main; rc = main(sys.argv[1:]); "
            "sys.exit(3 if 'torch' in sys.modules else rc)")
    return subprocess.run([sys.executable, "-c", code, "check", "typo.ptdsl", "grpo", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_check_warns_about_an_unknown_verifier(tmp_path):
    r = _check(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == EXPECTED
    assert r.stdout.splitlines()[0] == "ok: grpo_typo (typo.ptdsl)"


def test_check_json_carries_the_warning(tmp_path):
    r = _check(tmp_path, "--format", "json")
    assert r.returncode == 0, r.stderr
    typo, grpo = json.loads(r.stdout)
    assert typo["ok"] and grpo["ok"] and grpo["diagnostics"] == []
    [d] = typo["diagnostics"]
    assert (d["severity"], d["code"], d["labels"][0]["line"], d["labels"][0]["column"]) == ("warning", "W0201", 12, 12)
