"""The xLSTM cells: the mLSTM's chunkwise form against its step loop and the sLSTM's stabilised
loop against the paper's unstabilised equations, in values and gradients (float64, fixed
tolerances), with either forget gate; the stabilised forms stay finite under large gate
pre-activations, where the unstabilised equations overflow."""

from __future__ import annotations

import pytest
import torch
from reference import Tolerance, assert_matches_reference

from gatesearch.primitives.xlstm_cells import (
    FORGET_GATES,
    log_forget,
    mlstm_chunked,
    mlstm_reference,
    slstm_recurrence,
    slstm_reference,
)

F64 = Tolerance(atol=1e-10, rtol=1e-8)
LENGTHS = [1, 7, 64, 257]
CHUNK = 5  # divides none of the lengths: every case has a padded last chunk
DT = torch.float64
B, H, K, V = 2, 2, 3, 4
LARGE = 30.0  # gate pre-activations of ±30: e^{30·T} leaves every float range


def _mlstm_inputs(T: int, dtype: torch.dtype = DT, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """q, k (k scaled by 1/√K as the module does), v, and the gates' pre-activations ĩ, f̃."""
    return {
        "q": torch.randn(B, T, H, K, dtype=dtype),
        "k": torch.randn(B, T, H, K, dtype=dtype) * K**-0.5,
        "v": torch.randn(B, T, H, V, dtype=dtype),
        "i_pre": torch.randn(B, T, H, dtype=dtype) * scale,
        "f_pre": torch.randn(B, T, H, dtype=dtype) * scale,
    }


def _mlstm(form, forget: str, **kwargs):
    """The cell taking ĩ and f̃, so gradients reach the forget gate's pre-activation."""
    return lambda q, k, v, i, f: form(q, k, v, i, log_forget(f, forget), **kwargs)


@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"B{B}-T{t}-H{H}K{K}V{V}-C{CHUNK}")
@pytest.mark.parametrize("forget", FORGET_GATES)
def test_mlstm_chunked_matches_step_loop(forget: str, T: int) -> None:
    torch.manual_seed(T)
    assert_matches_reference(
        _mlstm(mlstm_chunked, forget, chunk_size=CHUNK),
        _mlstm(mlstm_reference, forget),
        _mlstm_inputs(T),
        values=F64,
        grads=F64,
        allow_unused=True,  # f̃ at T = 1 reaches nothing
    )


@pytest.mark.parametrize("forget", FORGET_GATES)
def test_mlstm_is_the_unstabilised_memory(forget: str) -> None:
    """The stabilised loop computes the paper's h_t = C_t q_t / max(|n_tᵀ q_t|, 1) with
    C_t = Σ_{s≤t} (Π_{s<r≤t} f_r) i_s v_s k_sᵀ and n_t likewise, written out here directly."""
    torch.manual_seed(0)
    q, k, v, i_pre, f_pre = _mlstm_inputs(9).values()
    log_f = log_forget(f_pre, forget)
    cum = log_f.cumsum(dim=1)  # (B, T, H)
    expected = []
    for t in range(q.shape[1]):
        weight = (cum[:, t : t + 1] - cum[:, : t + 1] + i_pre[:, : t + 1]).exp()  # (B, s, H)
        C = torch.einsum("bsh,bshv,bshk->bhvk", weight, v[:, : t + 1], k[:, : t + 1])
        n = torch.einsum("bsh,bshk->bhk", weight, k[:, : t + 1])
        num = torch.einsum("bhvk,bhk->bhv", C, q[:, t])
        expected.append(num / (n * q[:, t]).sum(-1).abs().clamp(min=1.0)[..., None])
    got = mlstm_reference(q, k, v, i_pre, log_f)
    torch.testing.assert_close(got, torch.stack(expected, dim=1), atol=1e-12, rtol=1e-10)


def _slstm_inputs(T: int, dtype: torch.dtype = DT, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """W x + b for every t (gates ĩ f̃ z̃ õ) and a block-diagonal R, one block per head."""
    return {
        "wx": torch.randn(B, T, H, 4 * K, dtype=dtype) * scale,
        "recurrent": torch.randn(H, K, 4 * K, dtype=dtype) * 0.5,
    }


@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"B{B}-T{t}-H{H}D{K}")
@pytest.mark.parametrize("forget", FORGET_GATES)
def test_slstm_stabilised_loop_matches_the_papers_equations(forget: str, T: int) -> None:
    torch.manual_seed(T)
    assert_matches_reference(
        lambda wx, r: slstm_recurrence(wx, r, forget),
        lambda wx, r: slstm_reference(wx, r, forget),
        _slstm_inputs(T),
        values=F64,
        grads=F64,
        allow_unused=True,  # R at T = 1 (h_0 = 0) reaches nothing
    )


def _finite_forward_backward(fn, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    leaves = [x.detach().requires_grad_() for x in inputs.values()]
    out = fn(*leaves)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in leaves)
    return out.detach()


@pytest.mark.parametrize("forget", FORGET_GATES)
def test_large_gate_preactivations_stay_finite(forget: str) -> None:
    """ĩ, f̃ of ±30 in float32: the stabilised forms give finite outputs and gradients (the
    mLSTM's equal to the float64 step loop); with an exponential forget gate the paper's
    unstabilised sLSTM overflows there (f = e^{30} a step), which is why the stabiliser."""
    torch.manual_seed(1)
    inputs = _mlstm_inputs(40, torch.float32)
    for name in ("i_pre", "f_pre"):
        inputs[name] = LARGE * torch.randn_like(inputs[name]).sign()
    exact = _mlstm(mlstm_reference, forget)(*(x.double() for x in inputs.values()))
    for form, kwargs in ((mlstm_chunked, {"chunk_size": 16}), (mlstm_reference, {})):
        out = _finite_forward_backward(_mlstm(form, forget, **kwargs), inputs)
        torch.testing.assert_close(out.double(), exact, atol=1e-4, rtol=1e-4)

    slstm = _slstm_inputs(40, torch.float32)
    slstm["wx"] = slstm["wx"].sign() * LARGE
    _finite_forward_backward(lambda wx, r: slstm_recurrence(wx, r, forget), slstm)
    if forget == "exp":
        with torch.no_grad():
            unstabilised = slstm_reference(slstm["wx"], slstm["recurrent"], forget)
        assert not torch.isfinite(unstabilised).all()


def test_unknown_forget_gate_is_refused() -> None:
    with pytest.raises(ValueError, match="forget='tanh' is not one of sigmoid, exp"):
        log_forget(torch.zeros(3), "tanh")
