"""Regularized (aging) evolution with tournament selection (Real et al., 2019).

The population is the `population` most recently finished trials that succeeded, oldest first;
a new member pushes out the oldest (age, not fitness, decides who dies). The first
`population` slots are PCFG samples; after that each child is the winner of a tournament over
`sample_size` random members, crossed over with a second winner with probability
`crossover`, then mutated by resampling one choice point (grammar-aware, so always valid).
Fitness is the first objective (minimised or maximised by its direction).

Under a multi-fidelity schedule a member's fitness is its score at the highest rung it
reached, and a tournament ranks by rung first, then by fitness: a trial scored after more
training beats one scored after less whatever the two scores (scores at different rungs are
not comparable; the higher rung is the better-informed judgement, as ASHA's promotions
already preferred it). A promotion updates its member in place: age is counted from when
the architecture joined, not from its last rung.

A child whose architecture was already evaluated is drawn again (up to `FRESH_TRIES` times):
in a small space, or under a tight parameter limit, mutation often lands back on a known
architecture — half of a 150-trial campaign on a small space was duplicates, each a slot of
the budget spent on nothing new. "Evaluated" is what was asked (in flight) or told (finished,
failed or duplicate trials), less proposals turned down over --max-params, which are not
stored; so with one worker a resumed campaign, whose strategy is rebuilt from the stored
trials, draws the same children.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import optuna

from gatesearch.arch.space import Architecture
from gatesearch.grammar import Derivation, replay, sample
from gatesearch.grammar.evolve import crossover, mutate
from gatesearch.strategies.base import Observation, Proposal, Strategy

# Draws of a child (or of an initial sample) before a known architecture is accepted: enough
# to escape a small space's revisits, bounded for a space that has nothing new left.
FRESH_TRIES = 20


def _hash(derivation: Derivation) -> str:
    return Architecture.from_derivation(derivation).hash


class RegularizedEvolution(Strategy):
    name: ClassVar[str] = "evolution"

    @dataclass(frozen=True)
    class Options:
        population: int = 20  # members kept; also how many random slots start the search
        sample_size: int = 5  # tournament size: larger means stronger selection pressure
        crossover: float = 0.0  # probability of crossing two winners before mutating

        def check(self) -> str | None:
            if self.population < 2:
                return "population must be at least 2"
            if not 1 <= self.sample_size <= self.population:
                return "sample_size must be between 1 and population"
            if not 0.0 <= self.crossover <= 1.0:
                return "crossover is a probability in [0, 1]"
            return None

    options: Options  # type: ignore[assignment]  # narrowed: built with its own Options

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (slot, derivation, rung, fitness), oldest first.
        self.population: deque[tuple[int, Derivation, int, float]] = deque(
            maxlen=self.options.population
        )
        self.sign = -1.0 if self.directions[0] == "maximize" else 1.0
        self.seen: set[str] = set()  # hashes of the architectures trials have evaluated
        self.joined: set[int] = set()  # slots that ever entered the population

    def ask(self, slot: int, seed: int, study: optuna.Study) -> Proposal:
        rng = random.Random(seed)
        for _ in range(FRESH_TRIES):
            child = self._draw(slot, rng)
            key = _hash(child)
            if key not in self.seen:
                break
        # In flight counts as evaluated: with several workers, the trials still running are
        # what a child would most often repeat.
        self.seen.add(key)
        return Proposal(child)

    def _draw(self, slot: int, rng: random.Random) -> Derivation:
        if slot < self.options.population or not self.population:
            return sample(self.grammar, rng, self.causal)
        parent = self._tournament(rng)
        if self.options.crossover > 0 and rng.random() < self.options.crossover:
            parent = crossover(parent, self._tournament(rng), rng)
        return mutate(parent, rng)

    def _tournament(self, rng: random.Random) -> Derivation:
        k = min(self.options.sample_size, len(self.population))
        contenders = rng.sample(range(len(self.population)), k)
        pop = self.population
        best = min(contenders, key=lambda i: (-pop[i][2], self.sign * pop[i][3], i))
        return pop[best][1]

    def tell(self, obs: Observation) -> None:
        derivation = obs.derivation or replay(self.grammar, obs.choices, self.causal)
        if obs.slot < 0:
            # Turned down over --max-params: never evaluated and not stored, so a resumed
            # campaign's rebuilt strategy would not know it; forgotten here too.
            self.seen.discard(_hash(derivation))
            return
        self.seen.add(_hash(derivation))
        if obs.values is None:
            return  # a failed trial never enters the population
        if obs.slot in self.joined:  # a promoted member's new score, unless it aged out
            for i, (slot, d, _, _) in enumerate(self.population):
                if slot == obs.slot:
                    self.population[i] = (slot, d, obs.rung, obs.values[0])
            return
        # New — or, rebuilt on resume, told once at the highest rung it reached by then.
        self.joined.add(obs.slot)
        self.population.append((obs.slot, derivation, obs.rung, obs.values[0]))
