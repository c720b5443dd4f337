"""ONNX export: the engine's model through torch.onnx (the dynamo exporter), checked with ONNX
Runtime when it is installed.

    result = export_onnx(model, ctx, "model.onnx", seq_len=64)

The batch axis is dynamic, the time axis fixed at `seq_len`. Why fixed: the chunked scans of the
gated recurrences (minLSTM, RG-LRU, GLA) size their chunks and padding from T, and with T left
dynamic the exporter either specialised it to the traced length (minLSTM, RG-LRU: ONNX Runtime
then refused any other T) or emitted a reshape that fails at run time (GLA). With T fixed every
primitive of the default space exports and matches the engine to ≈ 4e-6; so do the delta rules
(DeltaNet, Gated DeltaNet) and the xLSTM mixers (mLSTM, sLSTM), whose chunk and step loops are
unrolled over the fixed T, and Mamba-2, whose chunked form has no loop.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from gatesearch.export.errors import ExportError
from gatesearch.registry import Context, InputKind

# Float32 through another runtime's kernels: measured differences are ≈ 4e-6; a bound 25×
# larger still catches any real mismatch (a wrong op moves outputs by O(1)).
ONNX_ATOL = 1e-4
CHECK_BATCH = 3  # not the traced batch (2): the check also exercises the dynamic axis
OPSET = 18
NEEDED = ("onnx", "onnxscript")


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    seq_len: int
    # Largest |ONNX Runtime − engine| on a fresh input; None when onnxruntime is not installed.
    max_diff: float | None


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
    example = _example(ctx, 2, seq_len, seed=0)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), _quiet_exporter(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=({0: batch},),
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
    return OnnxExport(Path(path), seq_len, _check(model, ctx, path, seq_len))


def _check(model: torch.nn.Module, ctx: Context, path: Path, seq_len: int) -> float | None:
    """Run the file with ONNX Runtime on an input the trace never saw; ExportError if it does
    not compute the engine's function (that would be an exporter bug, not the user's)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _example(ctx, CHECK_BATCH, seq_len, seed=1)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    diff = float(abs(got - expected).max())
    if not diff <= ONNX_ATOL:  # also catches NaN
        path.unlink(missing_ok=True)
        if _tied_router(model):
            raise ExportError(
                "a mixture's router is at its zero initialisation, so every expert ties and "
                "ONNX Runtime breaks the ties otherwise than torch: export trained weights "
                "(--weights after `gatesearch retrain`)"
            )
        raise ExportError(
            f"the ONNX file does not compute the model's function (max difference {diff:.3g} "
            f"> {ONNX_ATOL:g}): not written; please report it"
        )
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
