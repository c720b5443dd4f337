"""Random search: independent draws from the grammar's PCFG."""

from __future__ import annotations

import random as _random
from typing import ClassVar

import optuna

from gatesearch.grammar import sample
from gatesearch.strategies.base import Proposal, Strategy


class RandomSearch(Strategy):
    """Each slot an independent PCFG sample (alternatives by their weights)."""

    name: ClassVar[str] = "random"

    def ask(self, slot: int, seed: int, study: optuna.Study) -> Proposal:
        return Proposal(sample(self.grammar, _random.Random(seed), self.causal))
