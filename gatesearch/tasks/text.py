"""Character-level language modelling on a text file.

The text is split by position: the first 90 % trains, the next 5 % validates, the last 5 %
tests. The vocabulary is the set of characters of the training part (characters that appear
only in the validation or test part share one extra "unknown" id). Training batches are
windows of `seq_len` characters at uniformly random offsets; the model predicts each next
character. Validation and test are scored on consecutive, non-overlapping windows of
`seq_len` characters (the remainder shorter than one window is dropped), so every position
is scored once with between 1 and `seq_len` characters of left context — the same spread of
contexts as training. Metric: cross-entropy in nats per character, lower is better.

The default corpus is tiny Shakespeare (Karpathy's char-rnn), shipped inside the package.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from gatesearch.registry import InputKind
from gatesearch.tasks.base import (
    Batch,
    Readout,
    Split,
    Task,
    TaskError,
    check_int,
    masked_cross_entropy_sum,
    seed_for,
)

TRAIN_FRACTION, VALID_FRACTION = 0.90, 0.05


def _read_text(path: str | None) -> tuple[str, str]:
    """(text, where it came from) — the packaged corpus when `path` is None."""
    if path is None:
        ref = resources.files("gatesearch") / "data" / "tinyshakespeare.txt"
        return ref.read_text(encoding="utf-8"), "tinyshakespeare.txt (packaged)"
    file = Path(path).expanduser()
    try:
        return file.read_text(encoding="utf-8"), str(file)
    except FileNotFoundError:
        raise TaskError(f"{file}: no such file (charlm param path)") from None
    except IsADirectoryError:
        raise TaskError(f"{file}: is a directory, not a text file (charlm param path)") from None
    except UnicodeDecodeError as exc:
        raise TaskError(f"{file}: not UTF-8 text at byte {exc.start} (charlm param path)") from None


class CharLM(Task):
    """Next-character prediction: loss = −(1/N) Σ_t log p(c_{t+1} | c_1 … c_t)."""

    name = "charlm"
    description = "character-level language modelling on a text file (default: tiny Shakespeare)"
    causal = True
    input_kind = InputKind.TOKENS
    metric_name = "loss"
    higher_is_better = False
    readout = Readout.EVERY_POSITION

    def __init__(self, path: str | None = None, seq_len: int = 64) -> None:
        if path is not None and not isinstance(path, str):
            raise TaskError(f"task {self.name}: param path must be a file path, got {path!r}")
        self.path = path
        self.seq_len = check_int(self.name, "seq_len", seq_len, 1)
        self._load()

    def _load(self) -> dict[Split, torch.Tensor]:
        cache = self.__dict__.get("_cache_ids")
        if cache is not None:
            return cache
        text, where = _read_text(self.path)
        # Code points as integers, so the vocabulary and encoding are array operations.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        n_train = int(len(codes) * TRAIN_FRACTION)
        n_valid = int(len(codes) * VALID_FRACTION)
        bounds = {
            Split.TRAIN: (0, n_train),
            Split.VALID: (n_train, n_train + n_valid),
            Split.TEST: (n_train + n_valid, len(codes)),
        }
        for split, (lo, hi) in bounds.items():
            if hi - lo < self.seq_len + 1:
                raise TaskError(
                    f"{where}: the {split.value} part has {hi - lo} characters, fewer than"
                    f" seq_len + 1 = {self.seq_len + 1} (field text)"
                )
        vocab = np.unique(codes[:n_train])
        ids = np.searchsorted(vocab, codes)
        unknown = vocab[np.minimum(ids, len(vocab) - 1)] != codes
        n_vocab = len(vocab) + int(unknown.any())
        ids[unknown] = len(vocab)
        self.vocab = "".join(chr(c) for c in vocab)
        self.n_in = self.n_out = n_vocab
        all_ids = torch.from_numpy(ids.astype(np.int64))
        cache = {split: all_ids[lo:hi] for split, (lo, hi) in bounds.items()}
        self._cache_ids = cache
        return cache

    def batches(self, split: Split, batch_size: int, seed: int | None = None) -> Iterator[Batch]:
        data = self._load()[split]
        ctx = self.seq_len
        offsets = torch.arange(ctx)  # (T,)
        if split is Split.TRAIN:
            gen = torch.Generator().manual_seed(seed_for(self.name, "train", seed or 0))
            return self._train(data, batch_size, gen, offsets)
        return self._eval(data, batch_size, seed, offsets)

    def _train(
        self, data: torch.Tensor, batch_size: int, gen: torch.Generator, offsets: torch.Tensor
    ) -> Iterator[Batch]:
        ctx = self.seq_len
        mask = torch.ones(batch_size, ctx, dtype=torch.bool)
        while True:
            start = torch.randint(0, len(data) - ctx, (batch_size, 1), generator=gen)
            idx = start + offsets  # (B, T)
            yield Batch(data[idx], data[idx + 1], mask)

    def _eval(
        self, data: torch.Tensor, batch_size: int, seed: int | None, offsets: torch.Tensor
    ) -> Iterator[Batch]:
        ctx = self.seq_len
        n = (len(data) - 1) // ctx
        starts = torch.arange(n) * ctx
        if seed is not None:
            starts = starts[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
        for i in range(0, n, batch_size):
            idx = starts[i : i + batch_size, None] + offsets  # (B, T)
            yield Batch(data[idx], data[idx + 1], torch.ones(idx.shape, dtype=torch.bool))

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        total, count = masked_cross_entropy_sum(outputs, batch)
        return total / max(count, 1)

    def metric(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        total, count = masked_cross_entropy_sum(outputs, batch)
        return float(total), float(count)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text for token ids (the unknown id reads as U+FFFD)."""
        return "".join(self.vocab[i] if i < len(self.vocab) else "\ufffd" for i in list(ids))


TEXT_TASKS: dict[str, type[Task]] = {CharLM.name: CharLM}
