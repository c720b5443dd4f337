"""The pooling head: its cumulative (fast) pools against the (T, T) prefix-mask reference in
values and gradients, what a position reads, and the classification read-out it is made for."""

from __future__ import annotations

import pytest
import torch
from reference import Tolerance, assert_matches_reference

from gatesearch.primitives.structure import POOLS, PoolHead
from gatesearch.registry import REGISTRY, Context, Role, build_module

F64 = Tolerance(atol=1e-10, rtol=1e-8)
D, N_OUT = 8, 3
CTX = Context(d_model=D, causal=True, n_out=N_OUT)


def _head(pool: str, dtype=torch.float64) -> PoolHead:
    torch.manual_seed(0)
    module = build_module("pool_head", {"pool": pool}, CTX)
    assert isinstance(module, PoolHead)
    return module.to(dtype)


def test_registered_as_a_causal_head() -> None:
    spec = REGISTRY["pool_head"]
    assert spec.role is Role.HEAD and spec.causal_ok
    pool = spec.param("pool")
    assert pool is not None and pool.domain is not None
    assert pool.domain.finite_values() == POOLS


@pytest.mark.parametrize("T", [1, 7, 64, 257], ids=lambda t: f"B2-T{t}-D{D}")
@pytest.mark.parametrize("pool", POOLS)
def test_pools_match_the_prefix_mask_reference(pool: str, T: int) -> None:
    head = _head(pool)
    torch.manual_seed(T)
    x = torch.randn(2, T, D, dtype=torch.float64)
    assert_matches_reference(
        head.forward, head.forward_reference, {"x": x}, values=F64, grads=F64, module=head
    )


@pytest.mark.parametrize("pool", POOLS)
def test_position_t_reads_only_positions_up_to_t(pool: str) -> None:
    head = _head(pool)
    x = torch.randn(2, 10, D, dtype=torch.float64)
    changed = x.clone()
    changed[:, 6:] = torch.randn(2, 4, D, dtype=torch.float64) * 5
    with torch.no_grad():
        torch.testing.assert_close(head(changed)[:, :6], head(x)[:, :6], atol=0, rtol=0)


@pytest.mark.parametrize("pool", POOLS)
def test_the_last_real_position_pools_the_sequence_whatever_the_padding(pool: str) -> None:
    """What `classify` reads: the output at a sequence's last real position is the pool of
    that sequence alone, the same as for the sequence without padding."""
    head = _head(pool)
    seq = torch.randn(1, 5, D, dtype=torch.float64)
    padded = torch.cat([seq, torch.full((1, 4, D), 3.0, dtype=torch.float64)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(head(padded)[:, 4], head(seq)[:, 4], atol=1e-12, rtol=0)
        if pool == "mean":
            whole = seq.mean(dim=1)
        elif pool == "max":
            whole = seq.amax(dim=1)
        else:
            assert head.score is not None
            whole = (head.score(seq).softmax(dim=1) * seq).sum(dim=1)
        torch.testing.assert_close(head(seq)[:, -1], head.proj(whole), atol=1e-12, rtol=0)


def test_attention_pool_stays_finite_for_large_scores() -> None:
    """Scores of thousands: a softmax written as e^{score} / Σ e^{score} would overflow."""
    head = _head("attention", dtype=torch.float32)
    x = (torch.randn(2, 50, D) * 1e4).requires_grad_()
    y = head(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and x.grad is not None and torch.isfinite(x.grad).all()
