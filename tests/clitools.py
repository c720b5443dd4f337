"""The CLI run in process, as a user's shell would see its exit status."""

from __future__ import annotations

import contextlib
import io
import subprocess

from gatesearch.cli.app import main


def cli(*args: object) -> int:
    """`gatesearch ARGS...` in this process; its exit status (0 when it returns)."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def captured(*args: object) -> subprocess.CompletedProcess[str]:
    """`gatesearch ARGS...` in this process, its exit status and output captured as a shell
    would see them (a process per case costs ~2 s of interpreter and torch start-up)."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
