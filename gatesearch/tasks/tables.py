"""Reading a task's data file (Parquet or NPZ) into checked arrays: one split field, one
sequence field (`tokens` or `frames`, ragged), an optional label. An NPZ may instead hold
each split's arrays under its own prefix (`train_frames`, `train_lengths`, `train_labels`,
`valid_…`, `test_…`), a layout common in published data sets. Every problem names the file
and the field (TaskError); NPZ files are read with `np.load(allow_pickle=False)`, never
unpickled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gatesearch.tasks.base import Split, TaskError

SPLIT_FIELD, LABEL_FIELD, LENGTHS_FIELD = "split", "label", "lengths"
TOKENS_FIELD, FRAMES_FIELD = "tokens", "frames"
PARQUET_SUFFIXES = (".parquet", ".pq")
NPZ_SUFFIXES = (".npz",)


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


class FileFail:
    """Builds TaskErrors that name the file and the field — as the file spells it (`names`:
    `label` is `train_labels` in a per-split NPZ)."""

    def __init__(self, path: Path, names: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.names = dict(names or {})

    def __call__(self, field: str, problem: str) -> TaskError:
        return TaskError(f"{self.path}: field {self.names.get(field, field)}: {problem}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_parquet(
    path: Path, wanted: list[str], fail: FileFail
) -> tuple[dict[str, Any], list[str]]:
    """The wanted columns of a Parquet file, checked, and the names of all its columns."""
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
    return out, list(schema.names)


def _is_list(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _common_width(widths: np.ndarray, lengths: np.ndarray, name: str, fail: FileFail) -> int:
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


def _read_npz(path: Path, wanted: list[str], fail: FileFail) -> tuple[dict[str, Any], list[str]]:
    """The wanted fields of an NPZ in either layout, and the names of all its arrays."""
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
    with archive:
        names = list(archive.files)
        sequence_fields = [f for f in wanted if f in (TOKENS_FIELD, FRAMES_FIELD)]
        per_split = [f"{s.value}_{f}" for s in Split for f in sequence_fields]
        found = [n for n in per_split if n in names]
        if not found:
            spelled = {n: n for n in [*wanted, LENGTHS_FIELD]}
            return _npz_columns(_npz_arrays(archive, spelled, fail), fail), names
        one_table = [n for n in (SPLIT_FIELD, *sequence_fields) if n in names]
        if one_table:
            # Which rows belong to which split would depend on which layout we believed.
            raise TaskError(
                f"{path}: holds both {one_table[0]} and per-split arrays ({found[0]}); "
                "keep one layout"
            )
        parts = {}
        for split in Split:
            spelled = _split_spelling(split, names, wanted, path)
            split_fail = FileFail(path, spelled)
            cols = _npz_columns(_npz_arrays(archive, spelled, split_fail), split_fail)
            parts[split] = (cols, split_fail)
    return _join_splits(parts, path), names


def _split_spelling(
    split: Split, names: list[str], wanted: list[str], path: Path
) -> dict[str, str]:
    """Field name → the array holding it for `split` in a per-split NPZ: `train_frames`,
    `train_lengths`, and the label as `train_label` or `train_labels`."""
    prefix = f"{split.value}_"
    spelled = {f: prefix + f for f in [*wanted, LENGTHS_FIELD] if f != SPLIT_FIELD}
    if LABEL_FIELD in spelled:
        both = [n for n in (prefix + LABEL_FIELD, prefix + LABEL_FIELD + "s") if n in names]
        if len(both) > 1:
            raise TaskError(f"{path}: field {' and '.join(both)}: both present; keep one")
        spelled[LABEL_FIELD] = both[0] if both else prefix + LABEL_FIELD + "s"
    return spelled


def _npz_arrays(archive: Any, spelled: Mapping[str, str], fail: FileFail) -> dict[str, np.ndarray]:
    """The arrays `spelled` names that the archive holds, by field name."""
    import zipfile

    raw: dict[str, np.ndarray] = {}
    for name, stored in spelled.items():
        if stored not in archive.files:
            continue
        try:
            raw[name] = archive[stored]
        except ValueError:
            raise fail(
                name, "is an object array; save numbers or fixed-width strings (no pickle)"
            ) from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise fail(name, f"cannot be read ({_first_line(exc)})") from None
    return raw


def _npz_columns(raw: dict[str, np.ndarray], fail: FileFail) -> dict[str, Any]:
    """Checked columns from an NPZ's arrays: ragged fields as Sequences (via `lengths`)."""
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


def _join_splits(parts: dict[Split, tuple[dict[str, Any], FileFail]], path: Path) -> dict[str, Any]:
    """One table from a per-split NPZ's splits, with the `split` field they imply; each split
    holds the same fields, labels row for row and frames of one width."""
    fields = sorted({f for cols, _ in parts.values() for f in cols})
    for cols, fail in parts.values():
        for name in fields:
            if name not in cols:
                raise fail(name, "missing (the other splits have it)")
    seq_fields = [f for f in fields if f in (TOKENS_FIELD, FRAMES_FIELD)]
    if len(seq_fields) != 1:  # none, or both: read_table names the problem
        return {f: parts[Split.TRAIN][0][f] for f in fields}
    field = seq_fields[0]
    train_values = parts[Split.TRAIN][0][field].values
    for cols, fail in parts.values():
        n = len(cols[field])
        if LABEL_FIELD in cols and len(cols[LABEL_FIELD]) != n:
            raise fail(
                LABEL_FIELD, f"has {len(cols[LABEL_FIELD])} rows but {fail.names[field]} has {n}"
            )
        values = cols[field].values
        if values.shape[1:] != train_values.shape[1:]:
            raise fail(
                field,
                f"frames have width {values.shape[1]}, but {parts[Split.TRAIN][1].names[field]}"
                f" has {train_values.shape[1]}",
            )
    seqs = [cols[field] for cols, _ in parts.values()]
    out: dict[str, Any] = {
        field: Sequences(
            np.concatenate([q.values for q in seqs]),
            _offsets(np.concatenate([q.lengths for q in seqs])),
        ),
        SPLIT_FIELD: np.repeat([s.value for s in parts], [len(q) for q in seqs]),
    }
    if LABEL_FIELD in fields:
        out[LABEL_FIELD] = np.concatenate([cols[LABEL_FIELD] for cols, _ in parts.values()])
    return out


def _npz_sequences(
    arr: np.ndarray, lengths: np.ndarray | None, step_ndim: int, name: str, fail: FileFail
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
    fail = FileFail(path)
    if not path.exists():
        raise TaskError(f"{path}: no such file")
    if path.is_dir():
        raise TaskError(f"{path}: is a directory, not a data file")
    suffix = path.suffix.lower()
    wanted = [SPLIT_FIELD, *sequence_fields, *([LABEL_FIELD] if need_label else [])]
    npz = suffix in NPZ_SUFFIXES
    if suffix in PARQUET_SUFFIXES:
        cols, names = _read_parquet(path, wanted, fail)
    elif npz:
        cols, names = _read_npz(path, wanted, fail)
    else:
        raise TaskError(f"{path}: unknown format {suffix or '(no suffix)'}; use .parquet or .npz")

    # A file in some other layout: say what it holds and what is expected, so the fix is
    # a rename, not a guess.
    holds = f"the file holds {', '.join(names) or 'nothing'}"
    expected = expected_layout(sequence_fields, need_label, npz)
    present = [f for f in sequence_fields if f in cols]
    if not present:
        raise fail(" or ".join(sequence_fields), f"missing; {holds}; {expected}")
    if len(present) > 1:
        raise fail(" and ".join(present), "both present; keep one")
    field = present[0]
    seqs: Sequences = cols[field]
    n = len(seqs)
    for required in (SPLIT_FIELD, *([LABEL_FIELD] if need_label else [])):
        if required not in cols:
            raise fail(required, f"missing; {holds}; {expected}")
        if len(cols[required]) != n:
            raise fail(required, f"has {len(cols[required])} rows but {field} has {n}")
    split = cols[SPLIT_FIELD]
    split_names = sorted(s.value for s in Split)
    bad = np.flatnonzero(~np.isin(split, split_names))
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


def expected_layout(sequence_fields: tuple[str, ...], need_label: bool, npz: bool) -> str:
    """The layouts a task reads, in a few words (docs/tasks.md has them in full)."""
    seq = " or ".join(sequence_fields)
    label = ", label" if need_label else ""
    if not npz:
        return f"expected columns {seq}, split{label} (one row per sequence); see the README's Tasks section"
    each = (
        sequence_fields[0] if len(sequence_fields) == 1 else "{" + "|".join(sequence_fields) + "}"
    )
    per_split = ", ".join(f"{s.value}_{each}" for s in Split)
    labels = ", train_labels" if need_label else ""
    return (
        f"expected {seq}, lengths, split{label} (one row per sequence; lengths may be left out"
        f" when padded), or per-split arrays {per_split} with train_lengths{labels} and so"
        " on; see the README's Tasks section"
    )


def check_range(
    values: np.ndarray, offsets: np.ndarray | None, low: int, high: int, name: str, fail: FileFail
) -> None:
    """Values in [low, high); the first row outside named (rows via offsets when ragged)."""
    bad = np.flatnonzero((values < low) | (values >= high))
    if len(bad):
        i = int(bad[0])
        row = i if offsets is None else int(np.searchsorted(offsets, i, side="right") - 1)
        raise fail(name, f"row {row} has {int(values[i])}, outside [{low}, {high})")
