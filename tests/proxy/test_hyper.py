"""Hyperparameter definitions: ranges, mappings, discrete handling."""

from __future__ import annotations

import math

import pytest
import torch

from gatesearch.primitives.base import AUX_MOE_BALANCE, AUX_SPARSITY
from gatesearch.proxy.hyper import HyperError, HyperSet, HyperSpec, default_hypers
from gatesearch.proxy.stn import HyperState
from gatesearch.registry import Role

ROUND_TRIP_TOL = 1e-9

SPECS = {
    "bounded": HyperSpec("dropout", 0.0, 0.9, 0.05),
    "log": HyperSpec("decay", 1e-6, 1e-1, 1e-4, log=True),
    "half": HyperSpec("scale", 0.5, None, 2.0),
    "integer": HyperSpec("count", 0, 8, 3, integer=True),
}

# Extreme unconstrained values included: the mapping must saturate inside the range.
U = torch.cat(
    [
        torch.linspace(-60.0, 60.0, 241),
        torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 5,
    ]
)


@pytest.mark.parametrize("kind", list(SPECS))
def test_values_stay_in_range(kind: str) -> None:
    spec = SPECS[kind]
    v = spec.value(U.double())
    assert torch.isfinite(v).all()
    assert (v >= spec.low).all()
    if spec.high is not None:
        assert (v <= spec.high).all()


def test_integer_values_are_integers_covering_the_range() -> None:
    spec = SPECS["integer"]
    v = spec.value(U.double())
    assert torch.equal(v, v.floor())
    assert set(v.tolist()) == set(range(0, 9))
    assert isinstance(HyperSet([spec]).as_dict(torch.tensor([0.3]))["count"], int)


@pytest.mark.parametrize("kind", list(SPECS))
def test_round_trip_through_the_unconstrained_scale(kind: str) -> None:
    spec = SPECS[kind]
    for value in (spec.default, spec.low + 0.01 if spec.high is None else None):
        if value is None:
            continue
        u = torch.tensor(spec.to_unconstrained(value), dtype=torch.float64)
        assert math.isclose(
            float(spec.value(u)), value, rel_tol=ROUND_TRIP_TOL, abs_tol=ROUND_TRIP_TOL
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "a", "low": 1.0, "high": 0.5, "default": 0.7},
        {"name": "a", "low": 0.0, "high": 1.0, "default": 0.5, "log": True},
        {"name": "a", "low": 0.0, "high": None, "default": 1.0, "integer": True},
        {"name": "a", "low": 0.0, "high": 1.0, "default": 2.0},
    ],
    ids=["low-above-high", "log-from-zero", "unbounded-integer", "default-outside"],
)
def test_bad_definitions_are_refused(kwargs: dict) -> None:
    with pytest.raises(HyperError):
        HyperSpec(**kwargs)


def test_defaults_follow_the_model() -> None:
    names = [s.name for s in default_hypers([Role.MIXER, Role.NORM], [AUX_SPARSITY], False)]
    assert names == ["dropout_mixer", "weight_decay", "sparsity_weight"]
    names = [
        s.name
        for s in default_hypers([Role.STEM, Role.CHANNEL], [AUX_MOE_BALANCE], token_inputs=True)
    ]
    assert names == [
        "dropout_stem",
        "dropout_channel",
        "weight_decay",
        "input_noise_tokens",
        "moe_balance_weight",
    ]


def test_state_starts_at_the_defaults_and_perturbs_per_batch_columns_together() -> None:
    hypers = HyperSet(default_hypers([Role.MIXER], [AUX_MOE_BALANCE], token_inputs=False))
    state = HyperState(hypers, init_spread=0.5)
    current = state.current()
    for spec in hypers.specs:
        assert math.isclose(current[spec.name], spec.default, rel_tol=1e-5)
    torch.manual_seed(0)
    draws = state.sample(64)  # (64, n)
    balance = draws[:, hypers.index["moe_balance_weight"]]
    dropout = draws[:, hypers.index["dropout_mixer"]]
    assert torch.all(balance == balance[0])
    assert dropout.std() > 0.3
