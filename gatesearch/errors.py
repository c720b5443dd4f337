"""The one base class of the errors a user causes.

Every error raised because of what a user gave gatesearch — a space file, an option, a data
file, a run folder, a preset — derives from `GatesearchError`; the CLI prints it as one line
and exits with status 2. Anything else that escapes a command is a bug of ours and keeps its
traceback. A new user-facing error class only has to derive from it (a test checks that
every exception class of the package is either one or named there as internal).
"""

from __future__ import annotations


class GatesearchError(Exception):
    """An error caused by the user's input, reported as one line (exit status 2)."""


__all__ = ["GatesearchError"]
