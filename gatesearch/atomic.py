"""Files and folders written whole or not at all, with the permissions `open()` would give.

Every output gatesearch writes (run folders, graphs, reports, retrained and exported models) is
made under a temporary name beside its target and renamed into place, so a reader never sees
half of it. The temporary names are fresh paths, not `tempfile`'s: `mkstemp` and `mkdtemp` make
their files 0600 and folders 0700, which the rename keeps (a colleague on a shared machine could
not read a run or an exported model), and on ext4 truncating and rewriting `mkstemp`'s empty
file forces a synchronous flush at close (auto_da_alloc, ~3 ms a graph on the driver). A path
created fresh gets the umask's mode, as any `open()` or `mkdir()` does.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from pathlib import Path

# Held while a write that is not atomic is under way (the study journal's append). A thread
# that must end the process at once (the dispatcher's watch on a cluster) takes it first: half
# a journal record would keep the run from opening again.
WRITE_GUARD = threading.Lock()

# What temp_path_beside makes: .NAME.PID.HEX32.tmp
_TEMP = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{32}\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def temp_path_beside(target: Path) -> Path:
    """An unused name in `target`'s folder for a file or folder to be renamed onto it."""
    target = Path(target)
    return target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"


def is_temp(name: str) -> bool:
    """Whether a file or folder name is one `temp_path_beside` makes (a write under way, or
    left by a killed writer)."""
    return _TEMP.match(name) is not None


def remove_temps(folder: Path, dead_only: bool = False) -> int:
    """Remove the temporary files and folders that killed writers left in `folder` (only
    names temp_path_beside makes); the number removed. Without `dead_only`, call it only
    while no live process can be writing there (under the run's driver lock); with it, only
    the temporaries of processes no longer alive on this machine go (for folders that
    several commands may write at once, such as a report's)."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or (dead_only and _alive(int(match.group(1)))):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed += 1
    return removed


def write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a fresh temporary file renamed into place."""
    tmp = temp_path_beside(target)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AtomicFolder:
    """A folder written whole or not at all: filled under a temporary name beside `target`,
    renamed onto it when the `with` block ends without an exception, removed when it raises.

    `create()` is separate from the block so a caller can tell "cannot write there at all"
    (the parent or the temporary folder) from a failure while filling it. Without `replace`,
    an existing `target` is never touched (the rename fails with OSError); with it, the old
    folder is moved aside, the new one renamed into place, and only then the old removed.
    """

    def __init__(self, target: Path, *, replace: bool = False) -> None:
        self.target = Path(target)
        self.replace = replace
        self.tmp = temp_path_beside(self.target)
        self._created = False

    def create(self) -> Path:
        """Make the parent (as needed) and the temporary folder; the latter's path."""
        if not self._created:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir()
            self._created = True
        return self.tmp

    def __enter__(self) -> Path:
        return self.create()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            old = None
            if self.target.exists():
                if not self.replace:
                    # os.rename would silently replace an empty folder.
                    raise FileExistsError(f"{self.target} already exists")
                old = temp_path_beside(self.target)
                os.rename(self.target, old)
            os.rename(self.tmp, self.target)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
