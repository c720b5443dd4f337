"""`gatesearch report runs/NAME`: what a campaign found, in the terminal and as files to share.

The terminal gets the leaderboard (rank, objectives, parameters, FLOPs per token, the
architecture in one line: short, or complete with `--wide`), the trial counts by state (and
the proposals turned down over `--max-params`) and the failure reasons. The report
folder (runs/NAME/report/ unless `--out`) gets:

```
best_so_far.png        best value against trial number, one panel per objective
pareto.png             multi-objective runs: every trial in grey, the non-dominated front
choices.png            share of trials using each gating choice: top-k (under half) against all
failures.png           failure reasons (only when some trial failed)
best_architecture.png  the best graph, a vertical chain with its skip edges
trials.csv             one row per trial: state, objectives, metrics, hash, failure reason,
                       the architecture (complete, one line)
index.html             one self-contained page: config, leaderboard, the plots, the best tree
```

The run is only read: the study through Optuna's stock journal reader (no lock, no append),
the graphs from their Parquet files. The driver's flock is never taken, so a report can be
drawn while the campaign runs; RUNNING trials are counted and otherwise left out. Every file
is written to a temporary name and renamed into place, so a reader never sees half a file.

Ranking: single-objective runs rank completed trials by the objective. Multi-objective runs
rank by Pareto level (1 = not dominated by any trial, 2 = dominated only by level 1, ...), then
by the objectives in their order. Duplicates (an architecture evaluated before) are not ranked
twice. Trials whose scores are all equal tie: they share a rank, shown `=N`, and are listed by
trial number.
"""

from gatesearch.report.command import register, report, write_report
from gatesearch.report.data import (
    DEFAULT_TOP,
    REPORT_DIR,
    ReportError,
    RunData,
    load_run,
    rank_trials,
)
from gatesearch.report.page import Report

__all__ = [
    "DEFAULT_TOP",
    "REPORT_DIR",
    "Report",
    "ReportError",
    "RunData",
    "load_run",
    "rank_trials",
    "register",
    "report",
    "write_report",
]
