"""The hand-written baseline: a one-layer LSTM trained with early stopping on a gatesearch task.

    python benchmarks/baseline_lstm.py --task charlm
    python benchmarks/baseline_lstm.py --task classify --task-param path=data.parquet --params 50000
    python benchmarks/baseline_lstm.py --task frames --task-param path=music.npz --json lstm.json

Before trusting a searched architecture, compare it with what a careful practitioner writes
first by hand: embedding (token inputs) or a linear projection (feature inputs), dropout 0.25,
one nn.LSTM layer, dropout 0.25, a linear head; Adam with gradient clipping; validation every
epoch, the best validation weights kept, stopping after `--patience` evaluations without
improvement. The hidden size is chosen so the parameter count is as close as possible to
`--params`, to set the baseline beside a gatesearch model of the same size.

The task, its batches, its training loss and its scoring are gatesearch's own (`make_task`,
`task.batches`, `task.loss`, `split_scores` at the retrainer's evaluation batch size), so the
validation and test figures printed here are directly comparable with `gatesearch retrain`'s.
The best validation score picks the weights (the task's metric, ties broken by the loss);
the test split is scored once, at the end, with those weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from gatesearch.arch.build import count_params
from gatesearch.evaluate import parse_task_params
from gatesearch.proxy import ProxyConfig
from gatesearch.registry import InputKind
from gatesearch.tasks import (
    Batch,
    CharLM,
    Split,
    Task,
    TaskError,
    TaskSpec,
    make_task,
    model_inputs,
    split_scores,
)
from gatesearch.tasks.files import FileTask
from gatesearch.tasks.text import TRAIN_FRACTION

DROPOUT = 0.25
# Steps between evaluations when a task's training split has no finite size (synthetic
# streams, custom tasks): often enough to stop early, rarely enough not to be all scoring.
STREAM_EVAL_EVERY = 50


class UsageError(Exception):
    """Bad input the script itself detects: one line for the user, exit status 2."""


class NoResult(Exception):
    """Training ended before any finite validation score: there are no weights to report."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage dump), as gatesearch's CLI does."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ---------------------------------------------------------------------- the model


class LSTMBaseline(nn.Module):
    """encode (embedding or linear) → dropout → LSTM → dropout → linear head, at every position.

    The LSTM is causal, so padding after a sequence never reaches the positions a task reads
    (for `classify`, the last real one): no packing needed.
    """

    def __init__(self, n_in: int, n_out: int, hidden: int, tokens: bool) -> None:
        super().__init__()
        self.encode: nn.Module = nn.Embedding(n_in, hidden) if tokens else nn.Linear(n_in, hidden)
        self.drop_in = nn.Dropout(DROPOUT)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.drop_out = nn.Dropout(DROPOUT)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # `lengths` (what padded file tasks pass) is not needed: the LSTM is causal.
        h, _ = self.lstm(self.drop_in(self.encode(x)))
        return self.head(self.drop_out(h))  # (B, T, n_out)


def baseline_params(hidden: int, n_in: int, n_out: int, tokens: bool) -> int:
    """Parameters of `LSTMBaseline(n_in, n_out, hidden, tokens)`, without building it."""
    encode = n_in * hidden + (0 if tokens else hidden)  # a linear projection has a bias
    lstm = 4 * (2 * hidden * hidden + 2 * hidden)  # four gates; weight_ih, weight_hh, two biases
    head = hidden * n_out + n_out
    return encode + lstm + head


def hidden_for(target: int, n_in: int, n_out: int, tokens: bool) -> int:
    """The hidden size whose parameter count is closest to `target` (the smaller on a tie)."""
    # count(d) = 8d² + b·d + c is increasing in d: start at the quadratic's root, look around.
    b = 8 + n_in + n_out + (0 if tokens else 1)
    c = n_out
    root = (-b + math.sqrt(b * b + 32 * max(0, target - c))) / 16
    candidates = {max(1, int(root) + k) for k in (-1, 0, 1, 2)}
    return min(
        sorted(candidates), key=lambda d: abs(baseline_params(d, n_in, n_out, tokens) - target)
    )


# ---------------------------------------------------------------------- the task


def train_rows_in_file(path: str) -> int:
    """Training rows of a `frames` / `classify` / `tokens` data file (its `split` field)."""
    file = Path(path).expanduser()
    if file.suffix == ".npz":
        with np.load(file, allow_pickle=False) as data:
            return int((data["split"] == Split.TRAIN.value).sum())
    import pyarrow.parquet as pq

    split = pq.read_table(file, columns=["split"]).column("split").to_pylist()
    return split.count(Split.TRAIN.value)


def steps_per_epoch(task: Task, batch_size: int) -> int | None:
    """Weight steps that see the training split about once; None for endless streams.

    Tasks do not say how big their training split is, so this reads it from the data: the
    rows of a data file (its training batches are epochs of shuffled sequences), the
    characters of a charlm text (batches are windows at random offsets).
    """
    if isinstance(task, FileTask):
        return max(1, math.ceil(train_rows_in_file(task.path) / batch_size))
    if isinstance(task, CharLM):
        if task.path is None:  # the corpus shipped with gatesearch
            ref = resources.files("gatesearch") / "data" / "tinyshakespeare.txt"
            text = ref.read_text(encoding="utf-8")
        else:
            text = Path(task.path).expanduser().read_text(encoding="utf-8")
        train_chars = int(len(text) * TRAIN_FRACTION)
        return max(1, math.ceil(train_chars / (batch_size * task.seq_len)))
    return None


# ---------------------------------------------------------------------- training


def better(
    metric: float, loss: float, best: tuple[float, float] | None, higher_is_better: bool
) -> bool:
    """Whether (metric, loss) beats the best so far: the task's metric first, the loss on a
    tie (accuracy on a small validation set ties often; the loss still says which is surer)."""
    if best is None:
        return True
    best_metric, best_loss = best
    if metric != best_metric:
        return metric > best_metric if higher_is_better else metric < best_metric
    return loss < best_loss


def train(task: Task, args: argparse.Namespace, eval_every: int) -> dict[str, Any]:
    torch.manual_seed(args.seed)  # initial weights and dropout masks
    tokens = InputKind(task.input_kind) is InputKind.TOKENS
    hidden = hidden_for(args.params, task.n_in, task.n_out, tokens)
    model = LSTMBaseline(task.n_in, task.n_out, hidden, tokens)
    n_params = count_params(model)
    param = next(model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    higher = bool(task.higher_is_better)
    name = task.metric_name
    print(
        f"task {task.name}: n_in {task.n_in}, n_out {task.n_out}, "
        f"{'tokens' if tokens else 'features'}; metric {name} "
        f"({'higher' if higher else 'lower'} is better)"
    )
    print(
        f"model: LSTM hidden {hidden}, {n_params:,} parameters (asked for {args.params:,}); "
        f"batch {args.batch_size}, lr {args.lr:g}, evaluation every {eval_every} steps, "
        f"patience {args.patience}, max steps {args.max_steps or 'none'}",
        flush=True,
    )

    stream: Iterator[Batch] = task.batches(Split.TRAIN, args.batch_size, seed=args.seed)
    best: tuple[float, float] | None = None
    best_step = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = []
    since_best = 0
    step = 0
    stopped = "max_steps"
    cpu0, wall0 = time.process_time(), time.perf_counter()

    def scores(loss: float, metric: float) -> str:
        # charlm's metric is its loss: one figure, not the same one twice.
        extra = "" if name == "loss" else f"  {name} {metric:.4f}"
        return f"loss {loss:.4f}{extra}"

    def evaluate() -> bool:
        """Score the validation split; True when patience has run out."""
        nonlocal best, best_step, best_state, since_best
        loss, metric = split_scores(model, task, Split.VALID, args.eval_batch_size)
        improved = math.isfinite(loss) and better(metric, loss, best, higher)
        if improved:
            best, best_step, since_best = (metric, loss), step, 0
            # A copy, not a reference: the optimiser keeps changing the live tensors.
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        history.append({"step": step, "loss": loss, "metric": metric})
        best_text = "none" if best is None else f"{best[0]:.4f} @ {best_step}"
        print(
            f"step {step:>7}  valid {scores(loss, metric)}  best {best_text}"
            f"{'  *' if improved else ''}",
            flush=True,
        )
        return since_best >= args.patience

    model.train()
    try:
        while args.max_steps is None or step < args.max_steps:
            batch = next(stream)
            loss = task.loss(model(model_inputs(batch, param)), batch)
            if not torch.isfinite(loss):
                # Nothing after this can improve; report from the best weights so far.
                print(f"training loss is {float(loss)} at step {step}: stopping", flush=True)
                stopped = "diverged"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            step += 1
            if step % eval_every == 0 and evaluate():
                stopped = "patience"
                break
        else:
            if not history or history[-1]["step"] != step:
                evaluate()  # the steps since the last evaluation would otherwise be lost
    except KeyboardInterrupt:
        # Ctrl-C ends a long run early; the best weights so far are still worth reporting.
        print(f"interrupted at step {step}", flush=True)
        stopped = "interrupted"
    cpu_seconds = time.process_time() - cpu0
    wall_seconds = time.perf_counter() - wall0

    if best_state is None or best is None:
        raise NoResult(f"no finite validation score by step {step} ({stopped}): nothing to report")
    model.load_state_dict(best_state)
    valid_loss, valid_metric = split_scores(model, task, Split.VALID, args.eval_batch_size)
    if (valid_metric, valid_loss) != best:
        # Same weights and inputs should score the same; a difference means the scoring is
        # not deterministic here (threads, hardware), and the figures below deserve care.
        print(
            f"warning: the restored weights score {name} {valid_metric!r} / loss "
            f"{valid_loss!r}, the best evaluation had {best[0]!r} / {best[1]!r}",
            file=sys.stderr,
        )
    test_loss, test_metric = split_scores(model, task, Split.TEST, args.eval_batch_size)
    print(
        f"restored the best weights, from step {best_step} of {step} ({stopped}); "
        f"{cpu_seconds:.1f} CPU-seconds, {wall_seconds:.1f} s"
    )
    print(f"valid: {scores(valid_loss, valid_metric)}")
    print(f"test:  {scores(test_loss, test_metric)}")
    return {
        "task": task.spec.to_dict(),
        "model": "lstm",
        "hidden": hidden,
        "params": n_params,
        "dropout": DROPOUT,
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "lr": args.lr,
        "grad_clip": args.clip,
        "eval_every": eval_every,
        "patience": args.patience,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "threads": args.threads,
        "metric_name": name,
        "higher_is_better": higher,
        "valid": {"loss": valid_loss, "metric": valid_metric},
        "test": {"loss": test_loss, "metric": test_metric},
        "best_step": best_step,
        "steps": step,
        "stopped": stopped,
        "cpu_seconds": cpu_seconds,
        "wall_seconds": wall_seconds,
        "history": history,
    }


# ---------------------------------------------------------------------- command line


def positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, help="a gatesearch task name, e.g. charlm")
    ap.add_argument(
        "--task-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task parameter (e.g. path=data.parquet); repeatable",
    )
    ap.add_argument("--params", type=positive(int), default=100_000, help="parameter target")
    ap.add_argument("--lr", type=positive(float), default=3e-3)
    ap.add_argument("--clip", type=positive(float), default=1.0, help="gradient-norm clip")
    ap.add_argument("--batch-size", type=positive(int), default=32)
    # The retrainer's scoring batch: a task's loss is averaged per batch, so the same
    # batching keeps the validation and test losses comparable to gatesearch's own.
    ap.add_argument("--eval-batch-size", type=positive(int), default=ProxyConfig().eval_batch_size)
    ap.add_argument(
        "--eval-every",
        type=positive(int),
        default=None,
        help="steps between validations [default: one epoch of the training split, "
        f"or {STREAM_EVAL_EVERY} for endless streams]",
    )
    ap.add_argument("--patience", type=positive(int), default=10)
    ap.add_argument("--max-steps", type=positive(int), default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=positive(int), default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if args.json is not None and not args.json.expanduser().parent.is_dir():
        # Found out now, not after an hour of training.
        raise UsageError(f"--json {args.json}: no such folder {args.json.parent}")
    return args


def main(argv: list[str] | None = None) -> None:
    try:
        args = parse_args(argv)
        spec = TaskSpec(args.task, parse_task_params(args.task_param))
        task = make_task(spec)
        eval_every = args.eval_every or steps_per_epoch(task, args.batch_size) or STREAM_EVAL_EVERY
    except (UsageError, TaskError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    try:
        result = train(task, args, eval_every)
    except NoResult as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    if args.json is not None:
        args.json.expanduser().write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
