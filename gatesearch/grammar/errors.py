"""GrammarError: every problem with a space file, located at file:line:col."""

from __future__ import annotations

from dataclasses import dataclass

from gatesearch.errors import GatesearchError


@dataclass(frozen=True)
class Loc:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


class GrammarError(GatesearchError):
    """A space file that cannot be used. `str()` is one line: where, what, what was expected."""

    def __init__(self, loc: Loc, message: str, expected: str | None = None) -> None:
        self.loc = loc
        self.message = message
        self.expected = expected
        text = f"{loc}: {message}"
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)
