"""ONNX export: the engine's model through torch.onnx (the dynamo exporter), checked with ONNX
Runtime when it is installed.

    result = export_onnx(model, ctx, "model.onnx", seq_len=64)

The batch axis is dynamic, and so is the time axis unless a primitive of the model cannot keep
it so: then it is fixed at `seq_len` and the result names the primitives and why
(`OnnxExport.fixed_by`, from each module's `fixed_time`). A traced graph keeps T symbolic only
where the forward has no loop sized from T: the diagonal scans (minGRU, minLSTM, RG-LRU, HGRN,
the attention pooling) and GLA's chunked form switch, while traced, to their loop-free forms
(`scan.linear_scan_parallel`, `scan.log_linear_scan_parallel`: a chunk of fixed size, states
carried across chunks by a masked matrix rather than a loop); attention, convolutions and the
cuDNN-style cells (LSTM, GRU, exported as ONNX's own LSTM/GRU ops) have none to begin with.
The nonlinear recurrences (MGU, IndRNN, LEM, sLSTM) and the chunk loops of the delta rules and
the mLSTM are unrolled over the fixed T; Mamba-2 is loop-free but the exporter cannot prove
its padded chunks' shapes for every T. Either way the file is checked against the engine with
ONNX Runtime, at two lengths when T is dynamic.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gatesearch.export.errors import ExportError
from gatesearch.registry import REGISTRY, Context, InputKind

# Float32 through another runtime's kernels: measured differences are ≈ 4e-6; a bound 25×
# larger still catches any real mismatch (a wrong op moves outputs by O(1)).
ONNX_ATOL = 1e-4
CHECK_BATCH = 3  # not the traced batch (2): the check also exercises the dynamic axis
# A dynamic time axis is traced at no fewer steps than this: three chunks of the loop-free
# scans (16) and of GLA (16), so that no chunk count is 1 while traced (the exporter would
# specialise the graph to it).
TRACE_MIN_LEN = 33
OPSET = 18
NEEDED = ("onnx", "onnxscript")


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    seq_len: int
    # Largest |ONNX Runtime − engine| on a fresh input; None when onnxruntime is not installed.
    max_diff: float | None
    # Why the time axis is fixed at seq_len: (primitive, reason) pairs; empty: it is dynamic.
    fixed_by: tuple[tuple[str, str], ...] = ()

    @property
    def dynamic_time(self) -> bool:
        return not self.fixed_by


def fixed_time_reasons(model: torch.nn.Module) -> tuple[tuple[str, str], ...]:
    """(primitive name, why) for each kind of module of `model` that fixes the time axis."""
    names = {spec.module: spec.name for spec in REGISTRY.specs()}
    found: dict[str, str] = {}
    for module in model.modules():
        reason = getattr(type(module), "fixed_time", None)
        if reason:
            found.setdefault(names.get(type(module), type(module).__name__), reason)
    return tuple(sorted(found.items()))


def _example(ctx: Context, batch: int, seq_len: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if ctx.input_kind is InputKind.TOKENS:
        return torch.randint(0, ctx.n_in, (batch, seq_len), generator=g)
    return torch.randn(batch, seq_len, ctx.n_in, generator=g)


def export_onnx(model: torch.nn.Module, ctx: Context, path: Path, seq_len: int) -> OnnxExport:
    """Write `model` (built for `ctx`) as ONNX at `path`; ExportError (one line) when the
    exporter's packages are missing or the model cannot be traced."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs {' and '.join(missing)}: pip install 'gatesearch[onnx]'"
        )
    if seq_len < 1:
        raise ExportError(f"--seq-len must be at least 1, got {seq_len}")
    model = model.eval()
    fixed_by = fixed_time_reasons(model)
    batch = torch.export.Dim("batch", min=1)
    shapes: dict[int, Any] = {0: batch}
    if fixed_by:
        example = _example(ctx, 2, seq_len, seed=0)
    else:
        example = _example(ctx, 2, max(seq_len, TRACE_MIN_LEN), seed=0)
        shapes[1] = torch.export.Dim("time", min=1)
    with warnings.catch_warnings(), _quiet_exporter(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=(shapes,),
                input_names=["x"],
                output_names=["y"],
                opset_version=OPSET,
                verbose=False,
            )
        except Exception as exc:  # the exporter's reasons run over pages: its first line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "data-dependent" in str(exc) or "data dependent" in str(exc):
                first = (
                    "a mixture routes through expert gates that are still open to data; "
                    "retrain first (retrain prunes them)"
                )
            raise ExportError(f"cannot export this architecture to ONNX: {first}") from None
    assert program is not None  # the dynamo exporter always returns its program
    program.save(str(path))
    # A dynamic axis is checked at a second length too: one that is no multiple of a chunk.
    lengths = (seq_len,) if fixed_by else (seq_len, 2 * seq_len + 3)
    return OnnxExport(Path(path), seq_len, _check(model, ctx, path, lengths), fixed_by)


def _check(
    model: torch.nn.Module, ctx: Context, path: Path, lengths: tuple[int, ...]
) -> float | None:
    """Run the file with ONNX Runtime on inputs the trace never saw, at each of `lengths`;
    ExportError if it does not compute the engine's function (that would be an exporter bug,
    not the user's)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff = 0.0
    for seq_len in lengths:
        x = _example(ctx, CHECK_BATCH, seq_len, seed=1)
        try:
            (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        except Exception as exc:  # ONNX Runtime's own error: a graph that cannot run at all
            path.unlink(missing_ok=True)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(
                f"ONNX Runtime cannot run the exported file at length {seq_len} ({first}): "
                "not written; please report it"
            ) from None
        with torch.no_grad():
            expected = model(x).numpy()
        here = float(abs(got - expected).max())
        if not here <= ONNX_ATOL:  # also catches NaN
            path.unlink(missing_ok=True)
            if _tied_router(model):
                raise ExportError(
                    "a mixture's router is at its zero initialisation, so every expert ties "
                    "and ONNX Runtime breaks the ties otherwise than torch: export trained "
                    "weights (--weights after `gatesearch retrain`)"
                )
            raise ExportError(
                f"the ONNX file does not compute the model's function at length {seq_len} "
                f"(max difference {here:.3g} > {ONNX_ATOL:g}): not written; please report it"
            )
        diff = max(diff, here)
    return diff


def _tied_router(model: torch.nn.Module) -> bool:
    """Whether a mixture's router has all-zero gate weights (noisy top-k starts so): its
    logits tie for every token, and top-k over ties is runtime-defined."""
    from gatesearch.primitives.moe import Router

    return any(isinstance(m, Router) and not bool(m.w_gate.detach().any()) for m in model.modules())


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs progress and torchvision notices at WARNING; a CLI prints one line."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
