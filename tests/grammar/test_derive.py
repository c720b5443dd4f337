"""Sampling, replay, mutation and crossover always give valid derivations of the grammar."""

from __future__ import annotations

import random

import pytest

from gatesearch.arch.graph import arch_hash, validate_graph
from gatesearch.arch.space import DEFAULT_SPACE, load_space
from gatesearch.grammar import (
    ChoiceKind,
    DerivationError,
    derivation_to_graph,
    grammar_from_text,
    replay,
    sample,
)
from gatesearch.grammar.evolve import crossover, mutate

SMALL = """\
task any
let width = choice(12, 16, 24)
let heads = choice(2, 3, 4)
model := embed stack rmsnorm head
stack := repeat(block, 1..4)
block := residual(norm mixer) | residual(norm mixer) residual(norm channel)
norm := rmsnorm | layernorm
mixer := attention(heads=$heads, gate=choice(none, g1)) | gru | deep
deep[max_depth=3] := hgrn | hgrn deep
channel := mlp(expand=choice(1, 2)) | moe(router=choice(switch, expert_choice), experts=choice(2, 4), expert=mlp)
"""


@pytest.fixture(scope="module")
def small():
    return grammar_from_text(SMALL, "small.space")


@pytest.fixture(scope="module")
def default():
    return load_space(DEFAULT_SPACE)


def _check_valid(d) -> None:
    """A derivation is valid when strict replay of its choices re-derives the same graph."""
    again = replay(d.grammar, d.choices, d.causal)
    g1, g2 = derivation_to_graph(d), derivation_to_graph(again)
    validate_graph(g1)
    assert arch_hash(g1) == arch_hash(g2)


def test_heads_always_divide_width(small) -> None:
    for seed in range(200):
        d = sample(small, seed, causal=True)
        for _, attrs in derivation_to_graph(d).nodes(data=True):
            if attrs["op"] == "attention":
                assert d.width % attrs["params"]["heads"] == 0


def test_expert_choice_only_on_noncausal_tasks(small) -> None:
    routers = {True: set(), False: set()}
    for seed in range(300):
        for causal in (True, False):
            d = sample(small, seed, causal=causal)
            for _, attrs in derivation_to_graph(d).nodes(data=True):
                if attrs["op"] == "moe":
                    routers[causal].add(attrs["params"]["router"])
    assert "expert_choice" not in routers[True]
    assert "expert_choice" in routers[False]


def test_recursion_respects_its_bound(small) -> None:
    depths = set()
    for seed in range(300):
        d = sample(small, seed)
        for _, attrs in derivation_to_graph(d).nodes(data=True):
            depths.add(attrs["path"].count(".deep"))
    assert max(depths) <= 3
    assert max(depths) == 3  # the bound is reached, not just respected


def test_sampling_is_deterministic_per_seed(default) -> None:
    a, b = sample(default, 7), sample(default, 7)
    assert a.choices == b.choices
    assert sample(default, 8).choices != a.choices


def test_choice_paths_are_stable_names(default) -> None:
    d = sample(default, 3)
    for path in d.choices:
        assert path.startswith(("$", "model"))
    assert "$width" in d.choices
    assert any(p.startswith("model.stack.block#count") for p in d.choices)
    assert any(p.startswith("model.stack.block[0]") for p in d.choices)


def test_samples_replay_exactly(default) -> None:
    for seed in range(50):
        _check_valid(sample(default, seed))


def test_strict_replay_refuses_missing_and_invalid_choices(small) -> None:
    d = sample(small, 1)
    choices = dict(d.choices)
    with pytest.raises(DerivationError):
        replay(small, {k: v for k, v in list(choices.items())[1:]}, True)
    choices["$width"] = 13
    with pytest.raises(DerivationError):
        replay(small, choices, True)


def test_mutations_are_valid_and_change_something(default) -> None:
    rng = random.Random(0)
    changed = 0
    d = sample(default, 0)
    for _ in range(150):
        m = mutate(d, rng)
        _check_valid(m)
        changed += m.choices != d.choices
        d = m
    assert changed >= 140


def test_crossovers_are_valid_and_mix_parents(default) -> None:
    rng = random.Random(1)
    mixed = 0
    for seed in range(60):
        a, b = sample(default, 2 * seed), sample(default, 2 * seed + 1)
        c = crossover(a, b, rng)
        _check_valid(c)
        assert c.shared == a.shared
        mixed += c.choices != a.choices
    assert mixed > 20


def test_choice_points_expose_static_universe(default) -> None:
    from gatesearch.grammar import Chooser, RandomChooser, expand

    seen = {}

    class Recorder(Chooser):
        def __init__(self) -> None:
            self.inner = RandomChooser(random.Random(0))

        def choose(self, point):
            if point.options is not None:
                assert point.universe is not None
                assert set(point.options) <= set(point.universe)
                prev = seen.setdefault(point.path, point.universe)
                assert prev == point.universe
            if point.kind is ChoiceKind.ALT:
                assert point.labels is not None and len(point.labels) == len(point.options)
            return self.inner.choose(point)

    for _ in range(30):
        expand(default, Recorder(), True)
