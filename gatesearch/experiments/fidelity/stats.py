"""The statistics of a fidelity measurement: rank agreement of each proxy with the full
budget (Kendall τ-b, Spearman ρ, top-k overlap, the rank of the proxy's pick) and bootstrap
intervals over the architectures."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from gatesearch.experiments.fidelity.config import PROXIES, REPEAT, RUN_KINDS


def _finite_pairs(x: list[float | None], y: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    keep = [
        (a, b)
        for a, b in zip(x, y)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
    ]
    if not keep:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(keep, dtype=float)
    return arr[:, 0], arr[:, 1]


def rank_correlations(x: list[float | None], y: list[float | None]) -> dict[str, Any]:
    """Kendall's τ-b and Spearman's ρ of the pairs where both are finite; None where
    undefined (fewer than 3 pairs, or one side constant)."""
    from scipy.stats import spearmanr

    a, b = _finite_pairs(x, y)
    out: dict[str, Any] = {"n": int(a.size), "tau": _tau(a, b), "rho": None}
    if _ranked(a, b):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = float(spearmanr(a, b).statistic)
        out["rho"] = rho if math.isfinite(rho) else None
    return out


def _ranked(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether finite pairs `a`, `b` have a rank correlation: 3 or more, neither constant."""
    return bool(a.size >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0)


def _tau(a: np.ndarray, b: np.ndarray) -> float | None:
    """Kendall's τ-b of finite pairs, None where undefined."""
    from scipy.stats import kendalltau

    if not _ranked(a, b):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = float(kendalltau(a, b).statistic)
    return tau if math.isfinite(tau) else None


def top_agreement(x: list[float | None], y: list[float | None]) -> dict[str, Any]:
    """What a search keeps of a proxy's ranking: over the pairs where both are finite
    (higher is better on both sides), `overlap`: how many of the proxy's top k are among the
    reference's top k (k = a quarter of the pairs, at least 1), and `pick_rank`, where the proxy's
    best architecture ranks in the reference (1 = the reference's best; ties share the
    better rank). None where there are no pairs."""
    a, b = _finite_pairs(x, y)
    n = int(a.size)
    out: dict[str, Any] = {"k": max(1, n // 4) if n else None, "overlap": None, "pick_rank": None}
    if n == 0:
        return out
    k = out["k"]
    # A stable sort keeps the first of tied proxy scores: the pick does not depend on luck.
    top_a = np.argsort(-a, kind="stable")[:k]
    # Tie-aware: one of the proxy's top k counts when its reference score reaches the
    # reference's k-th best, so how ties in the reference are broken cannot change the count.
    kth_best = np.sort(b)[::-1][k - 1]
    out["overlap"] = int(np.sum(b[top_a] >= kth_best))
    out["pick_rank"] = 1 + int(np.sum(b > b[int(np.argmax(a))]))
    return out


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95


def bootstrap_taus(
    scores: dict[str, list[float | None]],
    reference: list[float | None],
    pairs: tuple[tuple[str, str], ...],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """How far each τ (`scores[p]` against `reference`) and each paired difference
    τ(p) − τ(q) can be trusted with this few architectures: percentile intervals over
    `resamples` resamples of the architectures with replacement (the same resample for every
    proxy, so a difference is paired). Why: with N = 20, τ moves by ±0.1–0.15 between samples
    of architectures; a difference whose interval holds 0 is not a difference. Resamples where
    a τ is undefined (a constant side) are left out of that τ's interval."""
    n = len(reference)
    rng = np.random.default_rng(seed)
    ref = np.array([np.nan if v is None else v for v in reference], dtype=float)
    arrays = {
        p: np.array([np.nan if v is None else v for v in xs], dtype=float)
        for p, xs in scores.items()
    }
    draws: dict[str, list[float]] = {p: [] for p in scores}
    diffs: dict[str, list[float]] = {f"{p}-{q}": [] for p, q in pairs}
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        taus = {}
        for p, a in arrays.items():
            x, y = a[idx], ref[idx]
            keep = np.isfinite(x) & np.isfinite(y)  # what rank_correlations keeps
            taus[p] = _tau(x[keep], y[keep])
        for p, tau in taus.items():
            if tau is not None:
                draws[p].append(tau)
        for p, q in pairs:
            tp, tq = taus[p], taus[q]
            if tp is not None and tq is not None:
                diffs[f"{p}-{q}"].append(tp - tq)
    tail = 100 * (1 - BOOTSTRAP_LEVEL) / 2

    def interval(values: list[float]) -> list[float] | None:
        if len(values) < resamples // 2:  # mostly undefined: no interval worth printing
            return None
        return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]

    return {
        "resamples": resamples,
        "level": BOOTSTRAP_LEVEL,
        "tau": {p: interval(v) for p, v in draws.items()},
        "difference": {k: interval(v) for k, v in diffs.items()},
    }


def _goodness(value: float | None, higher_is_better: bool) -> float | None:
    if value is None:
        return None
    return value if higher_is_better else -value


def analyse(
    rows: list[dict[str, Any]], higher_is_better: bool, repeat_full: bool = False
) -> dict[str, Any]:
    """Rank agreement of each proxy's goodness (and the repeated full run's) with the full
    budget's, on the metric and on the validation loss: τ, ρ and the top-k agreement, and
    bootstrap intervals of the metric's τ and of (a) − (b), (a) − (c). With a repeat,
    `two_seeds` ranks the proxies against the mean of both full runs as well — a reference
    with half the seed noise. CPU-seconds by run kind."""
    hib = higher_is_better
    kinds = (*PROXIES, REPEAT) if repeat_full else PROXIES
    repeated = repeat_full

    def score(row: dict[str, Any], kind: str, key: str) -> float | None:
        if kind == "params":
            return row["params"]
        run = row["runs"].get(kind) or {}
        value = (run.get("metrics") or {}).get(key)
        return None if value is None else float(value)

    def agreement(x: list[float | None], y: list[float | None]) -> dict[str, Any]:
        return {**rank_correlations(x, y), **top_agreement(x, y)}

    correlations: dict[str, Any] = {}
    two_seeds: dict[str, Any] = {}
    intervals: dict[str, Any] = {}
    for key, higher in (("metric", hib), ("loss", False)):
        goodness = {
            p: [
                score(r, p, key) if p == "params" else _goodness(score(r, p, key), higher)
                for r in rows
            ]
            for p in ("full", *kinds)
        }
        full = goodness["full"]
        correlations[key] = {p: agreement(goodness[p], full) for p in kinds}
        if key == "metric":
            pairs = (("self_tuning", "fixed"), ("self_tuning", "params"))
            intervals = bootstrap_taus({p: goodness[p] for p in kinds}, full, pairs)
        if repeated:
            mean = [
                None if a is None or b is None else (a + b) / 2
                for a, b in zip(full, goodness[REPEAT])
            ]
            two_seeds[key] = {p: agreement(goodness[p], mean) for p in PROXIES}
    run_kinds = [k for k in RUN_KINDS if k != REPEAT or repeated]
    cpu: dict[str, Any] = {}
    for kind in run_kinds:
        secs = [
            r["runs"][kind]["cpu_seconds"]
            for r in rows
            if r["runs"].get(kind) and r["runs"][kind].get("cpu_seconds") is not None
        ]
        cpu[kind] = {
            "total": float(sum(secs)),
            "mean": float(np.mean(secs)) if secs else None,
            "runs": len(secs),
        }
    failures = {
        kind: sum(1 for r in rows if (r["runs"].get(kind) or {}).get("error")) for kind in run_kinds
    }
    result = {
        "correlations": correlations,
        "bootstrap": intervals,
        "cpu_seconds": cpu,
        "failures": failures,
    }
    if repeated:
        result["two_seeds"] = two_seeds
    return result
