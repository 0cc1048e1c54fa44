"""The canonical leaf-name grammar, as data: the names the inputs of a compiled loss have
(`CompiledMethod.inputs`, the keys of `CompiledMethod.loss`'s dict, what the runtime supplies).
Code outside ptdsl builds these names, so they are part of stability contract C3.

A form is written with the parts below in capitals; the query forms come from the query table
(ptdsl/ir/builtins.py QUERIES), the training time from its TIME and the episode functions from
EPISODE_FUNCS, so a rename there shows in
the snapshot; every library method's leaf names must match the form of their kind.
"""
from __future__ import annotations

import re

PARTS = {  # part → its grammar (parts may use parts defined above them)
    "NAME": r"an identifier: [A-Za-z_][A-Za-z0-9_]*",
    "MODEL": "NAME | old | old(NAME)",
    "SET": "NAME | best(NAME, NAME) | worst(NAME, NAME) | mismatched(NAME)",
    "REWARD": "NAME",
    "FIELD": "NAME",
    "ROWS": "NAME",
    "SITE": "FILE:LINE:COL (where the call is written; FILE is the spec's stem)",
}
_REGEX = {
    "NAME": r"[A-Za-z_][A-Za-z0-9_]*",
    "SITE": r"[^\s:@()]+:\d+:\d+",
}
_REGEX["MODEL"] = rf"(?:old\({_REGEX['NAME']}\)|{_REGEX['NAME']})"
_REGEX["SET"] = rf"(?:(?:best|worst)\({_REGEX['NAME']}, {_REGEX['NAME']}\)|mismatched\({_REGEX['NAME']}\)|{_REGEX['NAME']})"
_REGEX["REWARD"] = _REGEX["FIELD"] = _REGEX["ROWS"] = _REGEX["NAME"]


def forms() -> dict[str, str]:
    """Form → the leaf kind it names."""
    from ptdsl.ir import builtins as B
    out = {f"{q}(MODEL, SET)": q for q in B.QUERIES}
    out.update({"mask(SET)": "mask", "REWARD(SET)": "reward", "sizes(ROWS)": "sizes", "FIELD": "field",
                "uniform@SITE": "uniform"})
    out.update({t: "time" for t in B.TIME})
    out.update({f"{e}(SET)": "episode" for e in B.EPISODE_FUNCS})  # what an episode did: turns(y), turn(y), …
    return out


def regex(form: str) -> re.Pattern:
    text = re.escape(form)
    for part in sorted(_REGEX, key=len, reverse=True):
        text = text.replace(part, _REGEX[part])
    return re.compile(text)


def matches(name: str, kind: str, table: dict[str, str] | None = None) -> bool:
    """Whether leaf `name` of `kind` is written in a form of that kind."""
    table = forms() if table is None else table
    return any(k == kind and regex(f).fullmatch(name) for f, k in table.items())
