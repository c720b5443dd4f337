"""Proxy fidelity on MQAR and tiny Shakespeare: does a short proxy rank architectures the way
a ten times longer training does?

    python benchmarks/fidelity.py                       # 20 archs per task, 4 s vs 40 s
    python benchmarks/fidelity.py --archs 40 --proxy-budget 10s --full-budget 100s
    python benchmarks/fidelity.py --repeat-full        # and (d): the full runs at a 2nd seed

For each task, N distinct architectures are sampled from the default space (spaces/gated_lm)
and trained (a) by the self-tuning proxy and (b) with fixed default hyperparameters at the
proxy budget, and by the self-tuning trainer at the full budget (learning rate decayed, as
retrain does; `--full-option lr_schedule=constant` for the old reference); (c) is the parameter
count.
Printed per task: Kendall τ and Spearman ρ of (a), (b), (c) against the full-budget scores
(on the task's metric and on the validation loss), and the CPU-seconds the proxy and full runs
took. Every number lands in <out>/fidelity-<task>/fidelity.json beside a scatter plot.

The tasks are sized for a 2-core CPU: MQAR as in the default campaign (vocabulary 64, length
32, 4 key-value pairs, 256 validation sequences), and character-level language modelling on
the first `--corpus-chars` characters of the packaged tiny Shakespeare (90/5/5 split, so the
default 200,000 give 10,000 validation characters), windows of 64: scoring the whole corpus's
55,000 validation characters costs more CPU than a 4 s proxy run trains.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ray
from rich.console import Console

from gatesearch.cli.fidelity import fidelity_lines, fidelity_table
from gatesearch.evaluate import parse_proxy_options, parse_task_params
from gatesearch.experiments.fidelity import REPEAT, FidelityError, FidelityRequest, run_fidelity
from gatesearch.runs.dispatch import ensure_ray

MQAR = {"vocab": 64, "length": 32, "pairs": 4, "n_valid": 256, "n_test": 256}


def corpus_prefix(chars: int, folder: Path) -> str | None:
    """A file holding the first `chars` characters of tiny Shakespeare; None: all of it."""
    if chars <= 0:
        return None
    from importlib import resources

    packaged = resources.files("gatesearch") / "data" / "tinyshakespeare.txt"
    text = packaged.read_text(encoding="utf-8")[:chars]
    path = folder / f"tinyshakespeare-{chars}.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def reference_corpus(reference: Path) -> str | None:
    """The text file an earlier charlm fidelity run (its folder or its fidelity.json) trained
    on; None when it used the packaged corpus."""
    folder = reference if reference.is_dir() else reference.parent
    try:
        config = json.loads((folder / "config.json").read_text())
        return config["task"]["params"].get("path")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise SystemExit(f"error: --reference {reference}: not a fidelity run folder") from None


def report(task: str, result: dict, wall: float) -> None:
    """The CLI's table (τ, ρ, top-k, pick, CPU-s), then CPU-seconds per run by kind."""
    config = result["config"]
    cpu = result["cpu_seconds"]
    print(
        f"\n{task}: proxy {config['proxy_budget']}, full {config['full_budget']} "
        f"({config['full_trainer']}), wall {wall / 60:.1f} min"
    )
    console = Console(width=100)
    console.print(fidelity_table(result))
    for line in fidelity_lines(result):
        console.print(line, markup=False)
    kinds = (("self_tuning", "(a) proxy"), ("fixed", "(b) proxy"), ("full", "full"))
    for kind, label in (*kinds, (REPEAT, "(d) full")):
        if kind not in cpu:
            continue
        c = cpu[kind]
        mean = "n/a" if c["mean"] is None else f"{c['mean']:.1f}"
        print(
            f"  CPU-seconds {label:10s} total {c['total']:8.0f}  per run {mean:>6s}  ({c['runs']} runs)"
        )
    failed = {k: v for k, v in result["failures"].items() if v}
    if failed:
        print(f"  failed runs: {failed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--proxy-budget", default="4s")
    ap.add_argument("--full-budget", default="40s")
    ap.add_argument("--tasks", default="mqar,charlm")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus-chars", type=int, default=200_000)
    ap.add_argument("--max-params", type=int, default=None)
    ap.add_argument(
        "--repeat-full", action="store_true", help="(d): the full runs again at another seed"
    )
    ap.add_argument("--proxy-option", action="append", default=[], help="key=value for (a) and (b)")
    ap.add_argument(
        "--full-option", action="append", default=[], help="key=value for the full runs"
    )
    ap.add_argument(
        "--reference", type=Path, default=None, help="reuse this run's full runs (one task)"
    )
    ap.add_argument("--out", type=Path, default=None, help="[default: a temporary folder]")
    args = ap.parse_args()
    if args.reference is not None and "," in args.tasks:
        ap.error("--reference needs a single task in --tasks")
    out = args.out or Path(tempfile.mkdtemp(prefix="gatesearch-fidelity-"))
    out.mkdir(parents=True, exist_ok=True)
    ensure_ray(None, args.workers)
    summary = {}
    try:
        for task in args.tasks.split(","):
            params = dict(MQAR) if task == "mqar" else {}
            if task == "charlm":
                # Against a reference, its own slice of the corpus (the task must match, path
                # included); otherwise a fresh slice in the output folder.
                path = (
                    reference_corpus(args.reference)
                    if args.reference is not None
                    else corpus_prefix(args.corpus_chars, out)
                )
                if path is not None:
                    params["path"] = path
            req = FidelityRequest(
                task=task,
                task_params=params,
                archs=args.archs,
                proxy_budget=args.proxy_budget,
                full_budget=args.full_budget,
                runs_dir=out,
                name=f"fidelity-{task}-{time.strftime('%Y%m%d-%H%M%S')}",
                workers=args.workers,
                seed=args.seed,
                max_params=args.max_params,
                repeat_full=args.repeat_full,
                proxy=parse_proxy_options(args.proxy_option),
                reference=args.reference,
                full=parse_task_params(args.full_option, "--full-option", "lr_schedule=cosine"),
            )
            t = time.perf_counter()
            try:
                root, result = run_fidelity(req)
            except FidelityError as exc:
                raise SystemExit(f"error: {exc}") from None
            wall = time.perf_counter() - t
            report(task, result, wall)
            summary[task] = {
                "dir": str(root),
                "wall_seconds": wall,
                "correlations": result["correlations"],
                "cpu_seconds": result["cpu_seconds"],
                "failures": result["failures"],
            }
    finally:
        ray.shutdown()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nresults in {out}")


if __name__ == "__main__":
    main()
