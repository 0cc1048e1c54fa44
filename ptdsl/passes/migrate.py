"""`ptdsl migrate`: rewrite a spec's deprecated forms, where the rewrite is mechanical.

A deprecation is mechanical when the text of the use can be replaced by the replacement as
written (`old(policy)` → `old`): the rewrite is then a span-based text edit of the file, from
its parse, and the spec text is never executed. Other deprecations (and uses in a parent's
file, which is migrated on its own) are listed, not rewritten.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.diagnostics import Span
from ptdsl.passes.feature_uses import Use, feature_uses
from ptdsl.syntax.resolve import MethodDef


@dataclass(frozen=True)
class Migration:
    text: str                   # the file's text with every mechanical rewrite applied
    rewritten: tuple[Use, ...]  # the uses replaced
    listed: tuple[Use, ...]     # deprecated uses left as they are: not mechanical, or in another file


def migrate(m: MethodDef) -> Migration:
    """The migration of `m`'s own file (m.path; its text is m.sources[m.path])."""
    text = m.sources[m.path]
    deprecated = [u for u in feature_uses(m) if u.feature.deprecated is not None]
    mechanical = [u for u in deprecated if u.feature.deprecated.mechanical and u.span.file == m.path]
    starts = _line_starts(text)
    for use in sorted(mechanical, key=lambda u: (u.span.line, u.span.col), reverse=True):
        a, b = _offset(starts, use.span, start=True), _offset(starts, use.span, start=False)
        text = text[:a] + use.feature.deprecated.replacement + text[b:]
    return Migration(text, tuple(mechanical), tuple(u for u in deprecated if u not in mechanical))


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


def _offset(starts: list[int], span: Span, start: bool) -> int:
    """A span's start or (exclusive) end as an index into the text; columns are 1-based."""
    line, col = (span.line, span.col) if start else (span.end_line, span.end_col)
    return starts[line - 1] + col - 1
