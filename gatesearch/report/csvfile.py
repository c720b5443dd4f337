"""trials.csv: one row per trial, every metric a column, the architecture complete on one
line (the last column)."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from gatesearch.arch.describe import describe
from gatesearch.report.data import RunData

# ---------------------------------------------------------------------------------- files


def _cell(value: Any) -> Any:
    """A CSV cell: scalars as they are, anything nested (tuned hyperparameters) as JSON."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def _architecture(data: RunData, arch_hash: str, seen: dict[str, str]) -> str:
    """The complete one-line description, once per architecture (duplicates share it);
    empty when the trial has no readable graph (the report's `skipped` line names those)."""
    if arch_hash not in seen:
        g = data.graph(arch_hash) if arch_hash else None
        seen[arch_hash] = describe(g, complete=True) if g is not None else ""
    return seen[arch_hash]


def trials_csv(data: RunData) -> bytes:
    metric_names = sorted({k for r in data.records for k in r.metrics})
    described: dict[str, str] = {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "number",
            "state",
            "slot",
            "arch_hash",
            *data.objectives,
            *(f"metric_{m}" for m in metric_names),
            "duplicate_of",
            "fail_reason",
            "architecture",
        ]
    )
    for r in data.records:
        values = list(r.values) if r.values is not None else [""] * len(data.objectives)
        w.writerow(
            [
                r.number,
                r.state.name.lower(),
                r.slot,
                r.arch_hash,
                *values,
                *(_cell(r.metrics.get(m)) for m in metric_names),
                "" if r.duplicate_of is None else r.duplicate_of,
                r.fail_reason or "",
                _architecture(data, r.arch_hash, described),
            ]
        )
    return buf.getvalue().encode()
