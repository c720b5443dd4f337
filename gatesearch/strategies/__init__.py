"""Search strategies behind one ask/tell interface, and presets naming them."""

from __future__ import annotations

from gatesearch.strategies.base import (
    Observation,
    Proposal,
    Strategy,
    StrategyError,
    parse_options,
)
from gatesearch.strategies.evolution import RegularizedEvolution
from gatesearch.strategies.optuna_samplers import NSGA2, TPE, OptunaChooser
from gatesearch.strategies.random import RandomSearch

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (RandomSearch, TPE, NSGA2, RegularizedEvolution)
}

__all__ = [
    "NSGA2",
    "STRATEGIES",
    "TPE",
    "Observation",
    "OptunaChooser",
    "Proposal",
    "RandomSearch",
    "RegularizedEvolution",
    "Strategy",
    "StrategyError",
    "parse_options",
]
