"""A small `classify` data file, as a user brings one: multichannel frames (speech or sensor
features) of varied lengths, one label a sequence, in the flat NPZ layout (docs/tasks.md).
Imported by the tests of the classification space, its default and its campaign."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHANNELS = 4
N_CLASSES = 3
SPLITS = ["train"] * 24 + ["valid"] * 9 + ["test"] * 9


def write_classify_npz(path: Path, seed: int = 0) -> Path:
    """Frames (steps, CHANNELS) with `lengths`, `label` and `split`. A sequence's class raises
    the mean of one channel, so a model can learn it; lengths 5 … 12 make batches padded."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, len(SPLITS))
    lengths = rng.integers(5, 13, len(SPLITS))
    rows = []
    for label, length in zip(labels, lengths, strict=True):
        frames = rng.normal(size=(length, CHANNELS)).astype(np.float32)
        frames[:, label] += 1.0
        rows.append(frames)
    np.savez(
        path,
        frames=np.concatenate(rows),
        lengths=lengths,
        label=labels,
        split=np.array(SPLITS),
    )
    return path
