"""The CLI run in process, as a user's shell would see its exit status."""

from __future__ import annotations

from gatesearch.cli.app import main


def cli(*args: object) -> int:
    """`gatesearch ARGS...` in this process; its exit status (0 when it returns)."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
