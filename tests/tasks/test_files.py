"""File tasks: Parquet and NPZ round trips with ragged sequences, and every kind of bad data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from taskdata import (
    FRAME_WIDTH,
    N_CLASSES,
    SPLITS,
    VOCAB,
    frame_rows,
    labels,
    token_rows,
    write_npz_flat,
    write_parquet,
)

from gatesearch.budget import parse_budget
from gatesearch.registry import InputKind
from gatesearch.tasks import (
    ClassifyTask,
    EpochSize,
    FramesTask,
    Split,
    TaskError,
    TokensTask,
    make_task,
)


def rows_of(split: Split, rows: list) -> list:
    return [r for r, s in zip(rows, SPLITS) if s == split.value]


def next_step_sequences(task, split: Split) -> list[np.ndarray]:
    """Rebuild each sequence from its batches: the inputs, then the last target."""
    out = []
    for b in task.batches(split, 3):
        for i in range(b.size):
            m = b.mask[i]
            out.append(torch.cat([b.inputs[i][m], b.targets[i][m][-1:]]).numpy())
    return out


def write_npz_padded(path: Path, columns: dict) -> Path:
    """Ragged fields as a zero-padded (rows, T, …) array plus `lengths`."""
    arrays = {}
    for name, value in columns.items():
        if name in ("tokens", "frames"):
            rows = list(value)
            T = max(len(r) for r in rows)
            padded = np.zeros(
                (len(rows), T, *np.shape(rows[0])[1:]), dtype=np.asarray(rows[0]).dtype
            )
            for i, r in enumerate(rows):
                padded[i, : len(r)] = r
            arrays[name] = padded
            arrays["lengths"] = np.array([len(r) for r in rows])
        else:
            arrays[name] = np.asarray(value)
    np.savez(path, **arrays)
    return path


def write_npz_per_split(path: Path, columns: dict) -> Path:
    """Each split's arrays under its own prefix, as many published data sets ship them:
    `train_frames` zero-padded (rows, T, D) or `train_tokens` flat, with `train_lengths`,
    and `train_labels`; no `split` array."""
    arrays = {}
    for split in Split:
        keep = [i for i, s in enumerate(columns["split"]) if s == split.value]
        for name, value in columns.items():
            prefix = f"{split.value}_"
            rows = [value[i] for i in keep]
            if name == "frames":
                T = max(len(r) for r in rows)
                padded = np.zeros((len(rows), T, np.shape(rows[0])[1]), dtype=np.float32)
                for i, r in enumerate(rows):
                    padded[i, : len(r)] = r
                arrays[prefix + name] = padded
                arrays[prefix + "lengths"] = np.array([len(r) for r in rows])
            elif name == "tokens":
                arrays[prefix + name] = np.concatenate(rows)
                arrays[prefix + "lengths"] = np.array([len(r) for r in rows])
            elif name == "label":
                arrays[prefix + "labels"] = np.array(rows)
    np.savez(path, **arrays)
    return path


def write_as(fmt: str, path: Path, columns: dict) -> Path:
    if fmt == "parquet":
        cols = {
            k: [np.asarray(r).tolist() for r in v] if k in ("tokens", "frames") else v
            for k, v in columns.items()
        }
        return write_parquet(path.with_suffix(".parquet"), cols)
    if fmt == "npz-flat":
        return write_npz_flat(path.with_suffix(".npz"), columns)
    if fmt == "npz-per-split":
        return write_npz_per_split(path.with_suffix(".npz"), columns)
    return write_npz_padded(path.with_suffix(".npz"), columns)


FORMATS = ["parquet", "npz-flat", "npz-padded", "npz-per-split"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_frames_round_trip(tmp_path: Path, fmt: str) -> None:
    rows = frame_rows()
    path = write_as(fmt, tmp_path / "frames", {"frames": rows, "split": SPLITS})
    task = FramesTask(path=str(path), width=FRAME_WIDTH)
    assert task.input_kind is InputKind.CONTINUOUS and task.n_in == task.n_out == FRAME_WIDTH
    assert task.seq_len == max(len(r) for r in rows) - 1
    for split in (Split.VALID, Split.TEST):  # TRAIN is endless
        got = next_step_sequences(task, split)
        want = rows_of(split, rows)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tokens_round_trip(tmp_path: Path, fmt: str) -> None:
    rows = token_rows()
    path = write_as(fmt, tmp_path / "tokens", {"tokens": rows, "split": SPLITS})
    task = TokensTask(path=str(path))
    assert task.n_in == task.n_out == max(int(r.max()) for r in rows) + 1
    for split in (Split.VALID, Split.TEST):  # TRAIN is endless
        got = next_step_sequences(task, split)
        for g, w in zip(got, rows_of(split, rows), strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("field", ["tokens", "frames"])
def test_classify_round_trip(tmp_path: Path, fmt: str, field: str) -> None:
    rows = token_rows() if field == "tokens" else frame_rows()
    path = write_as(fmt, tmp_path / "cls", {field: rows, "label": labels(), "split": SPLITS})
    task = ClassifyTask(
        path=str(path), n_classes=N_CLASSES, vocab=VOCAB if field == "tokens" else None
    )
    assert not task.causal and task.n_out == N_CLASSES
    kind = InputKind.TOKENS if field == "tokens" else InputKind.CONTINUOUS
    assert task.input_kind is kind
    want_rows, want_labels = rows_of(Split.VALID, rows), rows_of(Split.VALID, labels())
    got_rows, got_labels = [], []
    for b in task.batches(Split.VALID, 3):
        assert b.targets.shape == (b.size,) and b.targets.dtype == torch.int64
        got_rows += [b.inputs[i][b.mask[i]].numpy() for i in range(b.size)]
        got_labels += b.targets.tolist()
        # Padding comes after the sequence, so the last real position is mask.sum − 1.
        assert all(b.mask[i, : int(b.mask[i].sum())].all() for i in range(b.size))
    assert got_labels == want_labels
    for g, w in zip(got_rows, want_rows, strict=True):
        np.testing.assert_array_equal(g, w)


def test_split_may_be_a_categorical_column(tmp_path: Path) -> None:
    split = pa.array(SPLITS).dictionary_encode()
    tokens = pa.array([r.tolist() for r in token_rows()], type=pa.large_list(pa.int32()))
    pq.write_table(pa.table({"tokens": tokens, "split": split}), tmp_path / "cat.parquet")
    task = make_task("tokens", path=str(tmp_path / "cat.parquet"))
    assert len(next_step_sequences(task, Split.TEST)) == SPLITS.count("test")


def test_classify_reads_the_output_at_the_last_real_position(classify_parquet: Path) -> None:
    task = make_task("classify", path=str(classify_parquet))
    b = next(task.batches(Split.VALID, 4))
    outputs = torch.zeros(b.size, b.mask.shape[1], task.n_out)
    last = b.mask.sum(1) - 1
    outputs[torch.arange(b.size), last, b.targets] = 5.0  # right only where it is read
    assert task.metric(outputs, b) == (float(b.size), float(b.size))
    outputs[torch.arange(b.size), last] = 0.0
    outputs[:, 0, (b.targets[0] + 1) % task.n_out] = 5.0  # earlier positions do not count
    assert float(task.loss(outputs, b)) == pytest.approx(np.log(task.n_out))


def test_frames_nll_is_summed_over_dimensions_per_step(frames_parquet: Path) -> None:
    task = make_task("frames", path=str(frames_parquet))
    b = next(task.batches(Split.VALID, 4))
    outputs = torch.zeros(b.size, b.mask.shape[1], task.n_out)  # p = 1/2 everywhere
    total, count = task.metric(outputs, b)
    assert count == float(b.mask.sum())
    assert total / count == pytest.approx(task.n_out * np.log(2))


def test_max_len_windows_score_every_position_once(tokens_parquet: Path) -> None:
    whole = make_task("tokens", path=str(tokens_parquet))
    cut = make_task("tokens", path=str(tokens_parquet), max_len=3)
    assert cut.seq_len == 3
    for split in (Split.VALID, Split.TEST):
        n_whole = sum(int(b.mask.sum()) for b in whole.batches(split, 4))
        cut_batches = list(cut.batches(split, 4))
        assert all(b.mask.shape[1] <= 3 for b in cut_batches)
        assert sum(int(b.mask.sum()) for b in cut_batches) == n_whole
    train = next(cut.batches(Split.TRAIN, 16, seed=0))
    assert train.mask.shape == (16, 3)


# ------------------------------------------------------------------- what a budget counts


@pytest.mark.parametrize("name", ["frames", "tokens", "classify"])
def test_batches_count_their_real_positions_not_the_padding(
    name: str, frames_parquet: Path, tokens_parquet: Path, classify_parquet: Path
) -> None:
    """A token budget counts `Batch.tokens`: on ragged data the positions read, not B·T."""
    path = {"frames": frames_parquet, "tokens": tokens_parquet, "classify": classify_parquet}
    task = make_task(name, path=str(path[name]))
    train = task.batches(Split.TRAIN, 4, seed=0)
    batches = [next(train) for _ in range(5)] + list(task.batches(Split.VALID, 4))
    for b in batches:
        # Every position a file task reads is scored (next step, or the class at the end).
        assert b.tokens == int(b.mask.sum())
    assert sum(b.tokens for b in batches) < sum(
        b.inputs.shape[0] * b.inputs.shape[1] for b in batches
    )
    moved = batches[0].to("cpu")
    assert moved.tokens == batches[0].tokens


@pytest.mark.parametrize("max_len", [None, 3])
def test_an_epoch_is_each_training_sequence_once(frames_parquet: Path, max_len: int | None) -> None:
    task = make_task("frames", path=str(frames_parquet), max_len=max_len)
    epoch = task.train_epoch()
    train_rows = rows_of(Split.TRAIN, frame_rows())
    window = len(max(train_rows, key=len)) if max_len is None else max_len + 1
    assert epoch == EpochSize(len(train_rows), sum(min(len(r), window) - 1 for r in train_rows))
    # One batch of all training sequences is one sampler epoch.
    assert next(task.batches(Split.TRAIN, len(train_rows), seed=3)).tokens == epoch.positions


def test_epochs_a_budget_makes() -> None:
    epoch = EpochSize(sequences=10, positions=400)
    assert epoch.epochs(parse_budget("1000tokens"), 32) == 2.5
    assert epoch.epochs(parse_budget("5steps"), 4) == 2.0
    assert epoch.epochs(parse_budget("30s"), 4) is None
    assert make_task("mqar").train_epoch() is None  # generated afresh: no epochs


# ------------------------------------------------------------------------------ bad data


def parquet(columns: dict) -> Callable[[Path], Path]:
    return lambda d: write_parquet(d / "bad.parquet", columns)


def npz(arrays: dict) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        np.savez(d / "bad.npz", **arrays)
        return d / "bad.npz"

    return write


def raw(name: str, data: bytes) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return write


S3 = ["train", "valid", "test"]
TOK3 = [[1, 2, 3], [4, 5], [6, 7, 8]]
FR = [[[0, 1], [1, 0]], [[1, 1], [0, 0]], [[0, 0], [1, 1]]]

BAD = {
    # id: (task, extra params, file writer, field named in the error, what it says)
    "missing-file": ("tokens", {}, lambda d: d / "nope.parquet", "nope.parquet", "no such file"),
    "unknown-suffix": ("tokens", {}, raw("data.csv", b"a,b\n"), "data.csv", "unknown format"),
    "not-parquet": (
        "tokens",
        {},
        raw("junk.parquet", b"not parquet at all"),
        "junk.parquet",
        "not a readable Parquet file",
    ),
    "not-npz": ("tokens", {}, raw("junk.npz", b"not a zip"), "junk.npz", "not an NPZ file"),
    # Random bytes: np.load would call them a pickle it refuses; they are just not an NPZ.
    "not-npz-random": (
        "tokens",
        {},
        raw("rand.npz", bytes(range(256)) * 8),
        "rand.npz",
        "not an NPZ file",
    ),
    "not-npz-torn-zip": (
        "tokens",
        {},
        raw("torn.npz", b"PK\x03\x04" + b"\0" * 40),
        "torn.npz",
        "not a readable NPZ file",
    ),
    "no-split-column": ("tokens", {}, parquet({"tokens": TOK3}), "split", "missing"),
    "no-sequence-column": (
        "frames",
        {},
        parquet({"tokens": TOK3, "split": S3}),
        "frames",
        "missing",
    ),
    "no-label-column": ("classify", {}, parquet({"tokens": TOK3, "split": S3}), "label", "missing"),
    "both-tokens-and-frames": (
        "classify",
        {},
        parquet({"tokens": TOK3, "frames": FR, "split": S3, "label": [0, 1, 0]}),
        "tokens and frames",
        "both",
    ),
    "empty-split": (
        "tokens",
        {},
        parquet({"tokens": TOK3, "split": ["train", "train", "valid"]}),
        "split",
        "the test split is empty",
    ),
    "bad-split-name": (
        "tokens",
        {},
        parquet({"tokens": TOK3, "split": ["train", "validation", "test"]}),
        "split",
        "row 1 is 'validation'",
    ),
    "split-not-strings": (
        "tokens",
        {},
        parquet({"tokens": TOK3, "split": [0, 1, 2]}),
        "split",
        "must be strings",
    ),
    "null-row": (
        "tokens",
        {},
        parquet({"tokens": [[1, 2], None, [3, 4]], "split": S3}),
        "tokens",
        "row 1 is null",
    ),
    "float-tokens": (
        "tokens",
        {},
        parquet({"tokens": [[1.5, 2.0], [1.0, 2.0], [3.0, 4.0]], "split": S3}),
        "tokens",
        "lists of integers",
    ),
    "negative-token": (
        "tokens",
        {},
        parquet({"tokens": [[1, 2], [3, -1], [3, 4]], "split": S3}),
        "tokens",
        "row 1 has -1, outside",
    ),
    "token-over-vocab": (
        "tokens",
        {"vocab": 5},
        parquet({"tokens": [[1, 2], [3, 4], [3, 9]], "split": S3}),
        "tokens",
        "row 2 has 9, outside [0, 5)",
    ),
    "one-step-sequence": (
        "tokens",
        {},
        parquet({"tokens": [[1, 2], [3], [3, 4]], "split": S3}),
        "tokens",
        "row 1 has 1 steps",
    ),
    "ragged-frames": (
        "frames",
        {},
        parquet({"frames": [[[0, 1], [1, 0]], [[1, 1], [0, 0, 1]], [[0, 0], [1, 1]]], "split": S3}),
        "frames",
        "frames of different widths (2 and 3); first at row 1",
    ),
    "wrong-width-frames": (
        "frames",
        {"width": 88},
        parquet({"frames": FR, "split": S3}),
        "frames",
        "width 2, expected 88",
    ),
    "nan-frame": (
        "frames",
        {},
        parquet(
            {
                "frames": [[[0, 1], [1, 0]], [[1, 1], [0, 0]], [[0, float("nan")], [1, 1]]],
                "split": S3,
            }
        ),
        "frames",
        "row 2 has a NaN",
    ),
    "frames-not-multi-hot": (
        "frames",
        {},
        parquet({"frames": [[[0, 1], [1, 0]], [[1, 3], [0, 0]], [[0, 0], [1, 1]]], "split": S3}),
        "frames",
        "row 1 has values outside [0, 1]",
    ),
    "frames-not-nested": (
        "frames",
        {},
        parquet({"frames": TOK3, "split": S3}),
        "frames",
        "must be lists of frames",
    ),
    "label-out-of-range": (
        "classify",
        {"n_classes": 2},
        parquet({"tokens": TOK3, "label": [0, 2, 1], "split": S3}),
        "label",
        "row 1 has 2, outside [0, 2)",
    ),
    "negative-label": (
        "classify",
        {},
        parquet({"tokens": TOK3, "label": [0, -1, 1], "split": S3}),
        "label",
        "row 1 has -1",
    ),
    "float-labels": (
        "classify",
        {},
        parquet({"tokens": TOK3, "label": [0.0, 1.0, 1.0], "split": S3}),
        "label",
        "must be integers",
    ),
    "npz-no-lengths": (
        "tokens",
        {},
        npz({"tokens": np.arange(7), "split": np.array(S3)}),
        "lengths",
        "is needed",
    ),
    "npz-lengths-mismatch": (
        "tokens",
        {},
        npz({"tokens": np.arange(7), "lengths": np.array([2, 2, 2]), "split": np.array(S3)}),
        "lengths",
        "sum to 6 but tokens has 7 steps",
    ),
    "npz-lengths-too-long": (
        "tokens",
        {},
        npz(
            {
                "tokens": np.ones((3, 4), dtype=int),
                "lengths": np.array([2, 5, 2]),
                "split": np.array(S3),
            }
        ),
        "lengths",
        "row 1 is 5, longer than 4",
    ),
    "npz-object-array": (
        "tokens",
        {},
        npz({"tokens": np.array([[1, 2], [3]], dtype=object), "split": np.array(S3)}),
        "tokens",
        "object array",
    ),
    "npz-split-wrong-rows": (
        "tokens",
        {},
        npz({"tokens": np.ones((3, 4), dtype=int), "split": np.array(["train", "valid"])}),
        "split",
        "has 2 rows but tokens has 3",
    ),
    "npz-nan": (
        "frames",
        {},
        npz(
            {
                "frames": np.array([[[0, 1], [0, 1]], [[np.nan, 0], [1, 1]], [[0, 0], [1, 1]]]),
                "split": np.array(S3),
            }
        ),
        "frames",
        "row 1 has a NaN",
    ),
    "npz-frames-wrong-rank": (
        "frames",
        {},
        npz({"frames": np.zeros((3, 4, 2, 2)), "split": np.array(S3)}),
        "frames",
        "has shape (3, 4, 2, 2)",
    ),
    "npz-label-not-int": (
        "classify",
        {},
        npz(
            {
                "tokens": np.ones((3, 4), dtype=int),
                "label": np.array(["a", "b", "c"]),
                "split": np.array(S3),
            }
        ),
        "label",
        "1-D integer array",
    ),
    "npz-other-layout": (
        "classify",
        {},
        npz({"x_train": np.ones((3, 4)), "y_train": np.arange(3)}),
        "tokens or frames",
        "the file holds x_train, y_train; expected tokens or frames, lengths, split, label (one"
        " row per sequence; lengths may be left out when padded), or per-split arrays"
        " train_{tokens|frames}, valid_{tokens|frames}, test_{tokens|frames} with"
        " train_lengths, train_labels and so on",
    ),
    "npz-no-split": (
        "frames",
        {},
        npz({"frames": np.zeros((3, 2, 2))}),
        "split",
        "missing; the file holds frames; expected frames, lengths, split",
    ),
    "parquet-other-layout": (
        "tokens",
        {},
        parquet({"text": ["a", "b", "c"], "split": S3}),
        "tokens",
        "missing; the file holds text, split; expected columns tokens, split (one row",
    ),
    "npz-per-split-missing-split": (
        "tokens",
        {},
        npz(
            {"train_tokens": np.ones((2, 3), dtype=int), "test_tokens": np.ones((1, 3), dtype=int)}
        ),
        "valid_tokens",
        "missing (the other splits have it)",
    ),
    "npz-per-split-label-rows": (
        "classify",
        {},
        npz(
            {
                **{f"{s}_tokens": np.ones((2, 3), dtype=int) for s in S3},
                **{f"{s}_labels": np.zeros(2, dtype=int) for s in S3[:2]},
                "test_labels": np.zeros(3, dtype=int),
            }
        ),
        "test_labels",
        "has 3 rows but test_tokens has 2",
    ),
    "npz-per-split-frame-widths": (
        "frames",
        {},
        npz(
            {
                "train_frames": np.zeros((2, 3, 4)),
                **{f"{s}_frames": np.zeros((2, 3, 5)) for s in S3[1:]},
            }
        ),
        "valid_frames",
        "frames have width 5, but train_frames has 4",
    ),
    "npz-per-split-bad-lengths": (
        "frames",
        {},
        npz({**{f"{s}_frames": np.zeros((2, 3, 4)) for s in S3}, "test_lengths": np.array([2, 9])}),
        "test_lengths",
        "row 1 is 9, longer than 3",
    ),
    "npz-per-split-label-twice": (
        "classify",
        {},
        npz(
            {
                **{f"{s}_tokens": np.ones((2, 3), dtype=int) for s in S3},
                **{f"{s}_labels": np.zeros(2, dtype=int) for s in S3},
                "train_label": np.zeros(2, dtype=int),
            }
        ),
        "train_label and train_labels",
        "both present; keep one",
    ),
}


def test_a_file_in_both_npz_layouts_is_refused(tmp_path: Path) -> None:
    """Rows would belong to splits by whichever layout we believed: neither is guessed."""
    path = npz(
        {
            "tokens": np.ones((3, 2), dtype=int),
            "split": np.array(S3),
            **{f"{s}_tokens": np.ones((1, 2), dtype=int) for s in S3},
        }
    )(tmp_path)
    with pytest.raises(TaskError, match=r"holds both split and per-split arrays \(train_tokens\)"):
        make_task("tokens", path=str(path))


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_data_names_the_file_and_the_field(tmp_path: Path, case: str) -> None:
    name, params, write, field, says = BAD[case]
    path = write(tmp_path)
    with pytest.raises(TaskError) as info:
        make_task(name, path=str(path), **params)
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message, message
    assert field in message and says in message, message
    if not case.startswith(("missing", "unknown", "not-")):
        assert f"field {field}" in message


def test_fixed_size_list_columns_read_and_fail_like_lists(tmp_path: Path) -> None:
    kind = pa.list_(pa.list_(pa.float32(), 2))
    good = [[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]]
    pq.write_table(
        pa.table({"frames": pa.array(good, type=kind), "split": S3}), tmp_path / "ok.parquet"
    )
    assert make_task("frames", path=str(tmp_path / "ok.parquet")).n_in == 2
    bad = [*good[:2], [[2.0, 0.0], [0.0, 0.0]]]
    pq.write_table(
        pa.table({"frames": pa.array(bad, type=kind), "split": S3}), tmp_path / "fixed.parquet"
    )
    with pytest.raises(TaskError, match=r"fixed\.parquet: field frames: row 2 has values outside"):
        make_task("frames", path=str(tmp_path / "fixed.parquet"))


def test_bad_params_are_named(tokens_parquet: Path) -> None:
    with pytest.raises(TaskError, match="task tokens: param max_len"):
        make_task("tokens", path=str(tokens_parquet), max_len=0)
    with pytest.raises(TaskError, match="task tokens: missing param path"):
        make_task("tokens")
    with pytest.raises(TaskError, match="task frames: unknown param vocab"):
        make_task("frames", path=str(tokens_parquet), vocab=3)
