"""ONNX export (gatesearch/export/onnx.py): every kind of gating primitive the default space
samples, token and feature inputs, through the real exporter and ONNX Runtime."""

from __future__ import annotations

import copy
from pathlib import Path

import onnxruntime
import pytest
import torch
from deltarules import delta_rules_arch
from stackgraph import stack_graph
from xlstms import xlstm_arch

from gatesearch.arch.build import build_model
from gatesearch.arch.space import (
    DEFAULT_SPACE,
    SPACES_DIR,
    Architecture,
    graph_context,
    load_known,
    load_space,
    sample_architectures,
)
from gatesearch.export import ExportError
from gatesearch.export.onnx import ONNX_ATOL, export_onnx
from gatesearch.primitives.xlstm import MLSTM
from gatesearch.registry import REGISTRY, Context, InputKind

SEQ = 24
# The chunked scans (minlstm, rglru), chunked linear attention (gla), softmax attention and a
# mixture (without pruning gates): each lowers to different ONNX ops, each keeps T dynamic.
OPS = ("attention", "gla", "minlstm", "rglru", "moe")


@pytest.fixture(scope="module")
def archs() -> list[Architecture]:
    # Enough that each of OPS is in some sample no primitive of which fixes the time axis
    # (fewer than 1 in 50 samples hold a minlstm and nothing fixed); 0.6 s to sample.
    return sample_architectures(load_space(DEFAULT_SPACE), 400, seed=2024)


def _ops(arch: Architecture) -> set[str]:
    return {attrs["op"] for _, attrs in arch.graph.nodes(data=True)}


def _gated_moe(arch: Architecture) -> bool:
    return any(
        d["op"] == "moe" and d["params"].get("prune", "none") != "none"
        for _, d in arch.graph.nodes(data=True)
    )


def _dynamic(arch: Architecture) -> bool:
    """Whether no primitive of `arch` fixes the time axis of an ONNX export."""
    specs = (
        REGISTRY.get(op) for op in _ops(arch)
    )  # the graph's input and output are no primitives
    return not any(spec is not None and spec.module.fixed_time for spec in specs)


def _zero_router(arch: Architecture) -> bool:
    """Whether a mixture of `arch` routes by noisy top-k, whose zero-initialised gate ties
    every expert: refused until trained (its own test below)."""
    return any(
        d["op"] == "moe" and d["params"].get("router") == "noisy_topk"
        for _, d in arch.graph.nodes(data=True)
    )


def _smallest(archs: list[Architecture], op: str, gated_moe: bool = False) -> Architecture:
    fits = [
        a
        for a in archs
        if op in _ops(a) and _gated_moe(a) == gated_moe and _dynamic(a) and not _zero_router(a)
    ]
    return min(fits, key=lambda a: (len(a.graph), a.hash))


def _run(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path))
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(y)


# Lengths the dynamic time axis is run at: one step, whole chunks (16, 32: no padding, so the
# chunks are views of one projection — torch.cond refused those as aliasing operands), and
# lengths on either side of the traced one.
LENGTHS = (1, 7, 16, 32, SEQ, 100)


@pytest.mark.parametrize("op", OPS)
def test_onnx_computes_the_engines_function(archs, tmp_path: Path, op: str) -> None:
    """Each of these keeps the time axis dynamic: one file runs at every length."""
    torch.manual_seed(0)
    arch = _smallest(archs, op)
    ctx = graph_context(arch.graph)
    model = build_model(arch.graph, ctx).eval()
    path = tmp_path / "m.onnx"
    result = export_onnx(model, ctx, path, SEQ)
    assert result.dynamic_time and result.fixed_by == ()
    assert result.max_diff is not None and result.max_diff <= ONNX_ATOL
    for batch, length in zip((1, 4, 2, 3, 1, 2), LENGTHS):  # both axes dynamic
        x = torch.randint(0, ctx.n_in, (batch, length))
        with torch.no_grad():
            torch.testing.assert_close(_run(path, x), model(x), atol=ONNX_ATOL, rtol=0)


# Two whole chunks of the delta rule (32): the chunks are views of one projection, which
# torch.cond (the channel decay's guard) must get as copies.
DELTA_SEQ = 64


@pytest.mark.slow  # ~10 s: three delta-rule layers through the exporter
def test_onnx_of_every_delta_rule(tmp_path: Path) -> None:
    """deltanet, gated_deltanet with a scalar decay and with a channel decay (its guard a
    torch.cond) in one model: ONNX Runtime computes the engine's function."""
    arch = delta_rules_arch()
    ctx = graph_context(arch.graph)
    torch.manual_seed(0)
    model = build_model(arch.graph, ctx).eval()
    path = tmp_path / "delta.onnx"
    result = export_onnx(model, ctx, path, DELTA_SEQ)
    assert [name for name, _ in result.fixed_by] == ["deltanet", "gated_deltanet"]
    assert result.max_diff is not None and result.max_diff <= ONNX_ATOL
    x = torch.randint(0, ctx.n_in, (4, DELTA_SEQ))
    with torch.no_grad():
        torch.testing.assert_close(_run(path, x), model(x), atol=ONNX_ATOL, rtol=0)


# Two chunks of the SSD form (64), the last one padded.
MAMBA2_SEQ = 100


@pytest.mark.slow  # ~5 s: the exporter traces and decomposes one mamba2 block
def test_onnx_of_mamba2(tmp_path: Path) -> None:
    """One mamba2 block at its defaults (the other settings change shapes, not ops): ONNX
    Runtime computes the engine's function, at any length (the chunk count is written so
    that ONNX's truncating division gets it right, the padding cut by index)."""
    arch = load_known(
        SPACES_DIR / "known" / "mamba2_lm.toml",
        {"$width": 64, "$heads": 2, "model.stack.block#count": 1},
    )
    ctx = graph_context(arch.graph)
    torch.manual_seed(0)
    model = build_model(arch.graph, ctx).eval()
    path = tmp_path / "mamba2.onnx"
    result = export_onnx(model, ctx, path, MAMBA2_SEQ)
    assert result.dynamic_time and result.fixed_by == ()
    assert result.max_diff is not None and result.max_diff <= ONNX_ATOL
    for length in (1, 64, MAMBA2_SEQ, 257):  # one chunk, whole chunks, padded, five chunks
        x = torch.randint(0, ctx.n_in, (4, length))
        with torch.no_grad():
            torch.testing.assert_close(_run(path, x), model(x), atol=ONNX_ATOL, rtol=0)


XLSTM_SEQ, XLSTM_CHUNK = 8, 3  # three mLSTM chunks, the last one padded


@pytest.mark.slow  # two xLSTM layers through the exporter, the sLSTM unrolled over 8 steps
def test_onnx_of_every_xlstm_mixer(tmp_path: Path) -> None:
    """mlstm (chunkwise, its chunk loop unrolled; the sigmoid forget gate, whose logsigmoid is
    the one op the exponential one lacks) and slstm (its step loop unrolled over the fixed
    length) in one model: ONNX Runtime computes the engine's function."""
    arch = xlstm_arch(blocks=2)
    ctx = graph_context(arch.graph)
    torch.manual_seed(0)
    model = build_model(arch.graph, ctx).eval()
    for module in model.modules():
        if isinstance(module, MLSTM):  # several chunks at a length the exporter traces quickly
            module.chunk_size = XLSTM_CHUNK
    path = tmp_path / "xlstm.onnx"
    result = export_onnx(model, ctx, path, XLSTM_SEQ)
    assert dict(result.fixed_by) == {
        "mlstm": "its stabilised state crosses chunks by a loop over T/C chunks",
        "slstm": "a nonlinear recurrence, computed by a loop over time",
    }
    assert result.max_diff is not None and result.max_diff <= ONNX_ATOL
    x = torch.randint(0, ctx.n_in, (4, XLSTM_SEQ))
    with torch.no_grad():
        torch.testing.assert_close(_run(path, x), model(x), atol=ONNX_ATOL, rtol=0)


def test_the_fused_cells_fix_the_time_axis_and_say_why(tmp_path: Path) -> None:
    """torch's LSTM and GRU trace to a loop over the traced length: the file takes that length
    only, and the export names them."""
    graph = stack_graph(16, [("lstm", {}), ("gru", {})])
    ctx = graph_context(graph)
    torch.manual_seed(0)
    model = build_model(graph, ctx).eval()
    result = export_onnx(model, ctx, tmp_path / "cells.onnx", SEQ)
    assert [name for name, _ in result.fixed_by] == ["gru", "lstm"]
    assert "fused LSTM" in dict(result.fixed_by)["lstm"]
    assert result.max_diff is not None and result.max_diff <= ONNX_ATOL
    session = onnxruntime.InferenceSession(str(tmp_path / "cells.onnx"))
    assert session.get_inputs()[0].shape[1] == SEQ


class _StepLoop(torch.nn.Module):
    """A model with a loop over time and no `fixed_time`: what an unknown module may be."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(11, 8)
        self.out = torch.nn.Linear(8, 11)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (B, T, 8)
        steps = [h[:, 0]]
        for t in range(1, h.shape[1]):  # the tracer unrolls this over the traced length
            steps.append(0.5 * steps[-1] + h[:, t])
        return self.out(torch.stack(steps, dim=1))


def test_a_model_the_tracer_fixes_falls_back_to_a_fixed_length_and_says_so(tmp_path) -> None:
    model = _StepLoop().eval()
    ctx = Context(d_model=8, causal=True, n_in=11, n_out=11)
    result = export_onnx(model, ctx, tmp_path / "loop.onnx", 12)
    assert result.fixed_by == (("the model", "the exporter could not keep its time axis dynamic"),)
    assert result.max_diff is not None and result.max_diff <= ONNX_ATOL
    session = onnxruntime.InferenceSession(str(tmp_path / "loop.onnx"))
    assert session.get_inputs()[0].shape[1] == 12


def test_onnx_with_feature_inputs(archs, tmp_path: Path) -> None:
    arch = _smallest(archs, "minlstm")
    ctx = graph_context(arch.graph, input_kind=InputKind.CONTINUOUS, n_in=5, n_out=3)
    model = build_model(arch.graph, ctx).eval()
    assert export_onnx(model, ctx, tmp_path / "f.onnx", SEQ).dynamic_time
    for length in (SEQ, 50):
        x = torch.randn(2, length, 5)
        with torch.no_grad():
            got = _run(tmp_path / "f.onnx", x)
            torch.testing.assert_close(got, model(x), atol=ONNX_ATOL, rtol=0)


def test_a_fresh_noisy_topk_router_is_refused_with_the_reason(archs, tmp_path: Path) -> None:
    """noisy top-k starts with zero gate weights: every expert ties, and ONNX Runtime's top-k
    breaks ties otherwise than torch's, which the check catches and explains."""
    graph = copy.deepcopy(_smallest(archs, "moe").graph)
    for _, attrs in graph.nodes(data=True):
        if attrs["op"] == "moe":
            attrs["params"].update(router="noisy_topk", k=1)
    ctx = graph_context(graph)
    torch.manual_seed(0)
    model = build_model(graph, ctx).eval()
    with pytest.raises(ExportError, match="zero initialisation") as info:
        export_onnx(model, ctx, tmp_path / "t.onnx", SEQ)
    assert "\n" not in str(info.value) and not (tmp_path / "t.onnx").exists()
    with torch.no_grad():  # trained (here: perturbed) weights break the ties: it exports
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert export_onnx(model, ctx, tmp_path / "t.onnx", SEQ).max_diff <= ONNX_ATOL


def test_a_mixture_with_open_expert_gates_is_refused_in_one_line(archs, tmp_path: Path) -> None:
    arch = _smallest(archs, "moe", gated_moe=True)
    ctx = graph_context(arch.graph)
    model = build_model(arch.graph, ctx).eval()
    with pytest.raises(ExportError, match="retrain first") as info:
        export_onnx(model, ctx, tmp_path / "g.onnx", SEQ)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "g.onnx").exists()
