"""Every training row checked against the method's data schema before step 1.

The dataset's format is chosen once from the columns its rows fill (schema.py); then
every row, not the first, is checked column by column: a column the format needs is
present and not null, and its value has the column's type. Problems are collected
over all rows and reported together, the first few named by row, column and value
plus a count. With `skip_invalid`, the rows that do not fit are dropped instead, and
the count and the first few problems are logged. The rows that pass come back with
their values as the runtime uses them (CSV labels and numbers parsed), so `normalise`
and `tokenize` never see null, a number or a list where they expect text.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ptdsl.ir.datakinds import DATA_KINDS
from ptdsl.runtime.datafiles import SHOWN, Table
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.schema import (OTHER_FORMATS, PROMPT_ENDS, Column, Format, Invalid, choose_format,
                                  _turn, kind_format, present, real,
                                  shared_start)


@dataclass(frozen=True)
class Problem:
    row: int       # position in the table, from 0 (Table.where names it as the user counts it)
    column: str    # "" where the problem is the row's, not one column's
    message: str


def validate(table: Table, kind: str, method: str, fields: tuple[str, ...] = (), require: tuple[str, ...] = (),
             skip_invalid: bool = False, log=print) -> list[tuple[int, dict]]:
    """(position, row) for the rows of `table` that fit `kind`'s schema plus the numeric `fields`
    and the `require`d columns; a RuntimeSetupError listing the problems if any row does not
    (unless skip_invalid)."""
    if not table.rows:
        raise RuntimeSetupError(f"the dataset for `{method}` is empty (`{table.source}` has no rows)")
    filled = {k for row in table.rows for k, v in row.items() if v is not None}
    fmt = _with_extras(choose_format(DATA_KINDS[kind], filled), fields, require)
    _check_columns(fmt, filled, {k for row in table.rows for k in row}, method, kind, require, table.source)
    known = _format_columns(kind)
    clean, problems = [], []
    for i, row in enumerate(table.rows):
        out, found = check_row(row, fmt, table.textual, known)
        problems += [Problem(i, col, msg) for col, msg in found]
        if not found:
            clean.append((i, out))
    if problems:
        report(table, problems, len(clean), f"`{method}` (data {kind}: {', '.join(fmt.names())})",
               skip_invalid, log)
    return clean


def _with_extras(fmt: Format, fields: tuple[str, ...], require: tuple[str, ...]) -> Format:
    """The numeric columns the spec names (`data preference(margin)`) and the columns verifiers read."""
    extra = [Column(f, real) for f in fields if f not in fmt.names()]
    extra += [Column(c, present) for c in dict.fromkeys(require) if c not in fmt.names() and c not in fields]
    return replace(fmt, columns=fmt.columns + tuple(extra))


def _format_columns(kind: str) -> set[str]:
    """Every column any format of the kind reads: a null there means "absent", and is dropped."""
    fmts = [kind_format(DATA_KINDS[kind])] + [f for _, _, f in OTHER_FORMATS.get(kind, ())]
    return {n for f in fmts for n in f.names()}


def _check_columns(fmt: Format, filled: set[str], keys: set[str], method: str, kind: str,
                   require: tuple[str, ...], source: str) -> None:
    """A column no row fills is one error, not one per row, naming the data (a run reads several:
    sources, held-out rows)."""
    for col in fmt.columns:
        if col.optional or col.name in filled:
            continue
        why = " (a verifier reads it)" if col.name in require else ""
        lacks = f"it is null in every row of `{source}`" if col.name in keys else f"`{source}` does not have it"
        raise RuntimeSetupError(
            f"method `{method}` (data {kind}) needs the field `{col.name}`{why}, and {lacks}",
            help=f"the dataset has: {', '.join(f'`{c}`' for c in sorted(filled)) or 'no columns'}; "
                 f"{kind} data in this format ({fmt.name}) needs {', '.join(f'`{c}`' for c in fmt.names())}")


def check_row(row: dict, fmt: Format, textual: bool, known: set[str] = frozenset()) -> tuple[dict, list]:
    """(the row as the runtime uses it, [(column, problem)]): every column of the format checked."""
    out = {k: v for k, v in row.items() if v is not None or k not in known}
    found = []
    for col in fmt.columns:
        value = row.get(col.name)
        if value is None:
            if not col.optional:
                found.append((col.name, "is null" if col.name in row else "is missing"))
            continue
        try:
            out[col.name] = col.check(value, textual)
        except Invalid as exc:
            found.append((col.name, str(exc)))
    if not found:
        found += _lengths(out, fmt) + _implicit_prompt(out, fmt.implicit_prompt)
    return out, found


def _lengths(row: dict, fmt: Format) -> list:
    found = []
    for c in fmt.columns:
        if c.length_of and c.name in row and len(row[c.name]) != len(row[c.length_of]):
            found.append((c.name, f"has {_count(row[c.name], 'element')}, and `{c.length_of}` "
                                  f"{_count(row[c.length_of], 'element')}: give one per element"))
    return found


def _count(items: list, what: str) -> str:
    return f"{len(items)} {what}{'' if len(items) == 1 else 's'}"


def _implicit_prompt(row: dict, names: tuple[str, ...]) -> list:
    """Sets whose shared start is the prompt: all texts or all conversations, and for
    conversations the shared start ends with a user or tool turn and the rest is the
    assistant's."""
    if not names:
        return []
    values = [row[n] for n in names]
    if all(isinstance(v, str) for v in values):
        return []
    if not all(isinstance(v, list) for v in values):
        return [(names[0], f"and {', '.join(f'`{n}`' for n in names[1:])} must be all texts or all conversations")]
    k = shared_start(values)
    if k and values[0][k - 1]["role"] not in PROMPT_ENDS:
        return [(names[0], f"and the other completions share {k} messages, ending with "
                           f"{_turn(values[0][k - 1]['role'])}; with no `prompt` column the shared messages are "
                           f"the prompt, which must end with {_turn(*PROMPT_ENDS)}")]
    for name, v in zip(names, values):
        role = next((m["role"] for m in v[k:] if m["role"] != "assistant"), None)
        if role is not None:
            return [(name, f"continues after the shared prompt ({k} messages) with {_turn(role)}; the "
                           "completions must differ only in assistant turns after the prompt")]
    return []


def report(table: Table, problems: list[Problem], kept: int, target: str, skip_invalid: bool, log) -> None:
    """Raise the problems (the first few and a count), or with skip_invalid log them."""
    bad_rows = len({p.row for p in problems})
    listed = "\n".join(f"  {table.where(p.row)}: " + (f"`{p.column}` " if p.column else "") + p.message
                       for p in problems[:SHOWN])
    more = len(problems) - SHOWN
    listed += f"\n  … and {more} more problem{'s' if more > 1 else ''}" if more > 0 else ""
    what = f"{bad_rows} of {len(table.rows)} rows of `{table.source}` do not fit {target} (rows counted from 1)"
    if not skip_invalid:
        raise RuntimeSetupError(f"{what}:\n{listed}",
                                help="fix or remove these rows, or pass --skip-invalid-rows to train without "
                                     "them (they are counted and the first few shown)")
    if kept == 0:
        raise RuntimeSetupError(f"no row is left: {what}:\n{listed}")
    log(f"skipped {what} (--skip-invalid-rows):\n{listed}")
