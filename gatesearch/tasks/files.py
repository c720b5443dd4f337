"""Tasks on the user's own sequences, read from a Parquet or NPZ file (schema: docs/tasks.md).

One file holds all three splits, told apart by a `split` field ("train", "valid", "test") or,
in an NPZ, by per-split array names (`train_frames`, `valid_frames`, …).
Each row is a sequence — `tokens` (integers) or `frames` (rows of numbers of one width) —
plus, for classification, an integer `label`. Sequences may differ in length; a batch is
padded at the end to its longest sequence and `Batch.mask` marks the real positions.

- `frames`: next-step prediction of multi-hot frames (polyphonic music). The model reads
  frames 1 … L−1 and emits one logit per dimension for frames 2 … L; the loss and metric are
  the Bernoulli negative log-likelihood per time step, summed over dimensions.
- `classify`: one label per sequence. The class logits are the model's output at the last
  real position of the sequence. Non-causal: a model may read the whole sequence (padding
  included — zeros after the end).
- `tokens`: language modelling on token sequences; metric: nats per token.

Every problem with the data raises TaskError naming the file and the field; files are read
with pyarrow or with `np.load(allow_pickle=False)`, never unpickled.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gatesearch.registry import InputKind
from gatesearch.tasks.base import (
    Batch,
    EpochSize,
    Readout,
    Split,
    Task,
    TaskError,
    check_int,
    masked_cross_entropy_sum,
    seed_for,
)
from gatesearch.tasks.tables import (
    FRAMES_FIELD,
    LABEL_FIELD,
    TOKENS_FIELD,
    FileFail,
    Sequences,
    Table,
    check_range,
    read_table,
)

# ------------------------------------------------------------------------------ tasks


@dataclass
class _Split:
    """A split ready for batching: sequences, labels, and the eval items (row, start, length)."""

    seqs: Sequences
    labels: np.ndarray | None
    items: np.ndarray  # (m, 3) int64


class FileTask(Task):
    """A task on a data file. Subclasses say which fields they read and how a window of a
    sequence becomes inputs, targets and mask.

    `max_len` caps the positions a batch feeds the model: longer training sequences give a
    random window of that many positions, longer validation/test sequences are cut into
    consecutive windows so every position is scored once.
    """

    sequence_fields: tuple[str, ...]
    need_label = False
    # Next-step tasks feed positions 1 … L−1 and predict 2 … L, so a window spans max_len + 1.
    next_step = True

    path: str
    max_len: int | None

    def _init_file(self, path: Any, max_len: Any) -> None:
        if not isinstance(path, str) or not path:
            raise TaskError(f"task {self.name}: param path must be a file path, got {path!r}")
        self.path = path
        self.max_len = None if max_len is None else check_int(self.name, "max_len", max_len, 1)

    # -- data

    def _fail(self) -> FileFail:
        return FileFail(Path(self.path).expanduser())

    def _splits(self) -> dict[Split, _Split]:
        cache = self.__dict__.get("_cache_splits")
        if cache is not None:
            return cache
        table = read_table(Path(self.path).expanduser(), self.sequence_fields, self.need_label)
        self._check(table)
        min_len = 2 if self.next_step else 1
        short = np.flatnonzero(table.seqs.lengths < min_len)
        if len(short):
            row = int(short[0])
            raise self._fail()(
                table.field,
                f"row {row} has {int(table.seqs.lengths[row])} steps; at least {min_len} needed",
            )
        cache = {}
        for split in Split:
            rows = np.flatnonzero(table.split == split.value)
            seqs = table.seqs.take(rows)
            labels = None if table.labels is None else table.labels[rows]
            cache[split] = _Split(seqs, labels, self._eval_items(seqs.lengths))
        self._cache_splits = cache
        return cache

    def _check(self, table: Table) -> None:
        """Check the fields against the task's params and set n_in / n_out / seq_len."""

    def _window(self) -> int | None:
        """Most steps of a sequence one item spans (None: whole sequences)."""
        if self.max_len is None:
            return None
        return self.max_len + 1 if self.next_step else self.max_len

    def _eval_items(self, lengths: np.ndarray) -> np.ndarray:
        window = self._window()
        rows = np.arange(len(lengths))
        if window is None or self.need_label:
            # Classification keeps the first `max_len` steps of a sequence.
            span = lengths if window is None else np.minimum(lengths, window)
            return np.stack([rows, np.zeros_like(rows), span], axis=1)
        stride = window - 1 if self.next_step else window
        # Consecutive windows overlapping by the one step a next-step window needs to start.
        n_win = np.maximum(1, -(-(lengths - (window - stride)) // stride))
        row = np.repeat(rows, n_win)
        k = np.arange(len(row)) - np.repeat(np.cumsum(n_win) - n_win, n_win)
        start = k * stride
        span = np.minimum(window, lengths[row] - start)
        return np.stack([row, start, span], axis=1)

    def _fed(self, span: np.ndarray) -> np.ndarray:
        """Real positions the model reads from items of `span` steps: a next-step task reads
        all but the last step, whose frame is only a target."""
        return span - 1 if self.next_step else span

    def train_epoch(self) -> EpochSize:
        lengths = self._splits()[Split.TRAIN].seqs.lengths
        window = self._window()
        span = lengths if window is None else np.minimum(lengths, window)
        return EpochSize(len(lengths), int(self._fed(span).sum()))

    def _longest(self, lengths: np.ndarray) -> int:
        longest = int(lengths.max())
        window = self._window()
        longest = longest if window is None else min(longest, window)
        return longest - 1 if self.next_step else longest

    # -- batches

    def batches(self, split: Split, batch_size: int, seed: int | None = None) -> Iterator[Batch]:
        data = self._splits()[split]
        if split is Split.TRAIN:
            return self._train(data, batch_size, 0 if seed is None else seed)
        return self._eval(data, batch_size, seed)

    def _eval(self, data: _Split, batch_size: int, seed: int | None) -> Iterator[Batch]:
        items = data.items
        if seed is not None:
            items = items[np.random.default_rng(seed).permutation(len(items))]
        for i in range(0, len(items), batch_size):
            yield self._collate(data, items[i : i + batch_size])

    def _train(self, data: _Split, batch_size: int, seed: int) -> Iterator[Batch]:
        rng = np.random.default_rng(seed_for(self.name, "train", seed))
        lengths = data.seqs.lengths
        window = self._window()
        order = np.empty(0, dtype=np.int64)
        while True:
            # Epochs of shuffled sequences, joined so every batch is full.
            while len(order) < batch_size:
                order = np.concatenate([order, rng.permutation(len(lengths))])
            rows, order = order[:batch_size], order[batch_size:]
            span = lengths[rows] if window is None else np.minimum(lengths[rows], window)
            if self.need_label:
                start = np.zeros_like(rows)
            else:
                start = rng.integers(0, lengths[rows] - span + 1)
            yield self._collate(data, np.stack([rows, start, span], axis=1))

    def _collate(self, data: _Split, items: np.ndarray) -> Batch:
        rows, start, span = items[:, 0], items[:, 1], items[:, 2]
        T = int(span.max())
        pos = np.arange(T)[None, :]  # (1, T)
        real = pos < span[:, None]  # (B, T)
        idx = np.where(real, data.seqs.offsets[rows][:, None] + start[:, None] + pos, 0)
        values = data.seqs.values[idx]  # (B, T) or (B, T, D)
        values[~real] = 0
        steps = torch.from_numpy(values)
        mask = torch.from_numpy(real)
        fed = int(self._fed(span).sum())  # what a token budget counts, padding left out
        if self.next_step:
            return Batch(steps[:, :-1], steps[:, 1:], mask[:, 1:], fed)
        assert data.labels is not None  # a classify file always carries labels
        labels = torch.from_numpy(data.labels[rows])  # (B,)
        lengths = torch.from_numpy(span.astype(np.int64))  # (B,)
        return Batch(steps, labels, mask, fed, lengths)


class FramesTask(FileTask):
    """Next-step prediction of multi-hot frames (the polyphonic-music convention).

    p(x_{t+1,d} = 1) = σ(y_{t,d}) for the model's output y (B, T, D);
    NLL per step = −Σ_d [x log σ(y) + (1 − x) log(1 − σ(y))], averaged over predicted steps.
    """

    name = "frames"
    description = "next-step prediction of multi-hot frames from a data file (NLL per step)"
    causal = True
    input_kind = InputKind.CONTINUOUS
    metric_name = "nll"
    higher_is_better = False
    readout = Readout.NEXT_FRAME
    sequence_fields = (FRAMES_FIELD,)

    def __init__(self, path: str, width: int | None = None, max_len: int | None = None) -> None:
        self._init_file(path, max_len)
        # Stating the width (e.g. 88 piano keys) turns a file of other frames into an error.
        self.width = None if width is None else check_int(self.name, "width", width, 1)
        self._splits()

    def _check(self, table: Table) -> None:
        values = table.seqs.values
        outside = np.flatnonzero(((values < 0) | (values > 1)).any(axis=1))
        if len(outside):
            row = int(np.searchsorted(table.seqs.offsets, outside[0], side="right") - 1)
            raise self._fail()(FRAMES_FIELD, f"row {row} has values outside [0, 1] (multi-hot)")
        self.n_in = self.n_out = int(values.shape[1])
        if self.n_in == 0:
            raise self._fail()(FRAMES_FIELD, "frames have width 0")
        if self.width is not None and self.n_in != self.width:
            raise self._fail()(
                FRAMES_FIELD, f"frames have width {self.n_in}, expected {self.width} (param width)"
            )
        self.seq_len = self._longest(table.seqs.lengths)

    def _nll_sum(self, outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = outputs[batch.mask].float()  # (N, D)
        targets = batch.targets[batch.mask]  # (N, D)
        total = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
        return total, int(logits.shape[0])

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        total, count = self._nll_sum(outputs, batch)
        return total / max(count, 1)

    def metric(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        total, count = self._nll_sum(outputs, batch)
        return float(total), float(count)


class TokensTask(FileTask):
    """Language modelling on token sequences: cross-entropy of each next token (nats/token)."""

    name = "tokens"
    description = "language modelling on token sequences from a data file (nats per token)"
    causal = True
    input_kind = InputKind.TOKENS
    metric_name = "loss"
    higher_is_better = False
    readout = Readout.EVERY_POSITION
    sequence_fields = (TOKENS_FIELD,)

    def __init__(self, path: str, vocab: int | None = None, max_len: int | None = None) -> None:
        self._init_file(path, max_len)
        self.vocab = None if vocab is None else check_int(self.name, "vocab", vocab, 1)
        self._splits()

    def _check(self, table: Table) -> None:
        values = table.seqs.values
        high = self.vocab if self.vocab is not None else int(values.max(initial=0)) + 1
        check_range(values, table.seqs.offsets, 0, high, TOKENS_FIELD, self._fail())
        self.n_in = self.n_out = high
        self.seq_len = self._longest(table.seqs.lengths)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        total, count = masked_cross_entropy_sum(outputs, batch)
        return total / max(count, 1)

    def metric(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        total, count = masked_cross_entropy_sum(outputs, batch)
        return float(total), float(count)


class ClassifyTask(FileTask):
    """Sequence classification: logits = the model's output at the last real position.

    loss = cross-entropy of those logits against the sequence's label; metric = accuracy.
    """

    name = "classify"
    description = "sequence classification from a data file (tokens or frames; accuracy)"
    causal = False
    metric_name = "accuracy"
    higher_is_better = True
    readout = Readout.LAST_POSITION  # see _logits
    sequence_fields = (TOKENS_FIELD, FRAMES_FIELD)
    need_label = True
    next_step = False

    def __init__(
        self,
        path: str,
        n_classes: int | None = None,
        vocab: int | None = None,
        max_len: int | None = None,
    ) -> None:
        self._init_file(path, max_len)
        self.n_classes = (
            None if n_classes is None else check_int(self.name, "n_classes", n_classes, 2)
        )
        self.vocab = None if vocab is None else check_int(self.name, "vocab", vocab, 1)
        self._splits()

    def _check(self, table: Table) -> None:
        fail = self._fail()
        assert table.labels is not None
        labels = table.labels
        high = self.n_classes if self.n_classes is not None else max(2, int(labels.max()) + 1)
        check_range(labels, None, 0, high, LABEL_FIELD, fail)
        self.n_out = high
        values = table.seqs.values
        if table.field == TOKENS_FIELD:
            self.input_kind = InputKind.TOKENS
            vocab = self.vocab if self.vocab is not None else int(values.max(initial=0)) + 1
            check_range(values, table.seqs.offsets, 0, vocab, TOKENS_FIELD, fail)
            self.n_in = vocab
        else:
            if self.vocab is not None:
                raise TaskError(
                    f"task {self.name}: param vocab applies to tokens, but {self.path} has frames"
                )
            self.input_kind = InputKind.CONTINUOUS
            self.n_in = int(values.shape[1])
        self.seq_len = self._longest(table.seqs.lengths)

    def _logits(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        last = batch.mask.sum(dim=1) - 1  # (B,)
        return outputs[torch.arange(outputs.shape[0], device=outputs.device), last].float()

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self._logits(outputs, batch), batch.targets)

    def metric(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        hit = self._logits(outputs, batch).argmax(-1) == batch.targets
        return float(hit.sum()), float(hit.numel())


FILE_TASKS: dict[str, type[Task]] = {t.name: t for t in (FramesTask, TokensTask, ClassifyTask)}
