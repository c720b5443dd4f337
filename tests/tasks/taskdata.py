"""Writers of small data files for the file-task tests (imported by conftest and tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = ["train"] * 10 + ["valid"] * 4 + ["test"] * 3
FRAME_WIDTH = 6
VOCAB = 11
N_CLASSES = 3


def ragged_lengths(n: int, seed: int) -> list[int]:
    """Lengths 2 … 9, deliberately different, so padding and masks are exercised."""
    return [int(x) for x in np.random.default_rng(seed).integers(2, 10, n)]


def frame_rows(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = ragged_lengths(len(SPLITS), seed)
    return [(rng.random((L, FRAME_WIDTH)) < 0.3).astype(np.float32) for L in lengths]


def token_rows(seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, L) for L in ragged_lengths(len(SPLITS), seed)]


def labels(seed: int = 2) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(0, N_CLASSES, len(SPLITS))]


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def write_npz_flat(path: Path, columns: dict[str, object]) -> Path:
    """Ragged fields as one flat array plus `lengths`, the NPZ schema for variable length."""
    arrays: dict[str, np.ndarray] = {}
    for name, value in columns.items():
        if name in ("tokens", "frames"):
            rows = list(value)  # type: ignore[call-overload]
            arrays[name] = np.concatenate(rows)
            arrays["lengths"] = np.array([len(r) for r in rows])
        else:
            arrays[name] = np.asarray(value)
    np.savez(path, **arrays)
    return path
