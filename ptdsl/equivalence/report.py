"""The result of an equivalence check, and how it reads in a terminal.

On agreement: how many examples passed, under which tolerances and conditions,
and which inputs only one side reads. On disagreement: the shrunk counterexample
as a small table (leaf, shape, values; masked-out positions shown as `·`), both
losses, and the largest gradient difference with the leaf and position it is at.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("value-and-gradient", "gradient", "value")


@dataclass(frozen=True)
class Counterexample:
    inputs: dict                 # shared leaf name → tensor (as drawn, garbage included)
    reason: str                  # one line: what disagreed
    loss_a: float
    loss_b: float
    grad_leaf: str | None = None  # where the largest gradient difference is
    grad_index: tuple = ()
    grad_a: float = 0.0
    grad_b: float = 0.0


@dataclass(frozen=True)
class Report:
    a: str
    b: str
    mode: str
    rtol: float
    atol: float
    seed: int
    examples: int                 # asked for
    ran: int                      # examples evaluated before the verdict (not counting shrinking)
    conditions: tuple[str, ...]
    compared: tuple[str, ...]     # "loss" and the trainable leaves whose gradients were compared
    only_a: tuple[str, ...] = ()  # inputs only one side reads (drawn anyway, and shown)
    only_b: tuple[str, ...] = ()
    counterexample: Counterexample | None = field(default=None)
    adapter: str | None = None    # the adapter that laid one side's inputs out for the other, as text

    @property
    def passed(self) -> bool:
        return self.counterexample is None

    def __bool__(self) -> bool:
        return self.passed

    def render(self) -> str:
        return "\n".join(_header(self) + (_counterexample(self) if self.counterexample else []))


def _what(mode: str) -> str:
    return {"value-and-gradient": "in value and gradient", "gradient": "in gradient",
            "value": "in value"}[mode]


def _header(r: Report) -> list[str]:
    lines = [f"equivalent: {r.a}  ≡  {r.b}  {_what(r.mode)}" if r.passed
             else f"NOT equivalent: {r.a}  ≢  {r.b}  {_what(r.mode)}"]
    if r.passed:
        lines.append(f"  {r.ran} examples passed (seed {r.seed}; float64; |a − b| ≤ {r.atol:g} + {r.rtol:g}·max(|a|, |b|);"
                     " non-finite values must match)")
    else:
        lines.append(f"  disagreement after {r.ran} example{'s' if r.ran != 1 else ''} (seed {r.seed}; float64; "
                     f"|a − b| ≤ {r.atol:g} + {r.rtol:g}·max(|a|, |b|))")
    if r.adapter:
        lines.append(f"  adapter: {r.adapter}")
    if r.conditions:
        lines.append(f"  assuming: {', '.join(r.conditions)}")
    lines.append(f"  compared: {', '.join(r.compared)}")
    for side, only in (("a", r.only_a), ("b", r.only_b)):
        if only:
            who = r.a if side == "a" else r.b
            lines.append(f"  only {who} reads: {', '.join(only)} (drawn for both; the other side ignores it)")
    return lines


def _counterexample(r: Report) -> list[str]:
    c = r.counterexample
    masks = {name[5:-1]: x for name, x in c.inputs.items() if name.startswith("mask(")}
    rows = [("leaf", "shape", "values")]
    for name in sorted(c.inputs, key=lambda n: (n.startswith("mask("), n)):
        x = c.inputs[name]
        rows.append((name, "×".join(map(str, x.shape)) or "scalar", _values(name, x, masks)))
    w0 = max(len(r0[0]) for r0 in rows)
    w1 = max(len(r0[1]) for r0 in rows)
    out = ["", f"counterexample (shrunk by hypothesis): {c.reason}"]
    out += [f"  {a:<{w0}}  {b:<{w1}}  {v}" for a, b, v in rows]
    out += ["", f"  loss  {r.a} = {_num(c.loss_a)}", f"  loss  {r.b} = {_num(c.loss_b)}"]
    if c.grad_leaf is not None:
        where = f"{c.grad_leaf}[{', '.join(map(str, c.grad_index))}]"
        out.append(f"  max |∇a − ∇b| = {_num(abs(c.grad_a - c.grad_b))} at {where}: "
                   f"{_num(c.grad_a)} vs {_num(c.grad_b)}")
    return out


def _num(v: float) -> str:
    return f"{v:.6g}"


def _values(name: str, x, masks) -> str:
    """A tensor as nested lists; positions outside the set's mask (garbage) as `·`."""
    s = name[name.rfind(", ") + 2:-1] if ", " in name else None
    m = masks.get(s)
    if x.dim() == 0:
        return _cell(x.item())
    if x.dim() == 1:
        return "[" + " ".join(_cell(v) for v in x.tolist()) + "]"
    if name.startswith("mask("):
        return "lengths " + "[" + " ".join(str(int(v)) for v in x.sum(-1).tolist()) + "]"
    rows = []
    for i, row in enumerate(x.tolist()):
        cells = [_cell(v) if m is None or bool(m[i, t]) else "·" for t, v in enumerate(row)]
        rows.append("[" + " ".join(cells) + "]")
    return " ".join(rows)


def _cell(v) -> str:
    if isinstance(v, bool):
        return "T" if v else "F"
    if isinstance(v, list):
        return "(" + " ".join(_cell(u) for u in v) + ")"
    return f"{v:.4g}"
