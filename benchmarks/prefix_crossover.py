"""Where the shared-prompt forward starts to pay: the measurement behind ptdsl/sharing.py's rule.

    python benchmarks/prefix_crossover.py [--size tiny|small] [--rounds N]

For rows in groups of k per prompt (k = 2: a DPO pair; 8: a GRPO group), prompt P and
completion C tokens, it times the policy's forward + backward through `run_model` (per-token
log-probs, a sum as the loss) with prefix sharing forced on and off, interleaved, and prints
the median time ratio (shared / plain) beside the fraction of tokens sharing saves,
(R − U)·P / (R·(P + C)). Not a product benchmark (no BENCHMARK marker: run_all.py skips it).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

ROWS = 16
SHAPES = [(2, 8, 64), (2, 16, 64), (2, 32, 64), (2, 64, 64), (2, 64, 16), (2, 128, 16),
          (8, 8, 64), (8, 16, 64), (8, 32, 32), (8, 64, 16)]  # (rows per prompt, P, C)


def _sets(k, P, C_, vocab, seed=0):
    import torch

    from ptdsl.runtime.batch import SetRows
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(C.FIRST, vocab, (n,), generator=g).tolist()  # noqa: E731
    prompts = [ids(P) for _ in range(ROWS // k)]
    return {"y": SetRows([p for p in prompts for _ in range(k)], [ids(C_) for _ in range(ROWS)])}


def _time_one(model, sets, share, rounds):
    import torch

    from ptdsl import sharing
    from ptdsl.runtime.queries import run_model
    sharing.MIN_SAVED_FRACTION = 0.0 if share else 2.0  # force the choice under test
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = run_model(model, sets, ["y"], {"y": ["logprobs"]}, C.PAD, "cpu", frozen=False,
                        prefix_sharing=share)
        out[("logprobs", "y")].sum().backward()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    C.setup_env()
    from ptdsl.sharing import saved_fraction
    model = C.make_model(args.size)
    vocab = C.SIZES[args.size]["vocab_size"]
    print(f"{args.size}, {ROWS} rows: k P C | saved | shared/plain")
    for k, P, C_ in SHAPES:
        sets = _sets(k, P, C_, vocab)
        _time_one(model, sets, True, 1), _time_one(model, sets, False, 1)  # warm-up
        plain, shared = [], []
        for _ in range(args.rounds):  # interleaved, so load changes hit both alike
            plain.append(_time_one(model, sets, False, 1))
            shared.append(_time_one(model, sets, True, 1))
        saved = saved_fraction([i // k for i in range(ROWS)], P, C_)
        print(f"{k} {P:4d} {C_:4d} | {saved:.2f} | {statistics.median(shared) / statistics.median(plain):.2f}",
              flush=True)


if __name__ == "__main__":
    main()
