"""Atomic writes: whole or not at all, and as readable as the umask says (not tempfile's 0600)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatesearch.atomic import AtomicFolder, remove_temps, temp_path_beside, write_atomic


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["022", "077", "002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    write_atomic(tmp_path / "a.txt", b"hello")
    assert (tmp_path / "a.txt").read_bytes() == b"hello"
    assert _mode(tmp_path / "a.txt") == 0o666 & ~umask
    write_atomic(tmp_path / "a.txt", b"again")  # replacing keeps the mode a new file gets
    assert (tmp_path / "a.txt").read_bytes() == b"again"
    assert _mode(tmp_path / "a.txt") == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temporary_names_are_fresh_hidden_and_beside_the_target(tmp_path: Path) -> None:
    names = {temp_path_beside(tmp_path / "run") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.parent == tmp_path and name.name.startswith(".run.") and not name.exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_remove_temps_takes_only_what_temp_path_beside_makes(tmp_path: Path) -> None:
    keep = [".hidden", "a.tmp", ".a.123.tmp", ".a.x.0123456789abcdef0123456789abcdef.tmp", "b"]
    for name in keep:
        (tmp_path / name).write_text("mine")
    file_temp = temp_path_beside(tmp_path / "g.parquet")
    file_temp.write_bytes(b"half")
    dir_temp = temp_path_beside(tmp_path / "run")
    (dir_temp / "sub").mkdir(parents=True)
    assert remove_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_temps(tmp_path / "absent") == 0


def test_remove_temps_of_dead_writers_only_spares_the_living(tmp_path: Path) -> None:
    mine = temp_path_beside(tmp_path / "index.html")  # this process: alive
    mine.write_bytes(b"writing")
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead_pid = int(proc.stdout)  # ended, and reaped: no such process now
    dead = tmp_path / f".index.html.{dead_pid}.{'0' * 32}.tmp"
    dead.write_bytes(b"torn")
    assert remove_temps(tmp_path, dead_only=True) == 1
    assert mine.exists() and not dead.exists()


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "a"
    with AtomicFolder(target) as tmp:
        (tmp / "x.txt").write_text("1")
        assert not target.exists()  # nothing under the final name until the block ends
    assert (target / "x.txt").read_text() == "1"
    # A failure while filling leaves neither the target nor a temporary folder behind.
    failed = tmp_path / "runs" / "b"
    with pytest.raises(RuntimeError), AtomicFolder(failed) as tmp:
        (tmp / "x.txt").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a"]


def test_atomic_folder_never_replaces_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "a"
    target.mkdir()
    (target / "old.txt").write_text("kept")
    with pytest.raises(OSError), AtomicFolder(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()  # which a bare os.rename would replace without a word
    with pytest.raises(FileExistsError), AtomicFolder(empty) as tmp:
        (tmp / "new.txt").write_text("new")
    assert list(empty.iterdir()) == []
    empty.rmdir()
    with AtomicFolder(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # the old one removed, no temporaries
    assert [p.name for p in target.iterdir()] == ["new.txt"]
