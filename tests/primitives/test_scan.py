"""Parallel scans against their step loops: values and gradients, float64, fixed tolerances."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from reference import Tolerance, assert_matches_reference

from gatesearch.primitives.scan import (
    _factorisable,
    gla_chunked,
    gla_reference,
    linear_scan,
    linear_scan_parallel,
    linear_scan_reference,
    log_linear_scan,
    log_linear_scan_cumsum,
    log_linear_scan_parallel,
    log_linear_scan_reference,
    segment_sums,
)

F64 = Tolerance(atol=1e-10, rtol=1e-8)
# The one-shot cumsum/logcumsumexp form cancels a* against a sum of similar size.
CUMSUM_F64 = Tolerance(atol=1e-8, rtol=1e-8)
ATOL_F32_VS_F64 = 1e-4

LENGTHS = [1, 7, 64, 257]
DT = torch.float64


def _check_against_loop(
    fast: Callable[..., torch.Tensor],
    loop: Callable[..., torch.Tensor],
    inputs: dict[str, torch.Tensor],
    tol: Tolerance,
) -> None:
    # An input the output does not depend on (log a at T = 1) gets a zero gradient.
    assert_matches_reference(fast, loop, inputs, values=tol, grads=tol, allow_unused=True)


@pytest.mark.parametrize("chunk", [None, 5], ids=["Cauto", "C5"])
@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"B2-T{t}-D6")
def test_linear_scan_matches_loop(T: int, chunk: int | None) -> None:
    torch.manual_seed(T)
    a = torch.rand(2, T, 6, dtype=DT)
    b = torch.randn(2, T, 6, dtype=DT)
    h0 = torch.randn(2, 6, dtype=DT)
    _check_against_loop(
        lambda a, b, h0: linear_scan(a, b, h0, chunk_size=chunk),
        linear_scan_reference,
        {"a": a, "b": b, "h0": h0},
        F64,
    )


@pytest.mark.parametrize("T", [7, 257], ids=lambda t: f"B2-T{t}-H3K4V5")
def test_linear_scan_broadcasts_decay_over_trailing_dims(T: int) -> None:
    torch.manual_seed(T)
    a = torch.rand(2, T, 3, 4, 1, dtype=DT)
    b = torch.randn(2, T, 3, 4, 5, dtype=DT)
    _check_against_loop(linear_scan, linear_scan_reference, {"a": a, "b": b}, F64)


# The two-level scan the modules train with, and the loop-free form ONNX export traces.
LOG_SCANS = pytest.mark.parametrize(
    "scan", [log_linear_scan, log_linear_scan_parallel], ids=["two_level", "loop_free"]
)


@LOG_SCANS
@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"B2-T{t}-D6")
def test_log_linear_scan_matches_loop(T: int, scan: Callable[..., torch.Tensor]) -> None:
    torch.manual_seed(T)
    log_a = F.logsigmoid(torch.randn(2, T, 6, dtype=DT))
    log_b = torch.randn(2, T, 6, dtype=DT)
    _check_against_loop(scan, log_linear_scan_reference, {"log_a": log_a, "log_b": log_b}, F64)


@LOG_SCANS
@pytest.mark.parametrize("T", [7, 257], ids=lambda t: f"B2-T{t}-D6")
def test_log_linear_scan_initial_state(T: int, scan: Callable[..., torch.Tensor]) -> None:
    torch.manual_seed(T)
    log_a = F.logsigmoid(torch.randn(2, T, 6, dtype=DT))
    log_b = torch.randn(2, T, 6, dtype=DT)
    log_h0 = torch.randn(2, 6, dtype=DT)

    def slow(log_a, log_b, log_h0):
        return linear_scan_reference(log_a.exp(), log_b.exp(), log_h0.exp()).log()

    _check_against_loop(scan, slow, {"log_a": log_a, "log_b": log_b, "log_h0": log_h0}, F64)


@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"B2-T{t}-D6")
def test_log_linear_scan_cumsum_matches_loop(T: int) -> None:
    torch.manual_seed(T)
    log_a = F.logsigmoid(torch.randn(2, T, 6, dtype=DT))
    log_b = torch.randn(2, T, 6, dtype=DT)
    _check_against_loop(
        log_linear_scan_cumsum,
        log_linear_scan_reference,
        {"log_a": log_a, "log_b": log_b},
        CUMSUM_F64,
    )


@pytest.mark.parametrize("T", [1, 7, 16, 257], ids=lambda t: f"B2-T{t}")
def test_the_loop_free_linear_scan_matches_its_loop(T: int) -> None:
    """The form ONNX export traces (fixed chunk, no loop; its log-space twin is checked with
    the log scans above): with and without an initial state, a decay broadcast over trailing
    dims; a decay of exactly 0 (log a = −inf) in values only, its gradient through log 0 being
    what an inference-time form does not need."""
    torch.manual_seed(T)
    a = torch.rand(2, T, 3, 4, 1, dtype=DT)
    b = torch.randn(2, T, 3, 4, 5, dtype=DT)
    h0 = torch.randn(2, 3, 4, 5, dtype=DT)
    for args in ({"a": a, "b": b}, {"a": a, "b": b, "h0": h0}):
        _check_against_loop(linear_scan_parallel, linear_scan_reference, args, F64)
    a[:, T // 2] = 0.0  # the state forgets everything here
    torch.testing.assert_close(
        linear_scan_parallel(a, b, h0), linear_scan_reference(a, b, h0), atol=1e-10, rtol=1e-8
    )


def test_segment_sums_are_sums_over_each_segment() -> None:
    x = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=DT)
    out = segment_sums(x)
    for t in range(4):
        for s in range(4):
            want = x[s + 1 : t + 1].sum() if s <= t else -torch.inf
            assert out[t, s] == want, (t, s)


def _gla_inputs(T: int, gate_scale: float = 1.0, dtype=DT) -> dict[str, torch.Tensor]:
    q = torch.randn(2, T, 3, 4, dtype=dtype)
    k = torch.randn(2, T, 3, 4, dtype=dtype)
    v = torch.randn(2, T, 3, 5, dtype=dtype)
    log_g = F.logsigmoid(torch.randn(2, T, 3, 4, dtype=dtype)) * gate_scale
    return {"q": q, "k": k, "v": v, "log_g": log_g}


@pytest.mark.parametrize("chunk", [16, 5], ids=["C16", "C5"])
@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"B2-T{t}-H3K4V5")
def test_gla_chunked_matches_loop(T: int, chunk: int) -> None:
    torch.manual_seed(T)
    inputs = _gla_inputs(T)
    assert _factorisable(inputs["log_g"][:, :chunk].cumsum(1))  # the matmul path runs
    _check_against_loop(
        lambda q, k, v, g: gla_chunked(q, k, v, g, chunk_size=chunk), gla_reference, inputs, F64
    )


@pytest.mark.parametrize("T", [64, 257], ids=lambda t: f"B2-T{t}-H3K4V5")
def test_gla_chunked_strong_decay_takes_exact_path(T: int) -> None:
    """Decays of ~30 nats per step exceed float64's factorisable span within one chunk."""
    torch.manual_seed(T)
    inputs = _gla_inputs(T, gate_scale=40.0)
    assert not _factorisable(inputs["log_g"][:, :16].cumsum(1))
    _check_against_loop(gla_chunked, gla_reference, inputs, F64)


def test_gla_chunked_float32_strong_decay_stays_finite() -> None:
    torch.manual_seed(0)
    inputs64 = list(_gla_inputs(64, gate_scale=10.0).values())
    inputs32 = [t.float().requires_grad_() for t in inputs64]
    out32 = gla_chunked(*inputs32)
    out32.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs32)
    expected = gla_reference(*inputs64)
    torch.testing.assert_close(out32.double(), expected, atol=ATOL_F32_VS_F64, rtol=1e-4)


def test_scans_reject_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="length T"):
        linear_scan(torch.rand(2, 5, 3), torch.rand(2, 6, 3))


def _scan_cases() -> list:
    torch.manual_seed(0)
    T = 257  # several chunks of every scan, the last one padded
    pos = {"a": torch.rand(2, T, 6, dtype=DT), "b": torch.randn(2, T, 6, dtype=DT)}
    pos["h0"] = torch.randn(2, 6, dtype=DT)
    logs = {"log_a": -torch.rand(2, T, 6, dtype=DT), "log_b": torch.randn(2, T, 6, dtype=DT)}
    return [
        pytest.param(linear_scan, pos, id="linear_scan"),
        pytest.param(log_linear_scan, logs, id="log_linear_scan"),
        pytest.param(gla_chunked, _gla_inputs(T), id="gla-factorised"),
        pytest.param(gla_chunked, _gla_inputs(64, gate_scale=40.0), id="gla-exact"),
    ]


@pytest.mark.parametrize(("scan", "inputs"), _scan_cases())
def test_scans_compile_in_one_graph(
    scan: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor]
) -> None:
    """torch.compile traces each scan, forward and hand-written backward, without a graph
    break (fullgraph refuses one), and computes what eager does, on either GLA formula."""
    torch._dynamo.reset()
    compiled = torch.compile(scan, backend="eager", fullgraph=True)
    assert_matches_reference(compiled, scan, inputs, values=F64, grads=F64)
