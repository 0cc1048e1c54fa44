"""benchmarks/data_validation.py runs (smoke mode), so the benchmark cannot rot."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_data_validation_benchmark_smoke(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "benchmarks/data_validation.py", "--smoke", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["section"].startswith("Data validation")
    runs = result["data"]["results"]
    assert {(r["format"], r["rows"]) for r in runs} == {(f, n) for f in ("text", "conversational") for n in (100, 400)}
    assert all(r["validate_s"] > 0 and r["tokenise_s"] > 0 for r in runs)
    assert "validate µs/row" in result["markdown"]
