"""How numbers, objective heads and ranks read wherever gatesearch shows them: the terminal's
tables (run, status, report, retrain), the report page and its plots, the exported file's
docstring. One module, so that a parameter count reads `100.4k` and a metric's column head
`accuracy ↑` in every one of them.

Everything here returns plain text and reads nothing but its arguments.
"""

from __future__ import annotations

import math
from typing import Any

# Metrics that are counts (parameters, FLOPs per token, tokens seen): shown with a unit
# prefix, never in scientific notation.
COUNT_METRICS = frozenset({"params", "flops", "pruned_params", "pruned_flops", "tokens"})
# Metrics in bytes (a model's decode state): a count with its unit, `135.2kB`.
BYTE_METRICS = frozenset({"state", "pruned_state"})

# Unit prefixes from the largest down: the first a count reaches is the one it is shown in.
_PREFIXES = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))

MISSING = "-"  # what a table shows for a value it does not have
UP, DOWN = "↑", "↓"  # higher is better, lower is better

# The one line under a leaderboard that shows a tie; `rank_text` marks the tied ranks.
TIE_NOTE = (
    "=N: equal scores share rank N; listed, and taken by export --rank and retrain --top, "
    "in trial-number order"
)


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None for anything else (absent, a bool, a string,
    nan or inf): tables show those as MISSING rather than guess."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def count(value: Any) -> str:
    """A count: exact under a thousand (`512`), else with a unit prefix and three or four
    significant digits (`100.4k`, `2.51M`, `1.20G`)."""
    x = _number(value)
    if x is None:
        return MISSING
    if abs(x) < 1e3:
        return str(int(x)) if x.is_integer() else f"{x:.4g}"
    for i, (unit, scale) in enumerate(_PREFIXES):
        if abs(x) >= scale:
            scaled = x / scale
            text = f"{scaled:.1f}" if abs(scaled) >= 100 else f"{scaled:.2f}"
            # 999.96k rounds to "1000.0k": one prefix up reads "1.00M".
            if abs(float(text)) >= 1e3 and i > 0:
                return f"{x / _PREFIXES[i - 1][1]:.2f}{_PREFIXES[i - 1][0]}"
            return text + unit
    raise AssertionError("unreachable: |x| >= 1e3 reaches the smallest prefix")


def whole(value: Any) -> str:
    """A number of steps or trials: exact, with thousands separated (`2,000`)."""
    x = _number(value)
    return MISSING if x is None else f"{round(x):,}"


def score(value: Any) -> str:
    """A score (a metric, a loss, an objective value): four significant digits (`0.5312`,
    `1.234`); a large one is written as a count (`12.35k`), never `1.235e+04`."""
    x = _number(value)
    if x is None:
        return MISSING
    if abs(x) >= 9999.5:  # what `.4g` would write as 1e+04
        return count(x)
    return f"{x:.4g}"


def metric(key: str, value: Any) -> str:
    """A trial's metric or objective `key`: a count for the counts, bytes for the sizes in
    bytes, a score for the rest."""
    if key in BYTE_METRICS:
        text = count(value)
        return text if text == MISSING else text + "B"
    return count(value) if key in COUNT_METRICS else score(value)


def objective_name(objective: str, metric_name: str) -> str:
    """An objective in words: `metric` is named after the task's metric (`accuracy`), or
    `metric (loss)` when the task's metric is its loss (so it is not read as the `loss`
    objective)."""
    if objective == "metric" and metric_name != "metric":
        return metric_name if metric_name != "loss" else "metric (loss)"
    return objective


def arrow(higher_is_better: bool) -> str:
    return UP if higher_is_better else DOWN


def objective_header(objective: str, metric_name: str, higher_is_better: bool) -> str:
    """A column head for an objective: its name and which way is better (`accuracy ↑`,
    `params ↓`)."""
    return f"{objective_name(objective, metric_name)} {arrow(higher_is_better)}"


def rank_text(rank: int, joint_rank: int, tied: bool) -> str:
    """A leaderboard's rank cell: `3`, or `=2` for every trial that ties for second place
    (the third in the list included: it shares the rank of the first of its tie)."""
    return f"={joint_rank}" if tied else str(rank)
