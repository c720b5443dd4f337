"""Primitive benchmarks on CPU: forward + backward wall time.

Sections are functions called from `main()`; each returns rows and `print_table` shows them.

    python benchmarks/primitives.py --B 8 --T 512 --D 256 --repeats 5 --threads 2

Recurrences, four sections (`--sections` picks some):
- scans: scan operators alone (the recurrence itself, inputs precomputed) at the shapes the
  default modules use: parallel scan (or chunked form) vs step loop, the delta rules and
  Mamba-2's SSD included;
- modules: whole linear-recurrence, delta-rule and Mamba-2 modules: parallel `forward` vs
  step-loop `forward_reference` (same weights). Projections, gates and norms are shared by both,
  so this ratio is bounded by Amdahl's law well below the operator ratio;
- xlstm: the mLSTM cell's chunkwise form vs its step loop, alone and inside the `mlstm` module;
- fused: the `lstm`/`gru` primitives vs bare torch.nn.LSTM/GRU.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.delta_rule import delta_rule_chunked, delta_rule_reference
from gatesearch.primitives.deltanet import DELTA_CHUNK, DELTA_RULES, delta_key_dim
from gatesearch.primitives.mamba2 import MAMBA2_CHUNK
from gatesearch.primitives.recurrent import (
    GLA_KEY_EXPANSION,
    HAWK_EXPAND,
    LINEAR_RECURRENCES,
    recurrence_width,
)
from gatesearch.primitives.scan import (
    gla_chunked,
    gla_reference,
    linear_scan,
    linear_scan_reference,
    log_linear_scan,
)
from gatesearch.primitives.ssd import ssd_chunked, ssd_reference
from gatesearch.primitives.xlstm import MLSTM_CHUNK, MLSTM_EXPAND
from gatesearch.primitives.xlstm_cells import mlstm_chunked, mlstm_reference
from gatesearch.registry import REGISTRY, Context, build_module

Fn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Row:
    """Per-run milliseconds of a subject and its baseline, measured interleaved."""

    name: str
    subject_ms: list[float]
    baseline_ms: list[float]


def _run_ms(fn: Fn, inputs: Sequence[torch.Tensor]) -> float:
    leaves = [x.detach().requires_grad_() for x in inputs]
    start = time.perf_counter()
    fn(*leaves).sum().backward()
    return (time.perf_counter() - start) * 1e3


def compare(name: str, subject: Fn, baseline: Fn, *inputs: torch.Tensor, repeats: int) -> Row:
    """Time fn(*inputs).sum().backward() for both, alternating runs after one warm-up each, so
    that bursts of load from other processes land on both sides alike."""
    _run_ms(subject, inputs)
    _run_ms(baseline, inputs)
    subject_ms, baseline_ms = [], []
    for _ in range(repeats):
        subject_ms.append(_run_ms(subject, inputs))
        baseline_ms.append(_run_ms(baseline, inputs))
    return Row(name, subject_ms, baseline_ms)


def bench_scan_ops(B: int, T: int, D: int, repeats: int) -> list[Row]:
    """Each scan operator vs its step loop (subject: parallel, baseline: step) at the default
    modules' widths: mingru/minlstm width D in log space, hgrn D, rglru round(4/3·D), gla 4 heads."""
    rows = []
    a, b = torch.rand(B, T, D) * 0.5 + 0.5, torch.rand(B, T, D) + 0.1
    rows.append(
        compare(
            "log (min*)",
            lambda a, b: log_linear_scan(a.log(), b.log()).exp(),
            linear_scan_reference,
            a,
            b,
            repeats=repeats,
        )
    )
    for label, width in (("lin (hgrn)", D), ("lin (rglru)", recurrence_width(D, HAWK_EXPAND))):
        a, b = torch.rand(B, T, width) * 0.5 + 0.5, torch.randn(B, T, width)
        rows.append(compare(label, linear_scan, linear_scan_reference, a, b, repeats=repeats))
    heads = 4  # the gla default
    dk, dv = int(D * GLA_KEY_EXPANSION) // heads, D // heads
    q, k = torch.randn(B, T, heads, dk) * dk**-0.5, torch.randn(B, T, heads, dk)
    v = torch.randn(B, T, heads, dv)
    log_g = F.logsigmoid(torch.randn(B, T, heads, dk)) / 16
    rows.append(compare("gla op", gla_chunked, gla_reference, q, k, v, log_g, repeats=repeats))
    rows += bench_delta_rule_ops(B, T, D, repeats)
    rows += bench_ssd_ops(B, T, D, repeats)
    return rows


def bench_delta_rule_ops(B: int, T: int, D: int, repeats: int) -> list[Row]:
    """The delta rule's chunked form (default chunk) vs its step loop at the modules' default
    shapes (4 heads, d_k = d_v = D/4, unit keys): no decay (deltanet), a scalar decay per head
    (gated_deltanet) and a decay per key channel (decay=channel)."""
    heads = 4  # the deltanet / gated_deltanet default
    dk, dv = delta_key_dim(D, heads, 0), D // heads
    q = F.normalize(torch.randn(B, T, heads, dk), dim=-1) * dk**-0.5
    k = F.normalize(torch.randn(B, T, heads, dk), dim=-1)
    v, beta = torch.randn(B, T, heads, dv), torch.rand(B, T, heads)

    def chunked(*args: torch.Tensor) -> torch.Tensor:
        return delta_rule_chunked(*args, chunk_size=DELTA_CHUNK)

    rows = [compare("delta op", chunked, delta_rule_reference, q, k, v, beta, repeats=repeats)]
    for label, shape in (("gdelta op", (B, T, heads)), ("kda op", (B, T, heads, dk))):
        log_alpha = -0.1 * torch.rand(*shape)  # α ∈ (0.9, 1], the size Mamba-2's init gives
        rows.append(
            compare(label, chunked, delta_rule_reference, q, k, v, beta, log_alpha, repeats=repeats)
        )
    return rows


def bench_ssd_ops(B: int, T: int, D: int, repeats: int) -> list[Row]:
    """Mamba-2's SSD recurrence, chunked (default chunk) vs its step loop, at the mamba2
    module's default shapes: inner width expand·D split into its heads, one group of B and C,
    Δ and A in the ranges its initialisation gives."""
    spec = REGISTRY["mamba2"]
    heads, d_state, expand, groups = (
        spec.param(name).default for name in ("heads", "d_state", "expand", "groups")
    )
    P = expand * D // heads
    x = torch.randn(B, T, heads, P)
    dt = torch.rand(B, T, heads) * 0.1 + 1e-3
    A = -torch.rand(heads) * 15 - 1
    Bm, Cm = torch.randn(B, T, groups, d_state), torch.randn(B, T, groups, d_state)
    skip = torch.ones(heads)

    def chunked(*args: torch.Tensor) -> torch.Tensor:
        return ssd_chunked(*args, chunk_size=MAMBA2_CHUNK)

    return [compare("ssd op", chunked, ssd_reference, x, dt, A, Bm, Cm, skip, repeats=repeats)]


def bench_linear_recurrences(
    B: int, T: int, D: int, repeats: int, only: Sequence[str] = ()
) -> list[Row]:
    """Every linear-recurrence and delta-rule module (and gated_deltanet's channel decay) and
    mamba2, or those named in `only`: `forward` (subject) vs `forward_reference` (baseline)."""
    ctx = Context(d_model=D, causal=True)
    x = torch.randn(B, T, D)
    rows = []
    settings = [(name, {}) for name in (*LINEAR_RECURRENCES, *DELTA_RULES, "mamba2")]
    settings.append(("gated_deltanet", {"decay": "channel"}))
    for name, params in settings:
        if only and name not in only:
            continue
        torch.manual_seed(0)
        module = build_module(name, params, ctx)
        label = (
            name if not params else f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"
        )
        rows.append(compare(label, module, module.forward_reference, x, repeats=repeats))
    return rows


def bench_xlstm(B: int, T: int, D: int, repeats: int) -> list[Row]:
    """The mLSTM cell's chunkwise form (default chunk) vs its step loop at the `mlstm` module's
    default shapes (width 2·D, 4 heads of 2·D/4) and gates as it initialises them (f = σ(3..6),
    ĩ near 0; the cell sees only log f, whichever the forget gate's form); then the module,
    `forward` vs `forward_reference`, with each forget gate."""
    heads, dh = 4, recurrence_width(D, MLSTM_EXPAND) // 4  # the mlstm defaults
    q, k, v = (torch.randn(B, T, heads, dh) for _ in range(3))
    k = k * dh**-0.5
    log_i = 0.1 * torch.randn(B, T, heads)
    log_f = F.logsigmoid(torch.empty(B, T, heads).uniform_(3.0, 6.0))

    def chunked(*args: torch.Tensor) -> torch.Tensor:
        return mlstm_chunked(*args, chunk_size=MLSTM_CHUNK)

    rows = [compare("mlstm op", chunked, mlstm_reference, q, k, v, log_i, log_f, repeats=repeats)]
    ctx = Context(d_model=D, causal=True)
    x = torch.randn(B, T, D)
    for params in ({}, {"forget": "exp"}):
        torch.manual_seed(0)
        module = build_module("mlstm", params, ctx)
        label = "mlstm" + ("(forget=exp)" if params else "")
        rows.append(compare(label, module, module.forward_reference, x, repeats=repeats))
    return rows


def bench_fused_rnns(B: int, T: int, D: int, repeats: int) -> list[Row]:
    """lstm / gru primitives (subject) vs bare torch.nn.LSTM / GRU (baseline)."""
    ctx = Context(d_model=D, causal=True)
    x = torch.randn(B, T, D)
    rows = []
    for name, bare_cls in (("lstm", nn.LSTM), ("gru", nn.GRU)):
        module = build_module(name, {}, ctx)
        bare = bare_cls(D, D, batch_first=True)
        rows.append(compare(name, module, lambda xi, rnn=bare: rnn(xi)[0], x, repeats=repeats))
    return rows


def print_table(title: str, headers: tuple[str, str, str, str], rows: Sequence[Row]) -> None:
    """Medians of each side, their ratio (baseline / subject), and the ratio of the minima,
    which is the least disturbed by other load on the machine."""
    name_h, subject_h, baseline_h, ratio_h = headers
    print(f"\n{title}")
    print(f"{name_h:<30} {subject_h:>14} {baseline_h:>14} {ratio_h:>10} {'(of mins)':>10}")
    for row in rows:
        subject, baseline = statistics.median(row.subject_ms), statistics.median(row.baseline_ms)
        min_ratio = min(row.baseline_ms) / min(row.subject_ms)
        print(
            f"{row.name:<30} {subject:>14.2f} {baseline:>14.2f} "
            f"{baseline / subject:>10.2f} {min_ratio:>10.2f}"
        )


SECTIONS = ("scans", "modules", "xlstm", "fused")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=8, help="batch size")
    parser.add_argument("--T", type=int, default=512, help="sequence length")
    parser.add_argument("--D", type=int, default=256, help="model width")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="which tables to measure (default: all)",
    )
    parser.add_argument(
        "--modules",
        default="",
        help="comma-separated module names the modules section measures (default: all; its "
        "step loops are most of the script's time)",
    )
    args = parser.parse_args(argv)
    only = [m for m in args.modules.split(",") if m]
    known = {*LINEAR_RECURRENCES, *DELTA_RULES, "mamba2"}
    if unknown := [m for m in only if m not in known]:
        parser.error(f"--modules: unknown {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = f"B={args.B} T={args.T} D={args.D}, fwd+bwd, median of {args.repeats} interleaved"

    tables = {
        "scans": (
            f"Scan operators: parallel vs step loop ({shape})",
            ("op", "parallel ms", "step ms", "step/par"),
            bench_scan_ops,
        ),
        "modules": (
            f"Linear-recurrence, delta-rule and Mamba-2 modules: forward vs forward_reference ({shape})",
            ("name", "parallel ms", "step ms", "step/par"),
            functools.partial(bench_linear_recurrences, only=only),
        ),
        "xlstm": (
            f"mLSTM: chunkwise vs step loop, operator and module ({shape})",
            ("name", "chunked ms", "step ms", "step/chunk"),
            bench_xlstm,
        ),
        "fused": (
            f"Fused RNN primitives vs bare torch modules ({shape})",
            ("name", "primitive ms", "bare ms", "bare/prim"),
            bench_fused_rnns,
        ),
    }
    for section in SECTIONS:
        if section in args.sections:
            title, headers, bench = tables[section]
            print_table(title, headers, bench(args.B, args.T, args.D, args.repeats))


if __name__ == "__main__":
    main()
