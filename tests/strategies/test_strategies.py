"""Strategies against the default space: valid proposals, presets, state rebuilt from tells."""

from __future__ import annotations

import random
import zlib

import optuna
import pytest

from gatesearch.arch.space import DEFAULT_SPACE, Architecture, load_space
from gatesearch.grammar import ChoiceKind, ChoicePoint, replay, sample
from gatesearch.strategies import STRATEGIES, Observation, StrategyError, parse_options
from gatesearch.strategies.evolution import RegularizedEvolution
from gatesearch.strategies.optuna_samplers import feasible
from gatesearch.strategies.presets import (
    load_preset,
    make_strategy,
    parse_preset,
    resolve_preset_path,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def grammar():
    return load_space(DEFAULT_SPACE)


def fake_loss(choices: dict) -> float:
    return (sum(hash(str(v)) % 97 for v in choices.values()) % 1000) / 1000


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_bundled_presets_ask_valid_derivations(grammar, name):
    preset = load_preset(resolve_preset_path(name))
    strategy = make_strategy(preset, grammar, True, ["minimize"])
    study = optuna.create_study()
    for slot in range(12):
        proposal = strategy.ask(slot, 1000 + slot, study)
        d = proposal.derivation
        assert replay(grammar, d.choices, True).choices == d.choices  # a valid derivation
        loss = fake_loss(d.choices)
        if proposal.trial is not None:
            study.tell(proposal.trial, loss)
        strategy.tell(Observation(slot, d.choices, (loss,)))


def test_evolution_state_rebuilds_from_tells(grammar):
    opts = RegularizedEvolution.Options(population=4, sample_size=2, crossover=0.5)
    first = RegularizedEvolution(grammar, True, ["minimize"], opts)
    history = []
    for slot in range(10):
        d = first.ask(slot, slot, None).derivation
        obs = Observation(slot, d.choices, (fake_loss(d.choices),) if slot % 5 else None)
        history.append(obs)
        first.tell(obs)
    second = RegularizedEvolution(grammar, True, ["minimize"], opts)
    for obs in history:
        second.tell(obs)
    assert len(second.population) == 4
    for slot in range(10, 16):
        assert first.ask(slot, slot, None).derivation.choices == (
            second.ask(slot, slot, None).derivation.choices
        )


SMALL_SPACE = """\
task causal
let width = choice(32)
model := embed stack rmsnorm head
stack := repeat(block, 1..2)
block := residual(rmsnorm mixer)
mixer := gru | lstm | mingru | gla(heads=2)
"""  # 4 + 16 = 20 architectures


def _evolve(grammar, slots: int) -> list[str]:
    """Ask and tell serially (one worker's campaign); the hashes of the proposals in order."""
    opts = RegularizedEvolution.Options(population=4, sample_size=2)
    strategy = RegularizedEvolution(grammar, True, ["minimize"], opts)
    hashes = []
    for slot in range(slots):
        d = strategy.ask(slot, slot, None).derivation
        hashes.append(Architecture.from_derivation(d).hash)
        # A fitness that does not depend on PYTHONHASHSEED (fake_loss does): the same draws
        # in every process.
        loss = zlib.crc32(repr(sorted(d.choices.items())).encode()) / 2**32
        strategy.tell(Observation(slot, d.choices, (loss,), d))
    return hashes


def test_evolution_draws_again_rather_than_revisit_an_evaluated_architecture(tmp_path):
    path = tmp_path / "small.space"
    path.write_text(SMALL_SPACE)
    grammar = load_space(path)
    hashes = _evolve(grammar, 20)
    # Three quarters of the space with nothing twice; near its end a mutation may not reach
    # the last unseen ones in FRESH_TRIES draws.
    assert len(set(hashes[:15])) == 15 and len(set(hashes)) >= 18
    # Nothing new is left: it still answers (a known architecture, the campaign dedups).
    assert len(_evolve(grammar, 24)) == 24


def test_evolution_rebuilt_from_tells_draws_the_same_fresh_children(tmp_path):
    """Resume on a small space, where the evaluated set decides most draws: a strategy rebuilt
    from the tells (proposals turned down over the limit among them) asks what the original
    would have asked."""
    path = tmp_path / "small.space"
    path.write_text(SMALL_SPACE)
    grammar = load_space(path)
    opts = RegularizedEvolution.Options(population=4, sample_size=2)
    first = RegularizedEvolution(grammar, True, ["minimize"], opts)
    history = []
    for slot in range(10):
        d = first.ask(slot, slot, None).derivation
        if slot % 4 == 3:  # turned down: told with a negative slot, the slot asked again
            first.tell(Observation(-1, d.choices, None, d))
            d = first.ask(slot, 1000 + slot, None).derivation
        obs = Observation(slot, d.choices, (zlib.crc32(repr(d.choices).encode()) / 2**32,))
        history.append(obs)
        first.tell(obs)
    second = RegularizedEvolution(grammar, True, ["minimize"], opts)
    for obs in history:
        second.tell(obs)
    assert first.seen == second.seen
    for slot in range(10, 14):
        a, b = first.ask(slot, slot, None), second.ask(slot, slot, None)
        assert a.derivation.choices == b.derivation.choices


def test_evolution_children_are_mutants_of_the_population(grammar):
    opts = RegularizedEvolution.Options(population=3, sample_size=3)
    evo = RegularizedEvolution(grammar, True, ["minimize"], opts)
    members = [sample(grammar, random.Random(i), True) for i in range(3)]
    for i, d in enumerate(members):
        evo.tell(Observation(i, d.choices, (float(i),)))
    child = evo.ask(3, 99, None).derivation
    best = members[0].choices  # tournament over all three picks the lowest loss
    differing = [k for k in set(best) | set(child.choices) if best.get(k) != child.choices.get(k)]
    assert differing  # mutated, never a copy
    assert Architecture.from_derivation(child).hash


def test_infeasible_suggestions_map_to_a_feasible_option():
    point = ChoicePoint("x.heads", ChoiceKind.PARAM, (2, 4), universe=(2, 4, 8))
    assert feasible(point, 8) == 4 and feasible(point, 2) == 2
    alt = ChoicePoint("x.mixer", ChoiceKind.ALT, (0, 2), universe=(0, 1, 2, 3))
    assert feasible(alt, 1) == 1 or feasible(alt, 1) in (0, 2)
    word = ChoicePoint("x.router", ChoiceKind.PARAM, ("a", "c"), universe=("a", "b", "c"))
    assert feasible(word, "b") == "c"


def test_preset_errors_name_the_key():
    with pytest.raises(StrategyError, match="'popsize'"):
        parse_preset('strategy = "evolution"\n[options]\npopsize = 3\n', "p.toml")
    with pytest.raises(StrategyError, match="'colour'"):
        parse_preset('strategy = "random"\ncolour = 1\n', "p.toml")
    with pytest.raises(StrategyError, match="unknown strategy 'anneal'"):
        parse_preset('strategy = "anneal"\n', "p.toml")
    with pytest.raises(StrategyError, match="should be a int"):
        parse_options(STRATEGIES["evolution"], {"population": "ten"}, "p.toml")
    with pytest.raises(StrategyError, match="sample_size"):
        parse_options(STRATEGIES["evolution"], {"population": 4, "sample_size": 9}, "p.toml")


@pytest.mark.parametrize("value", ["-1", "inf", "nan"])
def test_preset_trial_numbers_are_finite_and_not_negative(value):
    with pytest.raises(StrategyError, match=r"\[trial\] timeout"):
        parse_preset(f'strategy = "random"\n[trial]\ntimeout = {value}\n', "p.toml")
