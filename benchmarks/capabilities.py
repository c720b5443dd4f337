"""Do the known architectures rank on MAD's tasks as their papers say, at a CPU's scale?

    python benchmarks/capabilities.py --out capabilities.json     # 11 designs, seeds 0 and 1
    python benchmarks/capabilities.py --archs llama,hawk,gated_deltanet_lm --seeds 0 \\
        --budget 2e4tokens
    python benchmarks/capabilities.py --width 128 --limit-params 2e6 --workers 2
    python benchmarks/capabilities.py --run runs/mad-search --top 2 --archs none

Issue 16: every known architecture of `spaces/known/` (switch_transformer only when named
in `--archs`) at one width and one depth, scored on a suite (MAD's six tasks by default,
`suites/mad.toml`) by the campaign's suite evaluator: one model per member task, each
member's score on [0, 1], their weighted mean the aggregate. Each (architecture, seed) is
one suite trial in a worker process with one torch thread, trained by the campaign's proxy
trainer at fixed hyperparameters for a token budget per member (so the figures do not
depend on the machine's speed). The default, 6e5 tokens a member, is where LLaMA (width 64,
4 blocks, seed 0) has learned both exact recall members (1.000) and fuzzy recall is at 0.78;
at 2e5 its noisy recall was still at 0.35 while Gated DeltaNet's was at 1.00, which would
rank how fast a design learns rather than what it can recall.

Depth: 4 blocks, each as its file writes a block (Mamba-2's, GCNN's and xLSTM's mLSTM
blocks hold no channel mixer; the params column shows what that costs them). Four is the
smallest depth at which every design keeps every kind of block it has: Qwen3-Next's 3 : 1
period (Gated DeltaNet ×3, attention), Griffin's (R, R, A) and one more R, xLSTM's sLSTM
second among mLSTMs ([3:1]). Block i of a design at N blocks is block i mod C of its file's
C; a depth that drops a kind of block (`--blocks 2` drops both hybrids' attention) is
reported as skipped, with the choices it leaves unused.

Output: one line per finished trial, then a markdown table (rows: designs sorted by the
aggregate; columns: each member's mean score over seeds, the aggregate as mean ± half its
range over seeds, parameters and decode state of the largest member model, CPU-seconds
per trial), then the orderings the papers report, as data: each design's rank on the recall
members, attention against gated-convolution and recurrent designs, and the striped
hybrids' ranks beside their parts'. `--out` writes all of it, each trial's member figures
included, as JSON.

`--run DIR` adds the top `--top` architectures of a campaign on the same suite, as found
(their own width and depth), scored the same way at the same seeds: a campaign's best was
chosen on one seed's score out of many, so its campaign score flatters it; these figures are
the ones to set beside the known designs'.

`--recipe retrain` trains each member as `gatesearch retrain` trains a suite's finalists by
default (learning rate decayed by a cosine, the best of 20 validation points kept, no early
stop) instead of as a campaign's trial (constant rate, last point), at the proxy's default
hyperparameters (what a campaign at fixed hyperparameters stores, and the dropout retrain
keeps for a suite); the aggregate is `retrain`'s suite score, computed by the same function.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor, as_completed
from enum import StrEnum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KNOWN = ROOT / "spaces" / "known"
SUITE = ROOT / "suites" / "mad.toml"


class Family(StrEnum):
    ATTENTION = "attention"
    CONVOLUTION = "gated conv"
    RECURRENT = "recurrent"
    HYBRID = "hybrid"
    SEARCHED = "searched"  # a campaign's pick (--run)


# Each known file (by stem) and its family; the default set is every one but the last.
ARCHS: dict[str, Family] = {
    "llama": Family.ATTENTION,
    "qwen3_gated_attention": Family.ATTENTION,
    "hawk": Family.RECURRENT,
    "griffin": Family.HYBRID,
    "gla_transformer": Family.RECURRENT,
    "gcnn_lm": Family.CONVOLUTION,
    "deltanet_lm": Family.RECURRENT,
    "gated_deltanet_lm": Family.RECURRENT,
    "mamba2_lm": Family.RECURRENT,
    "qwen3_next": Family.HYBRID,
    "xlstm_lm": Family.RECURRENT,
    # LLaMA with a routed channel mixer: MAD's recall tasks probe the sequence mixer, and
    # its eight experts cost several LLaMAs' parameters; run it by naming it.
    "switch_transformer": Family.ATTENTION,
}
DEFAULT_ARCHS = [a for a in ARCHS if a != "switch_transformer"]
# A striped hybrid's parts among the designs: its recurrent mixer's and its attention's.
# Griffin's local attention (window 32) sees whole sequences of MAD's CPU sizes (length 32).
HYBRID_PARTS: dict[str, tuple[str, str]] = {
    "griffin": ("hawk", "llama"),
    "qwen3_next": ("gated_deltanet_lm", "qwen3_gated_attention"),
}
RECALL = ("in_context_recall", "fuzzy_recall", "noisy_recall")
PUBLISHED = {
    "recall": (
        "Zoology (Arora et al. 2023), MAD (Poli et al. 2024): attention recalls in context "
        "better than gated convolutions and fixed-state recurrences of the same width; the "
        "delta rules (Yang et al. 2024, 2025) close much of the gap"
    ),
    "hybrids": "MAD: striped hybrids score at or above their parts on the suite",
}
_BLOCK = re.compile(r"^model\.stack\.block\[(\d+)\]")


def design_file(arch: str, width: int, blocks: int, folder: Path) -> Path:
    """`arch`'s known file at `width` and `blocks` blocks, in `folder`: block i takes the
    choices of the file's block i mod C (C: the file's block count); `[*]` choices stay."""
    source = KNOWN / f"{arch}.toml"
    doc = tomllib.loads(source.read_text(encoding="utf-8"))
    period = int(doc["choices"]["model.stack.block#count"])
    choices: dict[str, Any] = {}
    for key, value in doc["choices"].items():
        found = _BLOCK.match(key)
        if found is None:
            choices[key] = value
            continue
        rest = key[found.end() :]
        for i in range(int(found.group(1)), blocks, period):
            choices[f"model.stack.block[{i}]{rest}"] = value
    choices |= {"$width": width, "model.stack.block#count": blocks}
    lines = [
        f"description = {json.dumps(f'{arch} at width {width}, {blocks} blocks')}",
        f"space = {json.dumps(str((source.parent / doc['space']).resolve()))}",
        f"causal = {json.dumps(bool(doc.get('causal', True)))}",
        "",
        "[choices]",
        *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in choices.items()),
    ]
    path = folder / f"{arch}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def evaluate_one(design: Path, suite: Path, budget: str, seed: int) -> dict[str, Any]:
    """One suite trial in a worker process (one thread): scores, sizes, decode state, CPU.
    `design`: a known-architecture file, or a campaign's stored graph (.parquet)."""
    import torch

    from gatesearch.arch.graph import read_graph
    from gatesearch.arch.space import load_known
    from gatesearch.budget import parse_budget
    from gatesearch.evaluate import SuiteEvaluator
    from gatesearch.tasks.suite import load_suite

    torch.set_num_threads(1)
    cpu = time.process_time()
    graph = read_graph(design) if design.suffix == ".parquet" else load_known(design).graph
    evaluator = SuiteEvaluator(load_suite(suite), {"self_tuning": False})
    m = evaluator.evaluate(graph, parse_budget(budget), seed)
    return {
        "score": m["metric"],
        "members": {name: r["score"] for name, r in m["members"].items()},
        "params": m["params"],
        "state": m.get("state"),
        "steps": m["steps"],
        "tokens": m.get("tokens"),
        "cpu_seconds": time.process_time() - cpu,
        "member_metrics": m["members"],
    }


def retrain_one(design: Path, suite: Path, budget: str, seed: int) -> dict[str, Any]:
    """`evaluate_one` with `gatesearch retrain`'s recipe: each member trained by
    `retrain_body` on its share of `budget`, combined by `retrain`'s `suite_metrics`."""
    import torch

    from gatesearch.arch.graph import read_graph
    from gatesearch.arch.space import load_known
    from gatesearch.budget import parse_budget
    from gatesearch.experiments.retrain import (
        SUITE_PATIENCE,
        MemberResult,
        retrain_body,
        suite_metrics,
    )
    from gatesearch.tasks.suite import load_suite, member_budget

    torch.set_num_threads(1)
    cpu = time.process_time()
    graph = read_graph(design) if design.suffix == ".parquet" else load_known(design).graph
    loaded = load_suite(suite)
    share = str(member_budget(parse_budget(budget), len(loaded.members)))
    kept = {
        (0, m.name): MemberResult(
            seed,
            "tuned",
            retrain_body(graph, m.spec.to_dict(), share, seed, {}, 1, patience=SUITE_PATIENCE)[
                "metrics"
            ],
        )
        for m in loaded.members
    }
    cpu = time.process_time() - cpu
    m = suite_metrics(loaded, kept, cpu)
    return {
        "score": m["valid"]["metric"],
        "test": m["test"]["metric"],
        "members": {name: r["valid"] for name, r in m["members"].items()},
        "params": m["params"],
        "state": m.get("state"),
        "steps": m["steps"],
        "tokens": m.get("tokens"),
        "cpu_seconds": cpu,
        "member_metrics": m["per_seed"][0]["members"],
    }


RECIPES = {"trial": evaluate_one, "retrain": retrain_one}


def trial_budget(per_member: str, members: int) -> str:
    """The suite trial's budget that gives each of `members` members `per_member`: the suite
    evaluator splits a trial's budget equally (tasks/suite.py, `member_budget`)."""
    from gatesearch.budget import Budget, parse_budget

    share = parse_budget(per_member)
    return str(Budget(share.amount * members, share.unit))


def rank(values: dict[str, float]) -> dict[str, int]:
    """1 for the highest; ties share the better rank (1 + how many are strictly higher)."""
    return {k: 1 + sum(other > v for other in values.values()) for k, v in values.items()}


def family(design: str) -> Family:
    return ARCHS.get(design, Family.SEARCHED)


def summarise(results: dict[str, dict[int, Any]], names: list[str]) -> dict[str, Any]:
    """Per design with at least one finished trial: each member's mean score over seeds, the
    aggregate's mean and half range, the sizes and mean CPU-seconds."""
    rows: dict[str, Any] = {}
    for arch, runs in results.items():
        ok = [r for r in runs.values() if "error" not in r]
        if not ok:
            continue
        scores = [r["score"] for r in ok]
        rows[arch] = {
            "family": str(family(arch)),
            "members": {n: statistics.mean(r["members"][n] for r in ok) for n in names},
            "score": statistics.mean(scores),
            "half_range": (max(scores) - min(scores)) / 2,
            "seeds": len(ok),
            "params": ok[0]["params"],
            "state": ok[0]["state"],
            "cpu_seconds": statistics.mean(r["cpu_seconds"] for r in ok),
        }
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["score"]))


def comparisons(rows: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The orderings the papers report, computed: ranks on the recall members and on their
    mean, attention against the others on that mean, and each hybrid beside its parts."""
    recall = [n for n in RECALL if n in names]
    out: dict[str, Any] = {"recall_members": recall, "recall_ranks": {}, "hybrids": {}}
    if recall:
        means = {a: statistics.mean(r["members"][n] for n in recall) for a, r in rows.items()}
        ranks = {n: rank({a: r["members"][n] for a, r in rows.items()}) for n in recall}
        mean_rank = rank(means)
        out["recall_ranks"] = {
            a: {**{n: ranks[n][a] for n in recall}, "mean": mean_rank[a], "mean_score": means[a]}
            for a in sorted(rows, key=lambda a: mean_rank[a])
        }
        attention = [a for a in rows if family(a) is Family.ATTENTION]
        others = [a for a in rows if family(a) in (Family.CONVOLUTION, Family.RECURRENT)]
        out["attention_ahead"] = {
            "pairs": len(attention) * len(others),
            "attention_higher": sum(means[a] > means[o] for a in attention for o in others),
            "ties": sum(means[a] == means[o] for a in attention for o in others),
        }
    aggregate = rank({a: r["score"] for a, r in rows.items()})
    for hybrid, parts in HYBRID_PARTS.items():
        if hybrid not in rows:
            continue
        present = [p for p in parts if p in rows]
        above = sum(rows[hybrid]["score"] > rows[p]["score"] for p in present)
        out["hybrids"][hybrid] = {
            "rank": aggregate[hybrid],
            "score": rows[hybrid]["score"],
            "parts": {p: {"rank": aggregate[p], "score": rows[p]["score"]} for p in present},
            "above_parts": above,
        }
    out["aggregate_ranks"] = aggregate
    return out


def campaign_designs(run: Path, top: int, suite: Any) -> dict[str, Path]:
    """The stored graphs of `run`'s `top` best distinct architectures, named `searched#K`
    (K: the architecture's place in the campaign); GatesearchError for a run on another
    task or suite."""
    from gatesearch.errors import GatesearchError
    from gatesearch.runs.ranking import ranked
    from gatesearch.runs.store import RunStore

    with RunStore.open(run, writer=False) as store:
        # The members, not the file's path, which is as the campaign's command gave it.
        stored = store.config.task.params.get("members")
        if stored != [m.to_dict() for m in suite.members]:
            raise GatesearchError(
                f"{run}: the campaign did not run on the members of {suite.name} "
                "(--suite): its scores would not compare"
            )
        hashes: list[str] = []
        for record in ranked(store):
            if record.arch_hash not in hashes:
                hashes.append(record.arch_hash)
        if not hashes:
            raise GatesearchError(f"{run}: no scored trial yet")
        return {f"searched#{k}": store.graph_path(h) for k, h in enumerate(hashes[:top], 1)}


def print_table(rows: dict[str, Any], names: list[str], failed: dict[str, list[str]]) -> None:
    heads = ["design", "family", *names, "aggregate", "params", "state bytes", "CPU-s"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for arch, r in rows.items():
        cells = [
            arch + (f" ({r['seeds']} seeds)" if failed.get(arch) else ""),
            r["family"],
            *(f"{r['members'][n]:.3f}" for n in names),
            f"{r['score']:.3f} ± {r['half_range']:.3f}",
            f"{r['params']:,.0f}",
            f"{r['state']:,.0f}" if r["state"] is not None else "-",
            f"{r['cpu_seconds']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")


def print_comparisons(comp: dict[str, Any], rows: dict[str, Any]) -> None:
    n = len(rows)
    recall = comp["recall_members"]
    if recall:
        print(f"\nRecall: rank among the {n} designs (1 = best; mean score over seeds)")
        print(f"published: {PUBLISHED['recall']}")
        print("| design | family | " + " | ".join(recall) + " | mean recall (rank) |")
        print("|" + "---|" * (len(recall) + 3))
        for arch, r in comp["recall_ranks"].items():
            cells = [arch, rows[arch]["family"], *(str(r[m]) for m in recall)]
            print("| " + " | ".join(cells) + f" | {r['mean_score']:.3f} ({r['mean']}) |")
        ahead = comp["attention_ahead"]
        print(
            f"attention design above a gated-conv/recurrent design on mean recall: "
            f"{ahead['attention_higher']} of {ahead['pairs']} pairs ({ahead['ties']} tied)"
        )
    if comp["hybrids"]:
        print(f"\nStriped hybrids in the aggregate (rank among {n})")
        print(f"published: {PUBLISHED['hybrids']}")
        for hybrid, h in comp["hybrids"].items():
            parts = ", ".join(
                f"{p} rank {v['rank']} ({v['score']:.3f})" for p, v in h["parts"].items()
            )
            print(
                f"{hybrid}: rank {h['rank']} ({h['score']:.3f}); parts: {parts or 'not run'}; "
                f"above {h['above_parts']} of its {len(h['parts'])} parts run"
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--archs",
        default=",".join(DEFAULT_ARCHS),
        help=f"comma-separated known files by stem, of: {', '.join(ARCHS)}; or none",
    )
    ap.add_argument(
        "--run",
        type=Path,
        default=None,
        help="also score this campaign's top --top architectures (a run on the same suite)",
    )
    ap.add_argument("--top", type=int, default=1, help="with --run: how many")
    ap.add_argument("--suite", type=Path, default=SUITE, help="a suite file")
    ap.add_argument("--width", type=int, default=64, help="every design's width (MAD: 128)")
    ap.add_argument("--blocks", type=int, default=4, help="every design's depth, in its blocks")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument(
        "--budget",
        default="6e5tokens",
        help="training budget of EACH MEMBER task (a trial trains members x this); tokens "
        "keep the figures independent of the machine's speed",
    )
    ap.add_argument(
        "--limit-params",
        type=float,
        default=None,
        help="skip designs whose largest member model has more parameters",
    )
    ap.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default="trial",
        help="train each member as a campaign's trial does, or as `gatesearch retrain` does",
    )
    ap.add_argument("--workers", type=int, default=1, help="trials at once, one thread each")
    ap.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    ap.add_argument(
        "--designs-to",
        type=Path,
        default=None,
        help="write the --archs designs at --width and --blocks into this folder (files "
        "for `gatesearch run --seed-arch`) and train nothing",
    )
    args = ap.parse_args()

    from gatesearch.arch.space import load_known
    from gatesearch.errors import GatesearchError
    from gatesearch.evaluate import SuiteEvaluator
    from gatesearch.tasks.suite import load_suite

    archs = [a.strip() for a in args.archs.split(",") if a.strip() and a.strip() != "none"]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        sys.exit(f"error: unknown design {unknown[0]!r}: choose from {', '.join(ARCHS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        suite = load_suite(args.suite)
        budget = trial_budget(args.budget, len(suite.members))
        evaluator = SuiteEvaluator(suite, {"self_tuning": False})
    except GatesearchError as exc:
        sys.exit(f"error: {exc}")
    names = list(suite.member_names)
    if args.designs_to is not None:
        args.designs_to.mkdir(parents=True, exist_ok=True)
    folder = args.designs_to or Path(tempfile.mkdtemp(prefix="gatesearch-capabilities-"))
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for arch in archs:
        path = design_file(arch, args.width, args.blocks, folder)
        try:
            params = evaluator.count_params(load_known(path).graph)
        except GatesearchError as exc:  # a depth that drops a kind of block, say
            skipped[arch] = str(exc).replace(str(path), f"{arch} at {args.blocks} blocks")
            continue
        if args.limit_params is not None and params > args.limit_params:
            skipped[arch] = f"{params:,} parameters > --limit-params {args.limit_params:,.0f}"
            continue
        files[arch] = path
    if args.designs_to is not None:
        for arch, why in skipped.items():
            print(f"skipped {arch}: {why}")
            (folder / f"{arch}.toml").unlink()  # not a design to seed a campaign with
        print("\n".join(str(p) for p in files.values()))
        return
    if args.run is not None:
        try:
            files |= campaign_designs(args.run, args.top, suite)
        except GatesearchError as exc:
            sys.exit(f"error: {exc}")
    if not files:
        sys.exit("error: no design to score (--archs none and no --run)")
    print(
        f"{suite.name}: {len(names)} members, {args.budget} each ({budget} a trial); width "
        f"{args.width}, {args.blocks} blocks; seeds {seeds}; {args.recipe} recipe; "
        f"{args.workers} workers",
        flush=True,
    )
    for arch, why in skipped.items():
        print(f"  skipped {arch}: {why}", flush=True)

    results: dict[str, dict[int, Any]] = {a: {} for a in files}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {
            pool.submit(RECIPES[args.recipe], path, args.suite, budget, s): (a, s)
            for a, path in files.items()
            for s in seeds
        }
        for future in as_completed(futures):
            a, s = futures[future]
            try:
                results[a][s] = r = future.result()
                line = " ".join(f"{n} {v:.3f}" for n, v in r["members"].items())
                print(
                    f"  {a} seed {s}: score {r['score']:.3f} ({line}), "
                    f"{r['cpu_seconds']:.0f} CPU-s",
                    flush=True,
                )
            except Exception as exc:  # a diverged member fails its trial: recorded, shown
                results[a][s] = {"error": str(exc).splitlines()[0]}
                print(f"  {a} seed {s}: failed: {results[a][s]['error']}", flush=True)
    wall = time.perf_counter() - t0

    failed = {
        a: [f"seed {s}: {r['error']}" for s, r in runs.items() if "error" in r]
        for a, runs in results.items()
    }
    rows = summarise(results, names)
    print(
        f"\n{suite.name}: mean score per member over seeds {seeds}; aggregate: mean ± half the "
        f"range; params and state: the largest member model's; CPU-s: per trial"
    )
    print_table(rows, names, failed)
    for arch, why in failed.items():
        for line in why:
            print(f"failed: {arch} {line}")
    comp = comparisons(rows, names)
    print_comparisons(comp, rows)
    cpu = sum(
        r["cpu_seconds"] for runs in results.values() for r in runs.values() if "error" not in r
    )
    print(f"\n{cpu:,.0f} CPU-s in all, wall {wall / 60:.1f} min, {args.workers} workers")
    if args.out:
        doc = {
            "command": " ".join(sys.argv),
            "suite": suite.to_spec().params,
            "width": args.width,
            "blocks": args.blocks,
            "budget_per_member": args.budget,
            "budget_per_trial": budget,
            "recipe": args.recipe,
            "seeds": seeds,
            "skipped": skipped,
            "results": results,
            "summary": rows,
            "comparisons": comp,
            "cpu_seconds": cpu,
            "wall_seconds": wall,
        }
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
