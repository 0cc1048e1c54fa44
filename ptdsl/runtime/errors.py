"""Errors the training runtime reports to the user (printed without a traceback)."""
from __future__ import annotations


class RuntimeSetupError(Exception):
    """A problem found before or during training that the user can fix: a dataset
    missing a field, a reward function that cannot be found, a bad option, a
    non-finite loss. The message names the place; `help` says what to do."""

    def __init__(self, message: str, help: str | None = None):
        super().__init__(message)
        self.help = help

    def render(self) -> str:
        return f"error: {self}" + (f"\n  = help: {self.help}" if self.help else "")
