"""The text every CLI command prints on one small seeded campaign, with what may differ between
two runs of the same code masked (times, durations, rates, the temporary folder): run it before
and after a change that must not change the CLI's output, and diff the two files.

    python benchmarks/cli_transcript.py --out before.txt      # on the old commit
    python benchmarks/cli_transcript.py --out after.txt       # on the new one
    diff before.txt after.txt

One worker, so the trials finish in one order; seeded, so their scores repeat on one machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SPACE = """\
task causal
let width = choice(32)
model := embed stack rmsnorm head
stack := repeat(block, 1..2)
block := residual(rmsnorm mixer) residual(rmsnorm glu(expand=2, prune=trainable))
mixer := gru | mingru | gla(heads=2) | attention(heads=2)
"""
TASK = ["--task", "mqar"] + [
    a
    for kv in ("vocab=16", "length=16", "pairs=2", "n_valid=48", "n_test=48")
    for a in ("--task-param", kv)
]
# Masked: clock times and dates, durations and ETAs, rates, seconds and milliseconds figures.
MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:\d\d|Z)?"), "<time>"),
    (re.compile(r"\b\d+:\d\d(:\d\d)?\b"), "<dur>"),
    (re.compile(r"\b\d+(\.\d+)?(e[+-]?\d+)?\s?(s|ms|µs|us|min|h)\b"), "<secs>"),
    (re.compile(r"\b\d+(\.\d+)?\s?(steps|tok|tokens)/s\b"), "<rate>"),
    (re.compile(r"\b(latency|train_seconds|cpu_seconds): [0-9.e+-]+"), r"\1: <secs>"),
]


def mask(text: str, tmp: str) -> str:
    text = text.replace(tmp, "<tmp>")
    for pattern, token in MASKS:
        text = pattern.sub(token, text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="transcript") as tmp:
        root = Path(tmp)
        (root / "s.space").write_text(SPACE)
        runs = root / "runs"
        run = runs / "t"
        common = ["--runs-dir", str(runs)]
        steps = [
            ["run", *TASK, "--space", str(root / "s.space"), "--strategy", "random",
             "--budget", "6steps", "--trials", "4", "--workers", "1", "--seed", "3",
             "--max-params", "60000", "--name", "t", *common],
            ["status", str(run)],
            ["status", str(run), "--json"],
            ["ls", str(runs)],
            ["report", str(run)],
            ["retrain", str(run), "--top", "2", "--budget", "12steps", "--workers", "1"],
            ["report", str(run)],
            ["export", str(run), "--rank", "1", "--output", str(root / "best.py")],
            ["fidelity", *TASK, "--space", str(root / "s.space"), "--archs", "3",
             "--proxy-budget", "4steps", "--full-budget", "8steps", "--workers", "1",
             "--name", "f", *common],
            ["resume", str(run), "--trials", "5"],
            ["status", str(run)],
        ]  # fmt: skip
        parts = []
        for argv in steps:
            proc = subprocess.run(
                [str(Path(sys.executable).parent / "gatesearch"), *argv],
                capture_output=True,
                text=True,
                env={**os.environ, "COLUMNS": "120", "PYTHONHASHSEED": "0"},
            )
            parts.append(
                f"$ gatesearch {' '.join(argv)}\n[exit {proc.returncode}]\n"
                f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
            )
        for name in ("best.py",):
            path = root / name
            parts.append(f"=== {name}\n{path.read_text() if path.exists() else '(missing)'}")
        args.out.write_text(mask("\n".join(parts), tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
