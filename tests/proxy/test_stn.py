"""STN layers: equal to nn.Linear at V = 0; folded back, equal to the STN model at λ."""

from __future__ import annotations

import pytest
import torch
from stackgraph import stack_graph
from torch import nn

from gatesearch.arch.build import build_model
from gatesearch.proxy.hyper import HyperSet, default_hypers
from gatesearch.proxy.stn import (
    HyperContext,
    HyperState,
    Response,
    STNLinear,
    attach_stn,
    fold_stn,
)
from gatesearch.registry import Context, Role

ATOL = 1e-12  # float64 throughout
N_HYPERS = 3


RESPONSES = pytest.mark.parametrize("response", list(Response), ids=[r.value for r in Response])


def _layer(
    bias: bool, ctx: HyperContext, response: Response = Response.FULL
) -> tuple[nn.Linear, STNLinear]:
    torch.manual_seed(0)
    plain = nn.Linear(6, 5, bias=bias).double()
    return plain, STNLinear(plain, N_HYPERS, ctx, response)


@RESPONSES
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", [(4, 7), (4,), (1, 9)], ids=["B4-T7", "B4-vec", "B1-T9"])
def test_stn_linear_equals_linear_at_zero_v(
    bias: bool, shape: tuple[int, ...], response: Response
) -> None:
    ctx = HyperContext()
    plain, stn = _layer(bias, ctx, response)
    x = torch.randn(*shape, 6, dtype=torch.float64)
    ctx.hyper_input = torch.randn(4, N_HYPERS, dtype=torch.float64)
    torch.testing.assert_close(stn(x), plain(x), atol=ATOL, rtol=0)


@RESPONSES
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_fold_equals_stn_output_at_lambda(bias: bool, response: Response) -> None:
    ctx = HyperContext()
    _, stn = _layer(bias, ctx, response)
    nn.init.normal_(stn.hyper_weight)
    lam = torch.randn(N_HYPERS, dtype=torch.float64)
    x = torch.randn(4, 7, 6, dtype=torch.float64)
    folded = stn.fold(lam)
    assert type(folded) is nn.Linear
    assert (folded.bias is None) == (not bias)
    for hyper_input in (lam.view(1, -1), lam.expand(4, -1)):  # shared row, or one per example
        ctx.hyper_input = hyper_input
        torch.testing.assert_close(folded(x), stn(x), atol=ATOL, rtol=0)
    # The per-example L2 penalty sees the folded weights' norm.
    ctx.hyper_input = lam.view(1, -1)
    sq = stn.effective_sq_norms(lam.view(1, -1))
    torch.testing.assert_close(sq[0], folded.weight.square().sum(), atol=ATOL, rtol=0)


@RESPONSES
def test_per_example_scales_follow_each_examples_lambda(response: Response) -> None:
    ctx = HyperContext()
    _, stn = _layer(True, ctx, response)
    nn.init.normal_(stn.hyper_weight)
    lams = torch.randn(3, N_HYPERS, dtype=torch.float64)
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    ctx.hyper_input = lams
    y = stn(x)
    for b in range(3):
        torch.testing.assert_close(y[b], stn.fold(lams[b])(x[b]), atol=ATOL, rtol=0)


def _model() -> tuple[nn.Module, HyperSet]:
    graph = stack_graph(16, [("attention", {"heads": 2}), ("glu", {"expand": 2.0})])
    torch.manual_seed(0)
    model = build_model(graph, Context(d_model=16, causal=True, n_in=11, n_out=11)).double()
    hypers = HyperSet(default_hypers([Role.MIXER, Role.CHANNEL], [], token_inputs=True))
    return model, hypers


def test_scale_response_has_no_second_weight_matrix() -> None:
    """The scale response's point is one matmul: W_h is W_e itself, not a parameter."""
    ctx = HyperContext()
    _, full = _layer(True, ctx, Response.FULL)
    _, scale = _layer(True, ctx, Response.SCALE)
    assert {n for n, _ in full.named_parameters()} == {
        "weight",
        "bias",
        "weight_h",
        "bias_h",
        "hyper_weight",
    }
    assert {n for n, _ in scale.named_parameters()} == {"weight", "bias", "hyper_weight"}


@RESPONSES
def test_model_round_trip_through_stn_layers(response: Response) -> None:
    model, hypers = _model()
    model.eval()
    x = torch.randint(0, 11, (2, 9))
    before = model(x)
    keys = list(model.state_dict())
    ctx = HyperContext()
    layers = attach_stn(model, len(hypers), ctx, response)
    assert len(layers) == 7  # q, k, v, o; up, down; head
    assert not any(type(m) is nn.Linear for m in model.modules())
    ctx.hyper_input = torch.randn(2, len(hypers), dtype=torch.float64)
    torch.testing.assert_close(model(x), before, atol=ATOL, rtol=0)

    for layer in layers:  # as if trained
        nn.init.normal_(layer.hyper_weight, std=0.3)
    lam = torch.randn(len(hypers), dtype=torch.float64)
    ctx.hyper_input = lam.view(1, -1)
    stn_out = model(x)
    assert not torch.allclose(stn_out, before)
    assert fold_stn(model, lam) == 7
    assert not any(isinstance(m, STNLinear) for m in model.modules())
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), stn_out, atol=ATOL, rtol=0)


def test_gradients_reach_lambda_only_through_the_scale_factors() -> None:
    model, hypers = _model()
    ctx = HyperContext()
    layers = attach_stn(model, len(hypers), ctx)
    state = HyperState(hypers, 0.5).double()
    x = torch.randint(0, 11, (4, 9))

    # A weight step: ũ is drawn without gradients, so the loss never reaches (u, s).
    with torch.no_grad():
        ctx.hyper_input = state.sample(4)
    model(x).square().mean().backward()
    assert state.u.grad is None and state.s.grad is None

    # A hyper step at V = 0: no path from the loss to u.
    ctx.hyper_input = state.sample(4)
    (gu,) = torch.autograd.grad(model(x).square().mean(), [state.u], allow_unused=True)
    assert gu is None or torch.count_nonzero(gu) == 0

    # With V ≠ 0 the gradient is Σ_layers Vᵀ ∂L/∂g: zero exactly where V's columns are zero.
    dead = hypers.index["input_noise_tokens"]
    for layer in layers:
        nn.init.normal_(layer.hyper_weight, std=0.1)
        layer.hyper_weight.data[:, dead] = 0.0
    ctx.hyper_input = state.sample(4)
    (gu,) = torch.autograd.grad(model(x).square().mean(), [state.u])
    assert gu[dead] == 0
    assert torch.count_nonzero(gu) == len(hypers) - 1
