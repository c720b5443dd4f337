"""Optuna samplers over derivations: every choice point is a define-by-run parameter.

Expanding the grammar asks `trial.suggest_categorical(path, universe)` at each choice point
(`suggest_float` for a continuous range). Optuna needs a parameter's distribution to be the
same in every trial, so the suggestion is made over the point's `universe` (all options before
feasibility pruning, static per path). When the sampler suggests an option that is infeasible
here (say 8 heads where the width leaves only 2 or 4), it is mapped deterministically to a
feasible one: the nearest by value for numbers (the lower on a tie), otherwise the next
feasible option after it in universe order, wrapping around. The trial records the suggested
value, the derivation the one used; the campaign stores the derivation's choices beside it.

The sampler is rebuilt for every slot with that slot's seed, so a proposal depends on the
study's trials and the slot alone, never on how many draws an earlier process made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from gatesearch.grammar import ChoicePoint, Chooser, Grammar, expand
from gatesearch.registry import Value
from gatesearch.strategies.base import Proposal, Strategy


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def feasible(point: ChoicePoint, suggested: Value) -> Value:
    """The option used when the sampler suggests `suggested` at `point`."""
    if point.admits(suggested):
        return suggested
    options = point.options
    assert options is not None
    if _numeric(suggested) and all(_numeric(o) for o in options):
        return min(options, key=lambda o: (abs(float(o) - float(suggested)), float(o)))
    universe = list(point.universe or options)
    start = universe.index(suggested) if suggested in universe else 0
    for k in range(1, len(universe) + 1):
        candidate = universe[(start + k) % len(universe)]
        if point.admits(candidate):
            return candidate
    return options[0]


class OptunaChooser(Chooser):
    def __init__(self, trial: optuna.trial.Trial) -> None:
        self.trial = trial

    def choose(self, point: ChoicePoint) -> Value:
        if point.options is None:
            return self.trial.suggest_float(point.path, point.low, point.high, log=point.log)
        universe = point.universe if point.universe is not None else point.options
        suggested = self.trial.suggest_categorical(point.path, list(universe))
        assert suggested is not None  # a grammar's options never include None
        return feasible(point, suggested)


class _RecordingReplay(Chooser):
    """Replays a derivation's choices, noting each as an Optuna parameter with the
    distribution an Optuna sampler would have suggested it from."""

    def __init__(self, choices: dict[str, Any]) -> None:
        self.choices = choices
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, BaseDistribution] = {}

    def choose(self, point: ChoicePoint) -> Value:
        value = self.choices[point.path]
        if point.options is None:
            dist: BaseDistribution = FloatDistribution(point.low, point.high, log=point.log)
        else:
            universe = point.universe if point.universe is not None else point.options
            dist = CategoricalDistribution(list(universe))
        self.params[point.path] = value
        self.distributions[point.path] = dist
        return value


def optuna_params(
    grammar: Grammar, choices: dict[str, Any], causal: bool
) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """A derivation's choices as Optuna parameters with their distributions (the grammar's
    universe at each choice point, as the Optuna strategies suggest from): what a trial that
    no Optuna sampler proposed (evolution, random, a seed architecture) is stored with, so
    TPE or NSGA-II continuing the study learn from it and optuna-dashboard's parameter plots
    and importances cover every trial."""
    recorder = _RecordingReplay(choices)
    expand(grammar, recorder, causal)
    return recorder.params, recorder.distributions


class _OptunaStrategy(Strategy):
    uses_optuna: ClassVar[bool] = True

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def ask(self, slot: int, seed: int, study: optuna.Study) -> Proposal:
        study.sampler = self.sampler(seed)
        trial = study.ask()
        return Proposal(expand(self.grammar, OptunaChooser(trial), self.causal), trial)

    def ask_fixed(
        self, slot: int, seed: int, study: optuna.Study, choices: dict[str, Any]
    ) -> Proposal:
        # Enqueued parameters are returned by suggest_* as they are, so the same expansion
        # reproduces the derivation and the trial records it as the sampler's own.
        study.enqueue_trial(choices, skip_if_exists=False)
        return self.ask(slot, seed, study)


class TPE(_OptunaStrategy):
    """Optuna's tree-structured Parzen estimator (multivariate; grouped by choice presence on
    request)."""

    name: ClassVar[str] = "tpe"

    @dataclass(frozen=True)
    class Options:
        n_startup_trials: int = 10  # random slots before the density model is used
        n_ei_candidates: int = 24
        multivariate: bool = True  # model choices jointly rather than one by one
        # True: a model per set of co-occurring choice paths; each ask then costs time in
        # proportion to groups × trials (0.6 s at 300 trials, benchmarks/strategies.py).
        group: bool = False
        constant_liar: bool = True  # treat running trials as bad, to spread parallel asks

        def check(self) -> str | None:
            if self.group and not self.multivariate:
                return "group = true needs multivariate = true"
            return None

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, **asdict(self.options))


class NSGA2(_OptunaStrategy):
    """Optuna's NSGA-II: generations of `population_size`, non-dominated sorting."""

    name: ClassVar[str] = "nsga2"

    @dataclass(frozen=True)
    class Options:
        population_size: int = 20
        mutation_prob: float = 0.0  # 0 means Optuna's default, 1 / number of parameters
        crossover_prob: float = 0.9
        swapping_prob: float = 0.5

        def check(self) -> str | None:
            if self.population_size < 2:
                return "population_size must be at least 2"
            return None

    options: Options  # type: ignore[assignment]  # narrowed: built with its own Options

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        o = self.options
        return optuna.samplers.NSGAIISampler(
            population_size=o.population_size,
            mutation_prob=o.mutation_prob or None,
            crossover_prob=o.crossover_prob,
            swapping_prob=o.swapping_prob,
            seed=seed,
        )
