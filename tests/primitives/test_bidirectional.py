"""The bidirectional mixer: registration, what each direction reads, the reversal symmetry,
forward + backward for each merge, and the cells it refuses."""

from __future__ import annotations

import re

import pytest
import torch

from gatesearch.primitives.bidirectional import MERGES, Bidirectional
from gatesearch.registry import REGISTRY, Context, Role, build_module

D = 16
T = 12
NONCAUSAL = Context(d_model=D, causal=False)
# A cell of each kind: fused, a loop, a log-space scan, a chunked GLA, attention.
CELLS = {
    "lstm": {"op": "lstm", "params": {}},
    "mgu": {"op": "mgu", "params": {}},
    "mingru": {"op": "mingru", "params": {"expand": 2.0}},
    "gla": {"op": "gla", "params": {"heads": 2}},
    "attention": {"op": "attention", "params": {"heads": 2}},
}


def _build(cell: dict, merge: str = "concat", dtype=torch.float64) -> Bidirectional:
    torch.manual_seed(0)
    module = build_module("bidirectional", {"cell": cell, "merge": merge}, NONCAUSAL)
    assert isinstance(module, Bidirectional)
    return module.to(dtype)


def test_registered_as_a_noncausal_mixer_with_a_mixer_slot() -> None:
    spec = REGISTRY["bidirectional"]
    assert spec.role is Role.MIXER and not spec.causal_ok
    assert spec.allowed(Context(d_model=D, causal=True)) is not None
    assert spec.allowed(NONCAUSAL) is None
    cell = spec.param("cell")
    assert cell is not None and cell.slot and cell.ref is Role.MIXER


@pytest.mark.parametrize("merge", MERGES)
@pytest.mark.parametrize("cell", list(CELLS), ids=lambda c: f"{c}-B2-T{T}-D{D}")
def test_forward_backward_shapes_and_finite_grads(cell: str, merge: str) -> None:
    module = _build(CELLS[cell], merge, dtype=torch.float32)
    x = torch.randn(2, T, D, requires_grad=True)
    y = module(x)
    assert y.shape == (2, T, D)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("cell", list(CELLS))
def test_each_position_reads_the_whole_sequence_each_direction_one_way(cell: str) -> None:
    """y_t depends on every x_s; the forward cell only on s ≤ t, the backward one only on
    s ≥ t (each copy is built causal, even in a non-causal context)."""
    module = _build(CELLS[cell])
    x = torch.randn(2, T, D, dtype=torch.float64, requires_grad=True)
    t = T // 2

    def reach(out: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(out[:, t].sum(), x)
        return grad.abs().sum(dim=(0, 2)) > 0  # (T,): which positions y_t depends on

    assert reach(module(x)).all()
    forward_reach = reach(module.forward_cell(x))
    backward_reach = reach(module.backward_cell(x.flip(1)).flip(1))
    assert forward_reach[: t + 1].all() and not forward_reach[t + 1 :].any()
    assert backward_reach[t:].all() and not backward_reach[:t].any()


@pytest.mark.parametrize("merge", ["add", "concat"])
def test_reversing_the_sequence_swaps_the_directions(merge: str) -> None:
    """With the two cells' weights swapped (and, for concat, the projection's halves), the
    mixer of the reversed sequence is the reversed output."""
    module = _build(CELLS["gla"], merge)
    swapped = _build(CELLS["gla"], merge)
    swapped.forward_cell.load_state_dict(module.backward_cell.state_dict())
    swapped.backward_cell.load_state_dict(module.forward_cell.state_dict())
    if merge == "concat":
        assert module.mix is not None and swapped.mix is not None
        with torch.no_grad():
            swapped.mix.weight.copy_(module.mix.weight.roll(D, dims=1))  # [W_f, W_r] -> [W_r, W_f]
    x = torch.randn(2, T, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x.flip(1)), module(x).flip(1), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ({"op": "glu", "params": {}}, "not a mixer"),
        ({"op": "bidirectional", "params": {"cell": CELLS["lstm"]}}, "itself be bidirectional"),
        ("lstm", "must be {'op'"),
    ],
    ids=["channel", "nested", "bare-name"],
)
def test_refuses_cells_that_are_not_one_directional_mixers(cell: object, message: str) -> None:
    spec = REGISTRY["bidirectional"]
    cell_param = spec.param("cell")
    assert cell_param is not None and cell_param.check is not None
    why = cell_param.check(cell, {}, NONCAUSAL)
    assert why is not None and message in why
    with pytest.raises(ValueError, match=re.escape(message)):
        build_module("bidirectional", {"cell": cell}, NONCAUSAL)
