"""The one base class of the errors a user causes.

Every error raised because of what a user gave gatesearch — a space file, an option, a data
file, a run folder, a preset — derives from `GatesearchError`; the CLI prints it as one line
and exits with status 2. Anything else that escapes a command is a bug of ours and keeps its
traceback. A new user-facing error class only has to derive from it (a test checks that
every exception class of the package is either one or named there as internal).
"""

from __future__ import annotations

from typing import ClassVar


class GatesearchError(Exception):
    """An error caused by the user's input, reported as one line (exit status 2)."""

    # True where the process cannot end normally after it: the CLI then leaves at once after
    # the line (a lost Ray cluster leaves Ray's threads waiting on it at interpreter exit).
    exit_at_once: ClassVar[bool] = False


__all__ = ["GatesearchError"]
