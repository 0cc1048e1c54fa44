"""`ptdsl equiv A B`: property-test that two methods give the same loss and gradients.

    ptdsl equiv A B [--set-a k=v]… [--set-b k=v]… [--assume COND]… [--examples N] [--seed S]
                    [--mode value-and-gradient|gradient|value] [--rtol R] [--atol A]
                    [--rename-a SET=SET]… [--rename-b SET=SET]… [--scale-a W] [--scale-b W]
                    [--adapter NAME]

Exit status 0 when no counterexample was found, 1 with the shrunk counterexample
printed. torch and hypothesis are imported inside the command, not at start-up.
"""
from __future__ import annotations

import sys

from ptdsl.cli.main import Usage, parse_overrides


def register(subparsers) -> None:
    s = subparsers.add_parser("equiv", help="property-test that two methods give the same loss and gradients",
                              description="Draw inputs for both methods (hypothesis, float64) and compare "
                                          "losses and gradients; print a shrunk counterexample if they differ.")
    s.add_argument("a", metavar="A")
    s.add_argument("b", metavar="B")
    s.add_argument("--set-a", action="append", metavar="NAME=VALUE", help="parameter override for A")
    s.add_argument("--set-b", action="append", metavar="NAME=VALUE", help="parameter override for B")
    s.add_argument("--assume", action="append", metavar="COND",
                   help="a condition the inputs satisfy: on_policy, off_policy, equal_lengths, length=L, "
                        "rows=N, reference_zero, reference_equals_policy=SET, reference_below_policy=SET")
    s.add_argument("--examples", type=int, default=200, help="examples to try (default 200)")
    s.add_argument("--seed", type=int, default=0, help="seed of the search (default 0); same seed, same examples")
    s.add_argument("--mode", choices=["value-and-gradient", "gradient", "value"], default="value-and-gradient")
    s.add_argument("--rtol", type=float, default=1e-6)
    s.add_argument("--atol", type=float, default=1e-9)
    s.add_argument("--rename-a", action="append", metavar="SET=SET", help="feed A's set from another set")
    s.add_argument("--rename-b", action="append", metavar="SET=SET", help="feed B's set from another set")
    s.add_argument("--scale-a", type=float, default=1.0, help="multiply A's loss by this")
    s.add_argument("--scale-b", type=float, default=1.0, help="multiply B's loss by this")
    s.add_argument("--adapter", metavar="NAME",
                   help="relate methods whose rows are laid out differently: draw the preference side's "
                        "inputs and build the other's from them (paired-to-unpaired, paired-to-ranked, "
                        "paired-to-picks, paired-to-sample)")
    s.set_defaults(fn=cmd_equiv)


def _renames(pairs) -> dict:
    out = {}
    for pair in pairs or []:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise Usage(f"--rename takes SET=SET, got `{pair}`")
        out[old.strip()] = new.strip()
    return out


def cmd_equiv(args) -> int:
    from ptdsl.equivalence import Term, equivalent
    from ptdsl.equivalence.adapters import AdapterError, get as get_adapter
    from ptdsl.equivalence.conditions import ConditionError
    from ptdsl.equivalence.sides import SideError
    if args.examples < 1:
        raise Usage("--examples must be at least 1")
    if args.adapter is not None:
        try:
            get_adapter(args.adapter)
        except AdapterError as exc:
            raise Usage(str(exc)) from None
    a = Term(args.a, parse_overrides(args.set_a), args.scale_a, _renames(args.rename_a))
    b = Term(args.b, parse_overrides(args.set_b), args.scale_b, _renames(args.rename_b))
    try:
        report = equivalent(a, b, examples=args.examples, seed=args.seed, mode=args.mode, rtol=args.rtol,
                            atol=args.atol, given=tuple(args.assume or ()), adapter=args.adapter)
    except ConditionError as exc:
        raise Usage(str(exc)) from None
    except SideError as exc:
        print(f"error: cannot compare `{args.a}` and `{args.b}`: {exc}", file=sys.stderr)
        return 1
    print(report.render())
    return 0 if report.passed else 1
