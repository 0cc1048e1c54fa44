"""Conditions: the assumptions under which an identity holds, as tweaks of the
input strategy rather than as filters (a filter that rejects most draws would
starve hypothesis; a tweak draws only inputs that satisfy the assumption).

Each condition has a name, written on the command line as `--assume NAME` or
`--assume NAME=ARG`:

    on_policy                    logprobs(old, S) equal the policy's (ratio 1 in value)
    off_policy                   logprobs(old, S) always a small step away from the policy's
    equal_lengths                every completion of every set has the same length
    length=L                     ... and that length is L
    rows=N                       N rows per dataset batch (rollouts: N prompts)
    reference_zero               logprobs(reference, S) are 0 (a reference-free method's view)
    reference_equals_policy=S    logprobs(reference, S) equal the policy's on set S
    reference_below_policy=S     logprobs(reference, S) strictly below the policy's on set S
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

NAMES = ("on_policy", "off_policy", "equal_lengths", "length", "rows", "reference_zero",
         "reference_equals_policy", "reference_below_policy")


class ConditionError(ValueError):
    """An unknown or malformed condition."""


@dataclass(frozen=True)
class Conditions:
    on_policy: bool = False
    off_policy: bool = False
    equal_lengths: bool = False
    length: int | None = None
    rows: int | None = None
    reference_zero: bool = False
    reference_equals_policy: tuple[str, ...] = field(default=())
    reference_below_policy: tuple[str, ...] = field(default=())
    text: tuple[str, ...] = field(default=())  # as written, for reports

    def __bool__(self) -> bool:
        return bool(self.text)


def parse(items) -> Conditions:
    """Conditions from names like "on_policy", "length=3", "reference_zero"."""
    if isinstance(items, Conditions):
        return items
    if isinstance(items, str):
        items = (items,)
    c = Conditions()
    for item in items or ():
        c = _apply(c, item.strip())
    if c.on_policy and c.off_policy:
        raise ConditionError("`on_policy` and `off_policy` contradict each other")
    return c


def _apply(c: Conditions, item: str) -> Conditions:
    name, _, arg = item.partition("=")
    name, arg = name.strip(), arg.strip()
    if name not in NAMES:
        from ptdsl.diagnostics import did_you_mean
        hint = did_you_mean(name, NAMES) or f"conditions: {', '.join(NAMES)}"
        raise ConditionError(f"unknown condition `{name}` ({hint})")
    takes_arg = name in ("length", "rows", "reference_equals_policy", "reference_below_policy")
    if takes_arg != bool(arg):
        raise ConditionError(f"condition `{name}` {'needs' if takes_arg else 'takes no'} `=VALUE`")
    c = replace(c, text=c.text + (item,))
    if name in ("length", "rows"):
        try:
            n = int(arg)
        except ValueError:
            n = 0
        if n < 1:
            raise ConditionError(f"`{name}` must be a whole number ≥ 1, got `{arg}`")
        return replace(c, **{name: n}, equal_lengths=c.equal_lengths or name == "length")
    if name in ("reference_equals_policy", "reference_below_policy"):
        return replace(c, **{name: getattr(c, name) + (arg,)})
    return replace(c, **{name: True})
