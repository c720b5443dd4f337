"""Atomic writes leave files and folders with the mode the umask gives, not tempfile's 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatesearch import files
from gatesearch.files import temp_dir_beside, write_atomic


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["022", "077", "002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    files._umask.cache_clear()
    try:
        yield request.param
    finally:
        os.umask(before)
        files._umask.cache_clear()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_and_folders_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    write_atomic(tmp_path / "a.txt", b"hello")
    assert (tmp_path / "a.txt").read_bytes() == b"hello"
    assert _mode(tmp_path / "a.txt") == 0o666 & ~umask
    folder = temp_dir_beside(tmp_path / "run")
    assert folder.parent == tmp_path and folder.name.startswith(".run.")
    assert _mode(folder) == 0o777 & ~umask
    # The same as what open() and mkdir() make.
    (tmp_path / "plain.txt").write_bytes(b"")
    (tmp_path / "plain").mkdir()
    assert _mode(tmp_path / "plain.txt") == _mode(tmp_path / "a.txt")
    assert _mode(tmp_path / "plain") == _mode(folder)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
