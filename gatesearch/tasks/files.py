"""Tasks on the user's own sequences, read from a Parquet or NPZ file (schema: docs/tasks.md).

One file holds all three splits, told apart by a `split` field ("train", "valid", "test").
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
    Split,
    Task,
    TaskError,
    check_int,
    masked_cross_entropy_sum,
    seed_for,
)

SPLIT_FIELD, LABEL_FIELD, LENGTHS_FIELD = "split", "label", "lengths"
TOKENS_FIELD, FRAMES_FIELD = "tokens", "frames"
PARQUET_SUFFIXES = (".parquet", ".pq")
NPZ_SUFFIXES = (".npz",)


# ------------------------------------------------------------------------------ reading


@dataclass
class Sequences:
    """Ragged sequences: row i is values[offsets[i]:offsets[i+1]]; values (N,) int64 tokens
    or (N, D) float32 frames."""

    values: np.ndarray
    offsets: np.ndarray  # (n + 1,) int64

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: np.ndarray) -> Sequences:
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Position j of the result comes from start[row] + (j − new start[row]).
        shift = np.repeat(self.offsets[:-1][rows] - offsets[:-1], lengths)
        return Sequences(self.values[np.arange(offsets[-1]) + shift], offsets)


@dataclass
class Table:
    """What a data file holds, checked: the sequence field, labels, split of each row."""

    field: str  # TOKENS_FIELD or FRAMES_FIELD
    seqs: Sequences
    labels: np.ndarray | None
    split: np.ndarray  # (n,) str


class _Fail:
    """Builds TaskErrors that name the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, field: str, problem: str) -> TaskError:
        return TaskError(f"{self.path}: field {field}: {problem}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_parquet(path: Path, wanted: list[str], fail: _Fail) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise TaskError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    present = [f for f in wanted if f in schema.names]
    try:
        table = pq.read_table(path, columns=present)
    except (pa.ArrowException, OSError) as exc:
        raise TaskError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None

    out: dict[str, Any] = {}
    for name in present:
        col = table.column(name).combine_chunks()
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise fail(name, f"row {row} is null")
        if name == SPLIT_FIELD:
            if pa.types.is_dictionary(col.type):  # pandas categoricals arrive this way
                col = col.dictionary_decode()
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                raise fail(name, f"must be strings (train/valid/test), found {col.type}")
            out[name] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=str)
        elif name == LABEL_FIELD:
            if not pa.types.is_integer(col.type):
                raise fail(name, f"must be integers, found {col.type}")
            out[name] = col.to_numpy().astype(np.int64)
        elif name == TOKENS_FIELD:
            if not _is_list(col.type) or not pa.types.is_integer(col.type.value_type):
                raise fail(name, f"must be lists of integers, found {col.type}")
            flat = pc.list_flatten(col)
            if flat.null_count:
                raise fail(name, "contains null tokens")
            lengths = pc.list_value_length(col).to_numpy().astype(np.int64)
            out[name] = Sequences(flat.to_numpy().astype(np.int64), _offsets(lengths))
        elif name == FRAMES_FIELD:
            if not (_is_list(col.type) and _is_list(col.type.value_type)):
                raise fail(name, f"must be lists of frames (lists of numbers), found {col.type}")
            frames = pc.list_flatten(col)  # one entry per time step
            if frames.null_count:
                raise fail(name, "contains a null frame")
            kind = col.type.value_type.value_type
            if not (
                pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            ):
                raise fail(name, f"frame values must be numbers, found {kind}")
            widths = pc.list_value_length(frames).to_numpy().astype(np.int64)
            lengths = pc.list_value_length(col).to_numpy().astype(np.int64)
            width = _common_width(widths, lengths, name, fail)
            flat = pc.list_flatten(frames)
            if flat.null_count:
                raise fail(name, "contains null values")
            values = flat.to_numpy(zero_copy_only=False).astype(np.float32)
            out[name] = Sequences(values.reshape(len(widths), width), _offsets(lengths))
    return out


def _is_list(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _common_width(widths: np.ndarray, lengths: np.ndarray, name: str, fail: _Fail) -> int:
    """The one frame width of a file; a TaskError naming the first row that differs."""
    if len(widths) == 0:
        return 0
    odd = np.flatnonzero(widths != widths[0])
    if len(odd):
        row = int(np.searchsorted(np.cumsum(lengths), odd[0], side="right"))
        raise fail(
            name,
            f"frames of different widths ({int(widths[0])} and {int(widths[odd[0]])});"
            f" first at row {row}",
        )
    return int(widths[0])


def _read_npz(path: Path, wanted: list[str], fail: _Fail) -> dict[str, Any]:
    import zipfile

    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise TaskError(f"{path}: not a readable NPZ file ({_first_line(exc)})") from None
    if magic != b"PK\x03\x04":  # np.load would call anything else a refused pickle
        raise TaskError(f"{path}: not an NPZ file (an NPZ is a zip archive of .npy arrays)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise TaskError(f"{path}: not a readable NPZ file ({_first_line(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        archive_type = type(archive).__name__
        raise TaskError(f"{path}: not an NPZ archive of named arrays (found {archive_type})")
    raw: dict[str, np.ndarray] = {}
    with archive:
        for name in [*wanted, LENGTHS_FIELD]:
            if name not in archive.files:
                continue
            try:
                raw[name] = archive[name]
            except ValueError:
                raise fail(
                    name, "is an object array; save numbers or fixed-width strings (no pickle)"
                ) from None
            except (OSError, zipfile.BadZipFile) as exc:
                raise fail(name, f"cannot be read ({_first_line(exc)})") from None

    out: dict[str, Any] = {}
    lengths = raw.get(LENGTHS_FIELD)
    if lengths is not None:
        if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
            raise fail(
                LENGTHS_FIELD, f"must be a 1-D integer array, found {lengths.dtype} {lengths.shape}"
            )
        if (lengths < 0).any():
            raise fail(LENGTHS_FIELD, f"row {int(np.flatnonzero(lengths < 0)[0])} is negative")
        lengths = lengths.astype(np.int64)
    for name, arr in raw.items():
        if name == SPLIT_FIELD:
            if arr.ndim != 1 or arr.dtype.kind not in "US":
                raise fail(name, f"must be a 1-D string array, found {arr.dtype} {arr.shape}")
            out[name] = arr.astype(str)
        elif name == LABEL_FIELD:
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise fail(name, f"must be a 1-D integer array, found {arr.dtype} {arr.shape}")
            out[name] = arr.astype(np.int64)
        elif name == TOKENS_FIELD:
            if not np.issubdtype(arr.dtype, np.integer):
                raise fail(name, f"must be integers, found {arr.dtype}")
            out[name] = _npz_sequences(arr.astype(np.int64), lengths, 1, name, fail)
        elif name == FRAMES_FIELD:
            if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise fail(name, f"must be numbers, found {arr.dtype}")
            out[name] = _npz_sequences(arr.astype(np.float32), lengths, 2, name, fail)
    return out


def _npz_sequences(
    arr: np.ndarray, lengths: np.ndarray | None, step_ndim: int, name: str, fail: _Fail
) -> Sequences:
    """Sequences from a flat array with `lengths`, or from a padded (n, T, …) array whose
    optional `lengths` say how much of each row is real. `step_ndim` is 1 for tokens (a
    step is a scalar) and 2 for frames (a step is a vector)."""
    flat_ndim, padded_ndim = step_ndim, step_ndim + 1
    if arr.ndim == flat_ndim:
        if lengths is None:
            raise fail(LENGTHS_FIELD, f"is needed with a flat {name} array (one length per row)")
        if int(lengths.sum()) != len(arr):
            raise fail(
                LENGTHS_FIELD,
                f"sum to {int(lengths.sum())} but {name} has {len(arr)} steps",
            )
        return Sequences(arr, _offsets(lengths))
    if arr.ndim == padded_ndim:
        n, T = arr.shape[:2]
        if lengths is None:
            lengths = np.full(n, T, dtype=np.int64)
        elif len(lengths) != n:
            raise fail(LENGTHS_FIELD, f"has {len(lengths)} rows but {name} has {n}")
        elif (lengths > T).any():
            row = int(np.flatnonzero(lengths > T)[0])
            raise fail(LENGTHS_FIELD, f"row {row} is {int(lengths[row])}, longer than {T}")
        keep = np.arange(T)[None, :] < lengths[:, None]  # (n, T)
        return Sequences(arr[keep], _offsets(lengths))
    shape = (
        "(steps,) with lengths, or (rows, T)"
        if step_ndim == 1
        else "(steps, D) with lengths, or (rows, T, D)"
    )
    raise fail(name, f"has shape {arr.shape}; expected {shape}")


def read_table(path: Path, sequence_fields: tuple[str, ...], need_label: bool) -> Table:
    """Read and check a data file; TaskError naming the file and field on any problem."""
    fail = _Fail(path)
    if not path.exists():
        raise TaskError(f"{path}: no such file")
    if path.is_dir():
        raise TaskError(f"{path}: is a directory, not a data file")
    suffix = path.suffix.lower()
    wanted = [SPLIT_FIELD, *sequence_fields, *([LABEL_FIELD] if need_label else [])]
    if suffix in PARQUET_SUFFIXES:
        cols = _read_parquet(path, wanted, fail)
    elif suffix in NPZ_SUFFIXES:
        cols = _read_npz(path, wanted, fail)
    else:
        raise TaskError(f"{path}: unknown format {suffix or '(no suffix)'}; use .parquet or .npz")

    present = [f for f in sequence_fields if f in cols]
    if not present:
        raise fail(" or ".join(sequence_fields), "missing")
    if len(present) > 1:
        raise fail(" and ".join(present), "both present; keep one")
    field = present[0]
    seqs: Sequences = cols[field]
    n = len(seqs)
    for required in (SPLIT_FIELD, *([LABEL_FIELD] if need_label else [])):
        if required not in cols:
            raise fail(required, "missing")
        if len(cols[required]) != n:
            raise fail(required, f"has {len(cols[required])} rows but {field} has {n}")
    split = cols[SPLIT_FIELD]
    names = {s.value for s in Split}
    bad = np.flatnonzero(~np.isin(split, sorted(names)))
    if len(bad):
        row = int(bad[0])
        raise fail(SPLIT_FIELD, f"row {row} is {str(split[row])!r}; expected train, valid or test")
    for s in Split:
        if not (split == s.value).any():
            raise fail(SPLIT_FIELD, f"the {s.value} split is empty")
    if field == FRAMES_FIELD:
        finite = np.isfinite(seqs.values).all(axis=1)
        if not finite.all():
            step = int(np.flatnonzero(~finite)[0])
            row = int(np.searchsorted(seqs.offsets, step, side="right") - 1)
            raise fail(field, f"row {row} has a NaN or infinite value")
    return Table(field, seqs, cols.get(LABEL_FIELD), split)


def _check_range(
    values: np.ndarray, offsets: np.ndarray | None, low: int, high: int, name: str, fail: _Fail
) -> None:
    """Values in [low, high); the first row outside named (rows via offsets when ragged)."""
    bad = np.flatnonzero((values < low) | (values >= high))
    if len(bad):
        i = int(bad[0])
        row = i if offsets is None else int(np.searchsorted(offsets, i, side="right") - 1)
        raise fail(name, f"row {row} has {int(values[i])}, outside [{low}, {high})")


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

    def _fail(self) -> _Fail:
        return _Fail(Path(self.path).expanduser())

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
        if self.next_step:
            return Batch(steps[:, :-1], steps[:, 1:], mask[:, 1:])
        assert data.labels is not None  # a classify file always carries labels
        labels = torch.from_numpy(data.labels[rows])  # (B,)
        return Batch(steps, labels, mask)


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
    sequence_fields = (TOKENS_FIELD,)

    def __init__(self, path: str, vocab: int | None = None, max_len: int | None = None) -> None:
        self._init_file(path, max_len)
        self.vocab = None if vocab is None else check_int(self.name, "vocab", vocab, 1)
        self._splits()

    def _check(self, table: Table) -> None:
        values = table.seqs.values
        high = self.vocab if self.vocab is not None else int(values.max(initial=0)) + 1
        _check_range(values, table.seqs.offsets, 0, high, TOKENS_FIELD, self._fail())
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
        _check_range(labels, None, 0, high, LABEL_FIELD, fail)
        self.n_out = high
        values = table.seqs.values
        if table.field == TOKENS_FIELD:
            self.input_kind = InputKind.TOKENS
            vocab = self.vocab if self.vocab is not None else int(values.max(initial=0)) + 1
            _check_range(values, table.seqs.offsets, 0, vocab, TOKENS_FIELD, fail)
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
