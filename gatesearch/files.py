"""Files written whole or not at all, with the permissions a plain `open()` would give them.

Every output gatesearch writes (run folders, reports, exported code and weights) is made in a
temporary file or folder beside its target and renamed into place, so a reader never sees half
of it. `tempfile` makes those private (0600 files, 0700 folders) and the rename keeps that: a
run directory or an exported model would be unreadable to a colleague on a shared machine. The
helpers here give them the mode the user's umask asks for, as `open()` and `mkdir()` do.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path


@functools.cache
def _umask() -> int:
    # The only way to read the umask is to set it; done once, at the first write.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from `open()` under the current umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a new folder gets from `mkdir()` under the current umask."""
    return 0o777 & ~_umask()


def temp_dir_beside(target: Path) -> Path:
    """A fresh folder beside `target`, to fill and then rename onto it, with `mkdir()`'s mode."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, dir_mode())
    return tmp


def temp_file_beside(target: Path) -> Path:
    """A fresh empty file beside `target`, to fill and then rename onto it, with `open()`'s
    mode."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


def write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a temporary file renamed into place."""
    tmp = temp_file_beside(target)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
