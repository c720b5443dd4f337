"""Small real sequence data sets, shipped inside PyPI wheels, as gatesearch data files.

    pip install -e '.[bench]'                                  # aeon and music21
    python benchmarks/small_data.py --out DIR                  # every data set below
    python benchmarks/small_data.py --out DIR --only basicmotions palestrina --seed 1
    python benchmarks/small_data.py --out DIR --only osuleaf --pool --downsample 4

Writes one file per data set into DIR and prints one line per file: its name, the task that
reads it, sequences per split, sequence lengths, frame width and classes. Every file is read
back through the task before its line is printed. Nothing is downloaded: the data come from
files inside the installed wheels, and the output is a function of those files and `--seed`
(default 0). The outputs are derived from licensed data (see each source below): keep them
out of version control and do not redistribute them.

Classification (`classify` task; `frames` + integer `label` + `split`, plus a `class_name`
column the task ignores), from the UCR/UEA time-series classification archive
(timeseriesclassification.com; cite Dau et al. 2019 for UCR, Bagnall et al. 2018 for UEA) as
redistributed in the `aeon` wheel (aeon is BSD-3-Clause; the archive's `.ts` files state no
licence of their own). The files are read with `aeon.datasets.load_from_ts_file` straight from
aeon's bundled `datasets/data` folder, never through `load_classification`, which downloads.
Of the UEA problems BasicMotions, NATOPS, Epilepsy and ArticularyWordRecognition only
BasicMotions ships inside the aeon (1.6) or sktime (1.2) wheels, so two bundled UCR problems
join it. JapaneseVowels, also bundled, is deliberately not offered: it is kept aside for an
independent check.

    name           archive problem         channels  length  classes  train/valid/test
    basicmotions   BasicMotions (UEA)      6         100     4        32 / 8 / 40
    gunpoint       GunPoint (UCR)          1         150     2        40 / 10 / 150
    pickupgesture  PickupGestureWiimoteZ   1         29-361  10       40 / 10 / 50

    arrowhead      ArrowHead (UCR)         1         251     3        36 / 0 / 175 (pooled:
                                                                  104 / 52 / 55)
    italypower     ItalyPowerDemand (UCR)  1         24      2        pooled: 547 / 274 / 275
    osuleaf        OSULeaf (UCR)           1         427     6        pooled: 221 / 110 / 111

With `--pool` (what benchmarks/self_tuning.py uses), the archive's TRAIN and TEST files are
pooled and split by class, half to train, a quarter each to valid and test, drawn with the
seed: the archive's training files hold 30-70 cases, and a validation split carved from them
has one or two per class, too few to select on. Otherwise the archive's TEST file is the test
split. The validation split is carved from the archive's
TRAIN file, stratified by class: round(`--valid-fraction` × n) of each class's n cases
(default 0.2, at least one per class), drawn with the seed. Each channel is standardised by
the mean and standard deviation of the carved training split alone (every time step of every
training sequence), and values are stored as float32. Labels number the classes in the order
the `.ts` header lists them (`class_name` holds the original names). Lengths vary only in
pickupgesture, whose sequences keep their own lengths (no padding). `--downsample K` replaces
every K steps by their mean (before standardising), for problems whose length makes a training
step slow: OSULeaf (6 classes, 442 cases pooled) at K = 4 has 107 steps.

Multi-hot frames (`frames` task; `frames`, `split`, plus `piece` and `mass` columns the task
ignores), from the Palestrina masses in music21's bundled corpus (music21 is BSD-3-Clause; the
corpus is distributed "with the permission of the encoders", per music21's corpus/license.txt).
The Humdrum encodings are by John Miller (each file: "Copyright 2000, John Miller ... Rights to
all derivative electronic formats reserved. Refer to licensing agreement"), from Le Opere
Complete. The Bach chorales, also bundled, are deliberately not used: they are kept aside.
`--pieces` (default 300) of the 1,318 movement/section files are drawn with the seed and
parsed (`--workers` processes, about a minute on two cores). Each becomes one sequence: time is
cut into steps of `--step` quarter notes (default 1.0, a quarter note; most notes in
these transcriptions are half notes, `--step 2`), and frame t has a 1 for every pitch
sounding at any moment of [t·step, (t+1)·step), so a tied note stays on and two short notes of
one voice inside a step are both on. Width 88: the piano keys, MIDI 21 (A0) to 108 (C8),
column = MIDI number − 21 (the default draw sounds MIDI 40-81). Splits go by mass (the `!!!OPR`
record of each file), not by file, because the movements of a mass share their material:
the masses of the chosen files are shuffled with the seed and laid end to end, and each goes
whole to train, valid or test by where its middle falls: about 70 / 15 / 15 % of the sequences.
The defaults give 300 sequences (209 / 47 / 44 at seed 0) of 36-1,224 steps (median 312);
`--task-param max_len=128` bounds what one batch spans.

Character LM (`charlm` task, param `path`): the built-in task reads any UTF-8 text file and
splits it by position itself (90 / 5 / 5 %), so this writes `shakespeare_small.txt`: the
first `--text-chars` characters (default 100,000) of the tiny Shakespeare corpus packaged with
gatesearch (Karpathy's char-rnn data), cut back to the end of the last full speech.

    gatesearch run --task classify --task-param path=DIR/basicmotions.parquet ...
    gatesearch run --task frames --task-param path=DIR/palestrina.parquet \
        --task-param max_len=128 ...
    gatesearch run --task charlm --task-param path=DIR/shakespeare_small.txt ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

SPLITS = ("train", "valid", "test")
PIANO_LOW, PIANO_KEYS = 21, 88  # MIDI A0 … C8
MUSIC_FRACTIONS = (0.70, 0.15)  # train, valid; test takes the rest
META_KEY = b"gatesearch.small_data"
BENCH_HINT = "install the bench extra: pip install -e '.[bench]'"


class DataError(Exception):
    """A problem this script reports as one line and a non-zero exit."""


@dataclass
class Written:
    """What one conversion wrote, for its summary line."""

    path: Path
    task: str
    source: str
    details: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ helpers


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator per data set, so `--only` does not change what a data set gets."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _frames_array(seqs: Sequence[np.ndarray], value_type: Any) -> Any:
    """A Parquet list<list<value>> column from (steps, width) arrays."""
    import pyarrow as pa

    width = seqs[0].shape[1]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    outer = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=outer[1:])
    inner = np.arange(outer[-1] + 1, dtype=np.int64) * width
    flat = np.concatenate([s.reshape(-1) for s in seqs])
    frames = pa.LargeListArray.from_arrays(inner, pa.array(flat, type=value_type))
    return pa.LargeListArray.from_arrays(outer, frames)


def _write_parquet(path: Path, columns: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a table through a temporary file, so a failed run leaves no half file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _stratified_valid(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the rows that move to validation: round(fraction × n) of each class."""
    valid = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        take = max(1, math.floor(fraction * len(rows) + 0.5)) if len(rows) >= 2 else 0
        valid[rng.permutation(rows)[:take]] = True
    return valid


# ------------------------------------------------------------------------------ UCR / UEA


@dataclass(frozen=True)
class Archive:
    """A problem of the UCR/UEA archive bundled with aeon."""

    problem: str
    note: str


ARCHIVES = {
    "basicmotions": Archive("BasicMotions", "UEA, smart-watch accelerometer + gyroscope"),
    "gunpoint": Archive("GunPoint", "UCR, hand centroid X position"),
    "pickupgesture": Archive("PickupGestureWiimoteZ", "UCR, Wiimote z acceleration"),
    "arrowhead": Archive("ArrowHead", "UCR, outlines of projectile points"),
    "italypower": Archive("ItalyPowerDemand", "UCR, daily electricity demand, 24 hours"),
    "osuleaf": Archive("OSULeaf", "UCR, leaf outlines"),
}
# Kept aside for independent checks; never converted here.
RESERVED = {"JapaneseVowels"}


def _load_ts(problem: str, part: str) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Sequences (channels, steps), labels as strings, and the header's class order."""
    try:
        import aeon.datasets
        from aeon.datasets import load_from_ts_file
    except ImportError:
        raise DataError(f"{problem} needs aeon; {BENCH_HINT}") from None
    if problem in RESERVED:
        raise DataError(f"{problem} is reserved for an independent check")
    path = Path(aeon.datasets.__file__).parent / "data" / problem / f"{problem}_{part}.ts"
    if not path.is_file():
        raise DataError(
            f"aeon {_version('aeon')} does not ship {problem}_{part}.ts in its data folder"
        )
    try:
        X, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"{problem}_{part}.ts (aeon {_version('aeon')}): {exc}") from None
    seqs = [np.asarray(x, dtype=np.float64) for x in X]  # a 3-D array or a list of 2-D ones
    classes = [str(c) for c in meta.get("class_values") or sorted(set(map(str, y)))]
    return seqs, np.asarray(y).astype(str), classes


def _downsample(seq: np.ndarray, k: int) -> np.ndarray:
    """Means over non-overlapping windows of k steps (a last, shorter window kept)."""
    if k == 1:
        return seq
    channels, steps = seq.shape
    full = steps // k * k
    # (channels, steps) -> (channels, steps // k, k) -> mean over the window
    head = seq[:, :full].reshape(channels, steps // k, k).mean(axis=2)
    if full == steps:
        return head
    return np.concatenate([head, seq[:, full:].mean(axis=1, keepdims=True)], axis=1)


def convert_archive(name: str, out: Path, args: argparse.Namespace) -> Written:
    import pyarrow as pa

    problem = ARCHIVES[name].problem
    train_x, train_y, classes = _load_ts(problem, "TRAIN")
    test_x, test_y, _ = _load_ts(problem, "TEST")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted((set(train_y) | set(test_y)) - set(index))
    if unknown:
        raise DataError(f"{problem}: labels {unknown} are not in the header's class list")
    to_label = np.vectorize(index.__getitem__, otypes=[np.int64])
    train_label, test_label = to_label(train_y), to_label(test_y)

    seqs = [_downsample(s, args.downsample) for s in (*train_x, *test_x)]
    labels = np.concatenate([train_label, test_label])
    rng = _rng(args.seed, name)
    if args.pool:
        # The archive's own TRAIN files hold 30-70 cases: a validation split carved from them
        # has 1-2 per class, too few to select on. Pooled, a few hundred cases give each
        # split dozens: half train, a quarter valid, a quarter test, stratified by class.
        held = _stratified_valid(labels, 0.5, rng)
        test = np.zeros(len(labels), dtype=bool)
        test[np.flatnonzero(held)[_stratified_valid(labels[held], 0.5, rng)]] = True
        split = np.where(test, "test", np.where(held, "valid", "train"))
    else:
        valid = _stratified_valid(train_label, args.valid_fraction, rng)
        split = np.array(["valid" if v else "train" for v in valid] + ["test"] * len(test_x))
    if any(not np.isfinite(s).all() for s in seqs):
        raise DataError(f"{problem}: missing or infinite values")

    train_steps = np.concatenate([s for s, sp in zip(seqs, split) if sp == "train"], axis=1)
    mean = train_steps.mean(axis=1)
    std = train_steps.std(axis=1)
    std = np.where(std > 1e-8, std, 1.0)
    frames = [((s - mean[:, None]) / std[:, None]).T.astype(np.float32) for s in seqs]

    order = np.concatenate([np.flatnonzero(split == s) for s in SPLITS])  # train, valid, test
    path = out / f"{name}.parquet"
    _write_parquet(
        path,
        {
            "split": pa.array(split[order]),
            "label": pa.array(labels[order], type=pa.int64()),
            "class_name": pa.array([classes[i] for i in labels[order]]),
            "frames": _frames_array([frames[i] for i in order], pa.float32()),
        },
        {
            "source": f"UCR/UEA archive {problem}, bundled with aeon {_version('aeon')}",
            "seed": args.seed,
            "valid_fraction": None if args.pool else args.valid_fraction,
            "pooled": bool(args.pool),
            "downsample": args.downsample,
            "classes": classes,
            "channel_mean": mean.tolist(),
            "channel_std": std.tolist(),
        },
    )
    return Written(path, "classify", f"aeon {_version('aeon')} {problem}")


# ------------------------------------------------------------------------------ Palestrina


def _mass_title(path: Path) -> str:
    """The `!!!OPR` (parent work: the mass) record of a Humdrum file; the file's stem when
    there is none."""
    with path.open("rb") as f:
        for raw in f:
            line = raw.decode("latin-1").strip()
            if line.startswith("!!!OPR:"):
                return line.partition(":")[2].strip()
    return path.stem


def _piece_frames(path: str, step: float) -> np.ndarray | str:
    """Multi-hot frames (steps, 88) of one score, or a message saying why it failed."""
    from music21 import converter

    try:
        score = converter.parseFile(path, forceSource=True, storePickle=False)
        notes = [
            (float(n.offset), float(n.offset) + float(n.quarterLength), p.midi)
            for n in score.flatten().notes
            if float(n.quarterLength) > 0  # grace notes take no time
            for p in n.pitches
        ]
        end = float(score.highestTime)
    except Exception as exc:  # music21 raises many kinds; the file is skipped and counted
        return f"{type(exc).__name__}: {exc}"
    if not notes:
        return "no notes"
    n_steps = max(1, math.ceil(end / step - 1e-9))
    frames = np.zeros((n_steps, PIANO_KEYS), dtype=np.uint8)
    for start, stop, midi in notes:
        key = midi - PIANO_LOW
        if not 0 <= key < PIANO_KEYS:
            return f"pitch {midi} outside the piano range"
        first = math.floor(start / step + 1e-9)
        last = max(first + 1, math.ceil(stop / step - 1e-9))
        frames[first:last, key] = 1
    return frames


def _split_by_group(groups: list[str], rng: np.random.Generator) -> list[str]:
    """train / valid / test per row, whole groups at a time, about 70 / 15 / 15 % of rows.

    The groups, shuffled, are laid end to end; each goes to the split its midpoint falls in.
    """
    names = sorted(set(groups))
    sizes = {g: groups.count(g) for g in names}
    cut_train = MUSIC_FRACTIONS[0] * len(groups)
    cut_valid = cut_train + MUSIC_FRACTIONS[1] * len(groups)
    assigned: dict[str, str] = {}
    filled = 0
    for i in rng.permutation(len(names)):
        g = names[i]
        mid = filled + sizes[g] / 2
        assigned[g] = "train" if mid < cut_train else "valid" if mid < cut_valid else "test"
        filled += sizes[g]
    return [assigned[g] for g in groups]


def convert_palestrina(name: str, out: Path, args: argparse.Namespace) -> Written:
    import pyarrow as pa

    try:
        from music21 import corpus
    except ImportError:
        raise DataError(f"{name} needs music21; {BENCH_HINT}") from None
    files = sorted(
        (Path(p) for p in corpus.getComposer("palestrina") if Path(p).suffix == ".krn"),
        key=lambda p: p.name,
    )
    if not files:
        raise DataError(f"music21 {_version('music21')} ships no Palestrina corpus")
    rng = _rng(args.seed, name)
    chosen = sorted((files[i] for i in rng.permutation(len(files))[: args.pieces]), key=str)

    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(_piece_frames, [str(p) for p in chosen], [args.step] * len(chosen)))
    kept = [(p, r) for p, r in zip(chosen, results) if isinstance(r, np.ndarray) and len(r) >= 2]
    skipped = len(chosen) - len(kept)
    if len(kept) < 3:
        raise DataError(f"{name}: only {len(kept)} of {len(chosen)} pieces parsed; raise --pieces")
    masses = [_mass_title(p) for p, _ in kept]
    split = np.array(_split_by_group(masses, rng))
    for s in SPLITS:
        if not (split == s).any():
            raise DataError(
                f"{name}: the {s} split is empty ({len(set(masses))} masses); raise --pieces"
            )

    order = np.concatenate([np.flatnonzero(split == s) for s in SPLITS])
    path = out / f"{name}.parquet"
    _write_parquet(
        path,
        {
            "split": pa.array(split[order]),
            "piece": pa.array([kept[i][0].stem for i in order]),
            "mass": pa.array([masses[i] for i in order]),
            "frames": _frames_array([kept[i][1] for i in order], pa.uint8()),
        },
        {
            "source": f"music21 {_version('music21')} corpus, palestrina/*.krn (John Miller)",
            "seed": args.seed,
            "step_quarter_notes": args.step,
            "columns": f"MIDI {PIANO_LOW}..{PIANO_LOW + PIANO_KEYS - 1}",
            "pieces_drawn": len(chosen),
            "pieces_skipped": skipped,
        },
    )
    details = {"skipped": skipped} if skipped else {}
    return Written(path, "frames", f"music21 {_version('music21')} palestrina", details)


# ------------------------------------------------------------------------------ text


def convert_shakespeare(name: str, out: Path, args: argparse.Namespace) -> Written:
    packaged = resources.files("gatesearch") / "data" / "tinyshakespeare.txt"
    try:
        text = packaged.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"the packaged tiny Shakespeare cannot be read: {exc}") from None
    head = text[: args.text_chars]
    end = head.rfind("\n\n")  # speeches are separated by a blank line
    sliced = head[: end + 1] if end > 0 and len(text) > args.text_chars else head
    path = out / f"{name}.txt"
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            f.write(sliced)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Written(path, "charlm", f"gatesearch {_version('gatesearch')} tinyshakespeare.txt")


# ------------------------------------------------------------------------------ checking


def _range(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def summarise(written: Written) -> str:
    """One line on a written file, after building its task from it (which checks it)."""
    from gatesearch.tasks import make_task

    task = make_task(written.task, path=str(written.path))
    name = written.path.name
    if written.task == "charlm":
        n_chars = len(written.path.read_text(encoding="utf-8"))
        return (
            f"{name}  charlm  {n_chars} chars (the task splits 90/5/5)  vocab {task.n_in}"
            f"  [{written.source}]"
        )
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(written.path, columns=["split", "frames"])
    split = np.asarray(table.column("split").to_pylist())
    lengths = pc.list_value_length(table.column("frames")).to_numpy()
    counts = "/".join(str(int((split == s).sum())) for s in SPLITS)
    line = (
        f"{name}  {written.task}  train/valid/test {counts}"
        f"  length {_range([int(n) for n in lengths])}  width {task.n_in}"
    )
    if written.task == "classify":
        line += f"  classes {task.n_out}"
    else:
        line += f" (MIDI {PIANO_LOW}-{PIANO_LOW + PIANO_KEYS - 1})"
    extra = "".join(f"  {k} {v}" for k, v in written.details.items())
    return f"{line}{extra}  [{written.source}]"


# ------------------------------------------------------------------------------ main

Converter = Callable[[str, Path, argparse.Namespace], Written]
DATASETS: dict[str, Converter] = {
    **dict.fromkeys(ARCHIVES, convert_archive),
    "palestrina": convert_palestrina,
    "shakespeare_small": convert_shakespeare,
}


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(text)
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError(text)
    return value


_positive_float.__name__ = "positive number"  # argparse names the type in its error
_fraction.__name__ = "number in (0, 1)"


def _count(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise ValueError(text)
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog="small_data.py",
        description="Convert small public sequence data sets shipped in PyPI wheels into "
        "gatesearch data files.",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the files")
    p.add_argument(
        "--only", nargs="+", choices=list(DATASETS), metavar="NAME", help=", ".join(DATASETS)
    )
    p.add_argument("--seed", type=_count(0), default=0, help="seed of every draw (default 0)")
    p.add_argument(
        "--valid-fraction",
        type=_fraction,
        default=0.2,
        help="share of each class of the archive's train split that validates (default 0.2)",
    )
    p.add_argument(
        "--pool",
        action="store_true",
        help="classification: pool the archive's train and test files and split them "
        "50/25/25 by class (the archive's train files are too small to validate on)",
    )
    p.add_argument(
        "--downsample",
        type=_count(1),
        default=1,
        metavar="K",
        help="classification: average each K steps into one (default 1: keep every step); "
        "OSULeaf's 427 steps cost about 20x ItalyPowerDemand's per training step",
    )
    p.add_argument(
        "--pieces", type=_count(3), default=300, help="Palestrina files drawn (default 300)"
    )
    p.add_argument(
        "--step",
        type=_positive_float,
        default=1.0,
        help="Palestrina time step in quarter notes (default 1.0)",
    )
    p.add_argument(
        "--workers",
        type=_count(1),
        default=min(2, os.cpu_count() or 1),
        help="processes parsing music (default: up to 2)",
    )
    p.add_argument(
        "--text-chars",
        type=_count(10_000),
        default=100_000,
        help="characters of tiny Shakespeare kept (default 100000)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.expanduser()
    names = list(dict.fromkeys(args.only)) if args.only else list(DATASETS)
    try:
        from gatesearch.tasks.base import TaskError

        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            started = time.perf_counter()
            written = DATASETS[name](name, out, args)
            line = summarise(written)
            print(f"{line}  {time.perf_counter() - started:.1f}s", flush=True)
    except (DataError, TaskError, OSError) as exc:
        print(f"small_data.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("small_data.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
