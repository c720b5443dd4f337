"""Small data files for the file tasks, written once per session."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from taskdata import SPLITS, frame_rows, labels, token_rows, write_parquet


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("task_data")


@pytest.fixture(scope="session")
def frames_parquet(data_dir: Path) -> Path:
    rows = [r.tolist() for r in frame_rows()]
    return write_parquet(data_dir / "frames.parquet", {"frames": rows, "split": SPLITS})


@pytest.fixture(scope="session")
def tokens_parquet(data_dir: Path) -> Path:
    rows = [r.tolist() for r in token_rows()]
    return write_parquet(data_dir / "tokens.parquet", {"tokens": rows, "split": SPLITS})


@pytest.fixture(scope="session")
def classify_parquet(data_dir: Path) -> Path:
    rows = [r.tolist() for r in token_rows()]
    return write_parquet(
        data_dir / "classify.parquet", {"tokens": rows, "label": labels(), "split": SPLITS}
    )


@pytest.fixture(scope="session")
def small_corpus(data_dir: Path) -> Path:
    """The first 20,000 characters of the packaged corpus: a charlm that evaluates fast."""
    text = (resources.files("gatesearch") / "data" / "tinyshakespeare.txt").read_text("utf-8")
    path = data_dir / "small_corpus.txt"
    path.write_text(text[:20_000], encoding="utf-8")
    return path
