"""Search spaces as users handle them: load a space file, sample architectures, load known
architectures (fixed derivations), and summarise a space."""

from __future__ import annotations

import math
import random
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from gatesearch.arch.graph import INPUT_OP, arch_hash
from gatesearch.grammar import (
    ChoiceKind,
    ChoicePoint,
    Chooser,
    Derivation,
    DerivationError,
    Grammar,
    GrammarError,
    Loc,
    derivation_to_graph,
    expand,
    load_grammar,
    sample,
)
from gatesearch.grammar.model import Choose, Fixed, PrimCall, Repeat, RuleRef, Slot, Wrap
from gatesearch.registry import Context, InputKind, Value
from gatesearch.shipped import shipped_dir

SPACES_DIR = shipped_dir("spaces")
DEFAULT_SPACE = SPACES_DIR / "gated_lm.space"
# Tasks searched in another space than DEFAULT_SPACE when the user names none. gated_lm is
# causal; a classifier may read the whole sequence, and its space offers what only that allows
# (bidirectional recurrences, attention without a mask, pooling heads).
TASK_SPACES: dict[str, Path] = {"classify": SPACES_DIR / "gated_classify.space"}


@dataclass
class Architecture:
    """One sampled or loaded architecture: genotype, phenotype and identity."""

    derivation: Derivation
    graph: nx.DiGraph
    hash: str

    @classmethod
    def from_derivation(cls, derivation: Derivation) -> Architecture:
        graph = derivation_to_graph(derivation)
        return cls(derivation, graph, arch_hash(graph))


def default_space(task: str) -> Path:
    """The space a campaign (or a fidelity study) on the task named `task` searches when no
    space is given: the task's own from TASK_SPACES, else DEFAULT_SPACE."""
    return TASK_SPACES.get(task, DEFAULT_SPACE)


def graph_context(
    graph: nx.DiGraph,
    input_kind: InputKind = InputKind.TOKENS,
    n_in: int = 256,
    n_out: int = 256,
) -> Context:
    """The build context of a graph: its width and causality, the task's input/output ends."""
    params = graph.nodes[INPUT_OP]["params"]
    return Context(
        d_model=int(params["d_model"]),
        causal=bool(params["causal"]),
        input_kind=input_kind,
        n_in=n_in,
        n_out=n_out,
    )


def sample_architectures(
    grammar: Grammar, n: int, seed: int, causal: bool = True
) -> list[Architecture]:
    rng = random.Random(seed)
    return [Architecture.from_derivation(sample(grammar, rng, causal)) for _ in range(n)]


# ---------------------------------------------------------------------- known architectures


class _KnownChooser(Chooser):
    """Strict replay of a known architecture's choices.

    Keys may use `[*]` for any index (one entry for every block) and alternatives may be named
    by their label (`"attn"`) rather than their index. A choice point with no entry is an error:
    a known architecture must pin everything.
    """

    def __init__(self, choices: dict[str, Value], file: str) -> None:
        self.choices = choices
        self.file = file
        self.used: set[str] = set()
        # Wildcard keys, most specific (fewest [*]) first.
        self.patterns = sorted(
            (
                (k.count("[*]"), re.compile(re.escape(k).replace(r"\[\*\]", r"\[\d+\]") + "$"), k)
                for k in choices
                if "[*]" in k
            ),
            key=lambda t: t[0],
        )

    def _key(self, path: str) -> str | None:
        if path in self.choices:
            return path
        return next((k for _, rx, k in self.patterns if rx.match(path)), None)

    def choose(self, point: ChoicePoint) -> Value:
        key = self._key(point.path)
        if key is None:
            raise DerivationError(f"{self.file}: no value for choice {point.path}")
        self.used.add(key)
        value = self.choices[key]
        if point.kind is ChoiceKind.ALT and isinstance(value, str) and point.labels:
            matches = [o for o, label in zip(point.options, point.labels) if label == value]  # type: ignore[arg-type]
            if len(matches) != 1:
                raise DerivationError(
                    f"{self.file}: {point.path} = {value!r} names no single alternative "
                    f"(labels: {', '.join(point.labels)})"
                )
            value = matches[0]
        if point.options is not None and isinstance(value, float):
            # TOML has no int/float distinction worth trusting for values like 3.0.
            value = next((o for o in point.options if o == value), value)
        if not point.admits(value):
            shown = point.options if point.options is not None else (point.low, point.high)
            raise DerivationError(f"{self.file}: {point.path} = {value!r} is not one of {shown}")
        return value


def load_known(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Architecture:
    """Load a known architecture: a TOML file naming its space and pinning every choice.

    Single-option choices need no entry; unused entries are errors (they usually mean a typo in
    a path). `overrides` replace or add choices (e.g. `{"$width": 64}`: the same design at
    another size) and are checked the same way.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DerivationError(f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DerivationError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"space", "causal", "choices", "description"}
    if unknown:
        raise DerivationError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    if "space" not in doc or "choices" not in doc:
        raise DerivationError(f'{path}: needs `space = "..."` and a [choices] table')
    space = (path.parent / doc["space"]).resolve()
    grammar = load_grammar(space)
    choices = {**doc["choices"], **(overrides or {})}
    chooser = _KnownChooser(choices, str(path))
    derivation = expand(grammar, chooser, bool(doc.get("causal", True)))
    unused = set(choices) - chooser.used
    if unused:
        raise DerivationError(f"{path}: choices never used: {', '.join(sorted(unused))}")
    return Architecture.from_derivation(derivation)


# --------------------------------------------------------------------------- space summary


def space_size_log10(g: Grammar) -> float:
    """log10 of the number of discrete architectures, counting every finite choice and ignoring
    constraint pruning (an upper bound); continuous parameters count once."""
    memo: dict[tuple[str, tuple], float] = {}

    def rule(name: str, counts: tuple) -> float:
        r = g.rules[name]
        d = dict(counts)
        if r.max_depth is not None:
            if d.get(name, 0) >= r.max_depth:
                return 0.0
            d[name] = d.get(name, 0) + 1
        inner = tuple(sorted(d.items()))
        key = (name, inner)
        if key not in memo:
            memo[key] = sum(math.prod(item(i, inner) for i in a.items) for a in r.alts)
        return memo[key]

    def item(i: Any, counts: tuple) -> float:
        if isinstance(i, RuleRef):
            return rule(i.rule, counts)
        if isinstance(i, Wrap):
            return math.prod(item(c, counts) for c in i.body)
        if isinstance(i, Repeat):
            one = item(i.item, counts)
            return sum(one**n for n in range(i.low, i.high + 1))
        if isinstance(i, PrimCall):
            total = 1.0
            for _, expr in i.params:
                if isinstance(expr, Choose):
                    values = expr.domain.finite_values()
                    total *= len(values) if values else 1
                elif isinstance(expr, Slot):
                    total *= item(expr.item, counts)
            return total
        return 1.0

    shared = math.prod(
        1 if isinstance(d.expr, Fixed) else len(d.expr.domain.finite_values() or (1,))
        for d in g.shared.values()
    )
    return math.log10(max(1.0, shared * rule(g.start, ())))


def load_space(path: str | Path) -> Grammar:
    path = Path(path)
    if path.is_dir():
        raise GrammarError(Loc(str(path), 0, 0), "is a directory, not a space file")
    return load_grammar(path)
