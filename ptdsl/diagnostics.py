"""One diagnostic type for every phase, rendered like rustc.

A Diagnostic carries a severity, a stable code (see docs/errors/), a message,
labelled spans, notes and a help line. Rendering lives here and nowhere else, so
every error the user sees has the same shape:

    error[E0302]: `loss` must be a scalar
      --> methods/dpo.ptdsl:14:6
       |
    14 | loss -logsigmoid(z)
       |      ^^^^^^^^^^^^^^ this is per sequence: f32[seq examples]
       |
       = help: reduce it over the batch, e.g. `mean(-logsigmoid(z))`
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A source region: 1-based line and column, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Label:
    span: Span
    text: str = ""
    primary: bool = True


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" | "warning"
    code: str
    message: str
    labels: tuple[Label, ...] = ()
    notes: tuple[str, ...] = ()
    help: str | None = None

    @property
    def span(self) -> Span | None:
        for label in self.labels:
            if label.primary:
                return label.span
        return self.labels[0].span if self.labels else None

    def to_json(self) -> dict:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "labels": [
                {
                    "file": l.span.file,
                    "line": l.span.line,
                    "column": l.span.col,
                    "end_line": l.span.end_line,
                    "end_column": l.span.end_col,
                    "text": l.text,
                    "primary": l.primary,
                }
                for l in self.labels
            ],
            "notes": list(self.notes),
            "help": self.help,
        }


def error(code: str, message: str, span: Span | None = None, label: str = "", *,
          notes: tuple[str, ...] | list[str] = (), help: str | None = None,
          extra: tuple[Label, ...] = ()) -> Diagnostic:
    labels = ((Label(span, label),) if span else ()) + tuple(extra)
    return Diagnostic("error", code, message, labels, tuple(notes), help)


class SpecError(Exception):
    """Raised by the stable API when a spec (or a parameter override) is wrong.

    `.diagnostics` holds every problem found; `str(err)` renders them all.
    """

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        super().__init__(render_all(self.diagnostics, self.sources, color=False))


def did_you_mean(name: str, candidates) -> str | None:
    """A `help:` line suggesting the closest known name, if one is close."""
    match = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else None


# ---- rendering --------------------------------------------------------------

_COLORS = {"error": "\x1b[1;31m", "warning": "\x1b[1;33m", "blue": "\x1b[1;34m",
           "bold": "\x1b[1m", "reset": "\x1b[0m"}


def render(d: Diagnostic, sources: dict[str, str], color: bool = False) -> str:
    c = _COLORS if color else {k: "" for k in _COLORS}
    out = [f"{c[d.severity]}{d.severity}[{d.code}]{c['reset']}{c['bold']}: {d.message}{c['reset']}"]
    spans = [l.span for l in d.labels]
    width = max([len(str(s.end_line)) for s in spans] + [1])
    pad = " " * width
    if d.span is not None:
        out.append(f"{pad}{c['blue']}-->{c['reset']} {d.span}")
    by_file: dict[str, list[Label]] = {}
    for label in d.labels:
        by_file.setdefault(label.span.file, []).append(label)
    for file, labels in by_file.items():
        lines = sources.get(file, "").split("\n")  # spans count lines by "\n" only, as the grammar does
        if file != (d.span.file if d.span else file):
            out.append(f"{pad}{c['blue']}::>{c['reset']} {labels[0].span}")
        out.append(f"{pad} {c['blue']}|{c['reset']}")
        by_line: dict[int, list[Label]] = {}
        for label in labels:
            by_line.setdefault(label.span.line, []).append(label)
        for line in sorted(by_line):
            out.extend(_snippet(line, by_line[line], lines, width, c))
    if d.notes or d.help:
        out.append(f"{pad} {c['blue']}|{c['reset']}")
    for note in d.notes:
        out.append(f"{pad} {c['blue']}={c['reset']} note: {note}")
    if d.help:
        out.append(f"{pad} {c['blue']}={c['reset']} help: {d.help}")
    return "\n".join(out)


def _snippet(line: int, labels: list[Label], lines: list[str], width: int, c: dict) -> list[str]:
    """One source line, then one underline row per label on it (primary first)."""
    if not (1 <= line <= len(lines)):
        return []
    text = lines[line - 1].replace("\t", " ")
    out = [f"{line:>{width}} {c['blue']}|{c['reset']} " + text]
    for label in sorted(labels, key=lambda l: (not l.primary, l.span.col)):
        s = label.span
        end_col = s.end_col if s.end_line == s.line else len(text) + 1
        n_carets = max(1, end_col - s.col)
        marker = "^" if label.primary else "-"
        colour = c["error"] if label.primary else c["blue"]
        out.append(f"{' ' * width} {c['blue']}|{c['reset']} " + " " * (s.col - 1)
                   + f"{colour}{marker * n_carets}{' ' + label.text if label.text else ''}{c['reset']}")
    return out


def render_all(diags: list[Diagnostic], sources: dict[str, str], color: bool = False) -> str:
    return "\n\n".join(render(d, sources, color) for d in diags)


def to_json(diags: list[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diags], indent=2)


@dataclass
class Sink:
    """Collects diagnostics of one phase, so a phase reports every problem at once."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(self, d: Diagnostic) -> None:
        self.items.append(d)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)
