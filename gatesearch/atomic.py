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
import uuid
from pathlib import Path


def temp_path_beside(target: Path) -> Path:
    """An unused name in `target`'s folder for a file or folder to be renamed onto it."""
    target = Path(target)
    return target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"


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
