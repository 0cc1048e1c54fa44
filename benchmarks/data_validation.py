"""Data validation cost: checking every training row before step 1, against reading
the file and tokenising it.

    python benchmarks/data_validation.py [--quick] [--smoke] [--json PATH]

For 10k, 50k and 100k preference rows (dpo's data kind) written as JSON Lines, in two
formats (plain text; conversational, each prompt and completion a list of messages),
the stages of `ptdsl.runtime.setup.load_examples` are timed one by one, each the
median of a few repeats in this process:
- read: `datafiles.read_table` (the file into rows, with their lines);
- validate: `validate.validate` (every row's columns against the kind's schema);
- tokenise: `data.normalise` and `data.tokenize` (what training needs anyway), with a
  word-level fast tokenizer and 32-token prompts and completions (common.py).
The claim under test: validation is linear in the rows (the same time per row at every
size) and small beside tokenisation. --quick runs 2k and 10k rows; --smoke 100 and
400 rows once (the test suite runs it so that the script cannot rot).
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # this checkout's ptdsl, not an installed copy
import common  # noqa: E402

BENCHMARK = True
SECTION = "Data validation: every row checked before step 1"
VOCAB, HALF = 1024, 32  # word tokenizer size; tokens per prompt and per completion


def rows(n: int, conversational: bool, seed: int = 0) -> list[dict]:
    import random
    rng = random.Random(seed)

    def words():
        return " ".join(f"t{rng.randrange(common.FIRST, VOCAB)}" for _ in range(HALF))
    out = []
    for _ in range(n):
        p, c, r = words(), words(), words()
        if conversational:
            p = [{"role": "system", "content": "answer"}, {"role": "user", "content": p}]
            c, r = [{"role": "assistant", "content": c}], [{"role": "assistant", "content": r}]
        out.append({"prompt": p, "chosen": c, "rejected": r})
    return out


def _median_s(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def measure(n: int, conversational: bool, tok, repeats: int, tmp: Path) -> dict:
    from ptdsl.runtime import data as D
    from ptdsl.runtime.datafiles import read_table
    from ptdsl.runtime.validate import validate
    path = tmp / f"{n}-{int(conversational)}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows(n, conversational)), encoding="utf-8")
    read_s, table = _median_s(lambda: read_table(str(path)), repeats)
    validate_s, valid = _median_s(lambda: validate(table, "preference", "dpo"), repeats)
    assert len(valid) == n  # every row fits: the cost measured is the full check of each

    def tokenise():
        normal = [r for _, v in valid for r in D.normalise(v, "preference", tok)]
        return D.tokenize(normal, tok, "preference", (), 2 * HALF + 8, None)
    tokenise_s, (examples, _) = _median_s(tokenise, max(1, repeats // 2))
    assert len(examples) == n
    return {"rows": n, "format": "conversational" if conversational else "text", "read_s": read_s,
            "validate_s": validate_s, "tokenise_s": tokenise_s}


def markdown(results: list[dict], mode: str) -> str:
    lines = [f"## {SECTION}", "", f"Mode: {mode}{common.mode_note(smoke=mode == 'smoke')}. Preference rows (`dpo`), JSON Lines; median seconds per stage "
             "and microseconds per row. Validation is every row's every column checked against the data "
             "kind's schema (runtime/validate.py); tokenisation is normalise + tokenize.", ""]
    body = [[r["format"], f"{r['rows']:,}", f"{r['read_s']:.3f}", f"{r['validate_s']:.3f}",
             f"{r['tokenise_s']:.3f}", f"{r['validate_s'] / r['rows'] * 1e6:.2f}",
             f"{r['tokenise_s'] / r['rows'] * 1e6:.1f}", f"{100 * r['validate_s'] / r['tokenise_s']:.1f}%"]
            for r in results]
    lines.append(common.table(["format", "rows", "read s", "validate s", "tokenise s", "validate µs/row",
                               "tokenise µs/row", "validate / tokenise"], body))
    for fmt in ("text", "conversational"):
        per_row = [r["validate_s"] / r["rows"] * 1e6 for r in results if r["format"] == fmt]
        if len(per_row) > 1:
            lines += ["", f"- {fmt}: validation per row from {min(per_row):.2f} to {max(per_row):.2f} µs across "
                      f"sizes (max/min {max(per_row) / min(per_row):.2f}: linear when close to 1)."]
    return "\n".join(lines)


def main(argv=None):
    ap = common.cli(__doc__.splitlines()[0])
    args = ap.parse_args(argv)
    common.setup_env(args.smoke)
    sizes, repeats, mode = ((100, 400), 1, "smoke") if args.smoke else \
        ((2000, 10000), 3, "quick") if args.quick else ((10000, 50000, 100000), 3, "full")
    from ptdsl.runtime.chat import read_template
    tok = common.word_tokenizer(VOCAB)
    tok.chat_template = read_template("plain")  # conversational rows need a template (--chat-template plain)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(n, conv, tok, repeats, Path(tmp)) for conv in (False, True) for n in sizes]
    data = {"results": results, "mode": mode, "machine": common.machine_info()}
    common.emit(args.json, SECTION, markdown(results, mode), data)


if __name__ == "__main__":
    main()
