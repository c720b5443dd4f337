"""ONNX export: the engine's model through torch.onnx (the dynamo exporter), checked with ONNX
Runtime when it is installed.

    result = export_onnx(model, ctx, "model.onnx", seq_len=64)

The batch axis is dynamic, and so is the time axis unless a primitive of the model cannot keep
it so: then it is fixed at `seq_len` and the result names the primitives and why
(`OnnxExport.fixed_by`, from each module's `fixed_time`). A traced graph keeps T symbolic only
where the forward has no loop sized from T and no branch on it: the diagonal scans (minGRU,
minLSTM, RG-LRU, HGRN, the attention pooling) switch, while traced, to their loop-free forms
(`scan.linear_scan_parallel`, `scan.log_linear_scan_parallel`: a chunk of fixed size, states
carried across chunks by a masked matrix rather than a loop), GLA's chunks are padded and cut
in a form the tracer can follow, and attention, convolutions and mixtures have no loop to
begin with; so does Mamba-2's SSD, its chunks padded and cut the same way. Fixed: the
nonlinear recurrences (MGU, IndRNN, LEM, sLSTM) and torch's fused LSTM and GRU, which trace
to a loop over the traced length; the chunk loops of the delta rules and the mLSTM. Should
the tracer still fix T for a model none of them is in, or the file not compute the model at a
second length, the export falls back to a fixed T and says so. The file is checked against
the engine with ONNX Runtime, at two lengths when T is dynamic.
"""

from __future__ import annotations

import importlib.util
import logging
import math
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
    if not fixed_by:
        # Dynamic, unless the tracer fixed T after all (a guard on some size it could not
        # keep symbolic) or the file does not compute the model at another length: then the
        # fixed export below, which says so, rather than a file that fails at run time.
        example = _example(ctx, 2, max(seq_len, TRACE_MIN_LEN), seed=0)
        try:
            # min 2: torch.export specialises a size-1 dimension; a graph traced for T ≥ 2
            # still runs at T = 1 (the tests run it there).
            _trace(model, example, {0: BATCH, 1: torch.export.Dim("time", min=2)}, path)
            traced = _time_is_dynamic(path)
        except ExportError:
            traced = False
        if traced:
            # At the asked length a failure is the model's or a bug, whichever T: raised.
            diff = _check(model, ctx, path, (seq_len,))
            try:
                other = _check(model, ctx, path, (2 * seq_len + 3,))
            except ExportError:
                other = math.nan  # right at one length, wrong at another: T was not kept
            if diff is None or other is None:  # no onnxruntime: not checked at all
                return OnnxExport(Path(path), seq_len, None)
            if not math.isnan(other):
                return OnnxExport(Path(path), seq_len, max(diff, other))
        fixed_by = (("the model", "the exporter could not keep its time axis dynamic"),)
    _trace(model, _example(ctx, 2, seq_len, seed=0), {0: BATCH}, path)
    return OnnxExport(Path(path), seq_len, _check(model, ctx, path, (seq_len,)), fixed_by)


BATCH = torch.export.Dim("batch", min=1)


def _trace(
    model: torch.nn.Module, example: torch.Tensor, shapes: dict[int, Any], path: Path
) -> None:
    """torch.onnx's dynamo exporter on `example` with `shapes` dynamic, saved at `path`;
    ExportError (its first line) when it cannot trace the model."""
    with warnings.catch_warnings(), _quiet_exporter(), torch.no_grad(), _size_oblivious():
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


def _time_is_dynamic(path: Path) -> bool:
    """Whether the saved graph's input takes any length: its time axis a named dimension, not
    a number (the exporter falls back to the traced length where it cannot keep it)."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return len(dims) > 1 and not dims[1].HasField("dim_value")


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
def _size_oblivious() -> Iterator[None]:
    """Trace sizes without a special case for 1: the chunk counts of the loop-free scans are
    derived from T, and a tracer that keeps "one chunk" apart from "several" adds guards that
    exclude every T but the traced count's. torch.export's documented switch for this is a
    config flag (torch.fx.experimental._config.backed_size_oblivious)."""
    import torch.fx.experimental._config as fx_config

    # patch() is installed on the module by torch's config machinery, unseen by a type checker.
    with fx_config.patch(backed_size_oblivious=True):  # type: ignore[attr-defined]
        yield


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
