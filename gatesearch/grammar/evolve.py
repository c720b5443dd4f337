"""Grammar-aware variation: mutation and crossover on derivations.

Both edit the choices of a derivation and re-expand it with `ReplayChooser`, so the result is a
derivation of the grammar by construction: any stored choice that no longer fits its new
context (say a head count after the width changed) is drawn afresh instead of kept.
"""

from __future__ import annotations

import random

from gatesearch.grammar.derive import (
    ChoicePoint,
    Derivation,
    DNode,
    RandomChooser,
    ReplayChooser,
    expand,
)
from gatesearch.registry import Value


def _under(path: str, prefix: str) -> bool:
    """Whether choice `path` lies in the subtree rooted at `prefix` (inclusive)."""
    if path == prefix:
        return True
    return path.startswith(prefix) and path[len(prefix)] in ".[#"


def mutate(parent: Derivation, rng: random.Random) -> Derivation:
    """Resample one choice point and everything derived beneath it."""
    points = parent.choice_paths()
    if not points:
        return parent  # a space with a single architecture
    target = rng.choice(points)
    # Force a different value where one exists: drop the old value and exclude it.
    old = parent.choices[target]
    kept = {p: v for p, v in parent.choices.items() if not _under(p, target)}
    kept.pop(target, None)
    chooser = _AvoidChooser(ReplayChooser(kept, RandomChooser(rng)), target, old, rng)
    return expand(parent.grammar, chooser, parent.causal)


class _AvoidChooser(ReplayChooser):
    """Replay, but draw a value different from `old` at `target` when the options allow it."""

    def __init__(self, inner: ReplayChooser, target: str, old: object, rng: random.Random) -> None:
        super().__init__(inner.choices, inner.fallback)
        self.target, self.old, self.rng = target, old, rng

    def choose(self, point: ChoicePoint) -> Value:
        if point.path == self.target and point.options is not None:
            others = [o for o in point.options if not (type(o) is type(self.old) and o == self.old)]
            if others:
                if point.weights is not None:
                    weights = [w for o, w in zip(point.options, point.weights) if o in others]
                    return self.rng.choices(others, weights=weights)[0]
                return self.rng.choice(others)
        return super().choose(point)


def _rule_nodes(node: DNode, out: list[DNode] | None = None) -> list[DNode]:
    out = [] if out is None else out
    if node.kind == "rule":
        out.append(node)
    for child in node.children:
        _rule_nodes(child, out)
    return out


def crossover(a: Derivation, b: Derivation, rng: random.Random) -> Derivation:
    """Replace a subtree of `a` with a subtree of `b` rooted at the same nonterminal.

    The root is drawn among the rules both parents expand (excluding the start rule, which
    would copy `b` whole); shared values stay `a`'s. Returns a copy of `a` when no rule is common.
    """
    if a.grammar is not b.grammar:
        raise ValueError("crossover needs two derivations of the same grammar")
    start = a.grammar.start
    a_nodes = [n for n in _rule_nodes(a.tree) if n.name != start]
    b_by_rule: dict[str, list[DNode]] = {}
    for n in _rule_nodes(b.tree):
        b_by_rule.setdefault(n.name, []).append(n)
    pairs = [(n, b_by_rule[n.name]) for n in a_nodes if n.name in b_by_rule]
    if not pairs:
        return expand(a.grammar, ReplayChooser(dict(a.choices), RandomChooser(rng)), a.causal)
    a_node, candidates = rng.choice(pairs)
    b_node = rng.choice(candidates)
    choices = {p: v for p, v in a.choices.items() if not _under(p, a_node.path)}
    for p, v in b.choices.items():
        if _under(p, b_node.path):
            choices[a_node.path + p[len(b_node.path) :]] = v
    return expand(a.grammar, ReplayChooser(choices, RandomChooser(rng)), a.causal)
