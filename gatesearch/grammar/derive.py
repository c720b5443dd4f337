"""Deriving architectures from a grammar: choice points, feasibility pruning, the derivation tree.

A derivation (the genotype) is the ordered mapping {choice path: value} made while expanding the
grammar. Expansion asks a `Chooser` at every choice point, offering only the options that still
lead to a model that builds: options whose constraints (heads dividing the width, routers
allowed on causal tasks, recursion bounds) cannot be met anywhere below are pruned before the
choice is made, so sampling never retries.

Path names are stable: `model.stack.block[2].mixer` is the alternative chosen for the third
block's mixer, `model.stack.block#count` the number of blocks, `...mixer.attention.heads` a
parameter, `$width` a shared value.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gatesearch.errors import GatesearchError
from gatesearch.grammar.model import (
    Alternative,
    Choose,
    Fixed,
    Grammar,
    Identity,
    Item,
    PrimCall,
    Repeat,
    RuleRef,
    SharedRef,
    Slot,
    Wrap,
)
from gatesearch.registry import REGISTRY, Context, FloatRange, ParamSpec, Value


class ChoiceKind(Enum):
    SHARED = "shared"  # a model-wide value ($width)
    ALT = "alt"  # which alternative of a rule (value: alternative index)
    COUNT = "count"  # how many copies in a repeat
    PARAM = "param"  # a primitive's parameter


@dataclass(frozen=True)
class ChoicePoint:
    path: str
    kind: ChoiceKind
    options: tuple[Value, ...] | None  # None for a continuous range
    weights: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None  # readable names of ALT options
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    # Every option before feasibility pruning, always the same at this path for a given
    # grammar: what a sampler that needs a static search space (Optuna) should offer.
    universe: tuple[Value, ...] | None = None

    def admits(self, value: Any) -> bool:
        if self.options is None:
            return type(value) in (int, float) and self.low <= value <= self.high
        return any(type(value) is type(o) and value == o for o in self.options)


class Chooser(ABC):
    """Makes each choice during an expansion (random sampling, replay, an Optuna trial...)."""

    @abstractmethod
    def choose(self, point: ChoicePoint) -> Value: ...


class RandomChooser(Chooser):
    """PCFG sampling: alternatives by their weights, everything else uniformly."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, point: ChoicePoint) -> Value:
        if point.options is None:
            return FloatRange(point.low, point.high, point.log).sample(self.rng)
        if point.weights is not None:
            return self.rng.choices(point.options, weights=point.weights)[0]
        return self.rng.choice(point.options)


class ReplayChooser(Chooser):
    """Replays stored choices; a stored value that no longer fits (after a mutation or a
    crossover changed its context) or a missing one is drawn from `fallback` instead."""

    def __init__(self, choices: dict[str, Value], fallback: Chooser) -> None:
        self.choices = choices
        self.fallback = fallback

    def choose(self, point: ChoicePoint) -> Value:
        if point.path in self.choices and point.admits(self.choices[point.path]):
            return self.choices[point.path]
        return self.fallback.choose(point)


class StrictReplay(Chooser):
    """Replays stored choices and refuses anything missing or invalid (loading known archs)."""

    def __init__(self, choices: dict[str, Value]) -> None:
        self.choices = choices

    def choose(self, point: ChoicePoint) -> Value:
        if point.path not in self.choices:
            raise DerivationError(f"no choice recorded for {point.path}")
        value = self.choices[point.path]
        if not point.admits(value):
            shown = point.options if point.options is not None else (point.low, point.high)
            raise DerivationError(f"{point.path}={value!r} is not allowed here (options: {shown})")
        return value


class DerivationError(GatesearchError, ValueError):
    pass


@dataclass
class DNode:
    """A node of the derivation tree: a rule expansion, a primitive, a wrapper, a repeat."""

    kind: str  # "rule" | "prim" | "wrap" | "repeat" | "identity"
    name: str
    path: str
    alt: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    children: list[DNode] = field(default_factory=list)


@dataclass
class Derivation:
    """The genotype: every choice by path, plus the tree they expand to."""

    grammar: Grammar
    causal: bool
    choices: dict[str, Value]
    tree: DNode
    shared: dict[str, Value]

    @property
    def width(self) -> int:
        return int(self.shared["width"])

    def context(self) -> Context:
        return Context(d_model=self.width, causal=self.causal)

    def choice_paths(self) -> list[str]:
        return list(self.choices)


# ------------------------------------------------------------------------------ feasibility


class Feasibility:
    """Whether a rule or item can still derive a buildable model in a given context.

    Memoised on (item, shared values, causality, recursion counts); grammars are small and
    the shared assignments few, so the tables stay small.
    """

    def __init__(self, grammar: Grammar) -> None:
        self.g = grammar
        self.memo: dict[tuple, bool] = grammar._feasible_cache

    def rule(self, name: str, env: _Env, counts: tuple[tuple[str, int], ...]) -> bool:
        key = ("rule", name, env.key, counts)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        self.memo[key] = False  # a cycle reached while computing this is not (yet) feasible
        rule = self.g.rules[name]
        inner = _enter(rule.name, rule.max_depth, counts)
        ok = inner is not None and any(self.alt(a, env, inner) for a in rule.alts)
        self.memo[key] = ok
        return ok

    def alt(self, alt: Alternative, env: _Env, counts: tuple) -> bool:
        return all(self.item(i, env, counts) for i in alt.items)

    def item(self, item: Item, env: _Env, counts: tuple) -> bool:
        if isinstance(item, RuleRef):
            return self.rule(item.rule, env, counts)
        if isinstance(item, PrimCall):
            return self.call(item, env, counts)
        if isinstance(item, Wrap):
            return all(self.item(i, env, counts) for i in item.body)
        if isinstance(item, Repeat):
            return self.item(item.item, env, counts)
        return True  # Identity

    def call(self, call: PrimCall, env: _Env, counts: tuple) -> bool:
        key = ("call", id(call), env.key, counts)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.call_reason(call, env, counts) is None
            self.memo[key] = hit
        return hit

    def call_reason(self, call: PrimCall, env: _Env, counts: tuple) -> str | None:
        """Why `call` cannot be built in `env`, or None when some parameter assignment fits."""
        spec = REGISTRY[call.op]
        why = spec.allowed(env.ctx)
        if why:
            return why
        reasons: list[str] = []
        if self.complete(call, 0, {}, env, counts, reasons):
            return None
        return reasons[-1] if reasons else f"no parameters of {call.op} fit"

    def candidates(self, name: str, expr: Any, env: _Env) -> list[Value] | FloatRange:
        if isinstance(expr, Fixed):
            return [expr.value]
        if isinstance(expr, SharedRef):
            return (
                [env.shared[expr.name]]
                if expr.name in env.shared
                else list(shared_values(self.g, expr.name))
            )
        if isinstance(expr, Choose):
            values = expr.domain.finite_values()
            if values is None:
                assert isinstance(expr.domain, FloatRange)
                return expr.domain
            return list(values)
        raise TypeError(expr)

    def complete(
        self,
        call: PrimCall,
        index: int,
        chosen: dict[str, Any],
        env: _Env,
        counts: tuple,
        reasons: list[str] | None = None,
    ) -> bool:
        """Depth-first: can parameters index.. be assigned given `chosen`?"""
        if index == len(call.params):
            return True
        if reasons is None:  # the sampler asks the same questions over and over: memoise
            frozen = tuple((k, repr(v) if isinstance(v, dict) else v) for k, v in chosen.items())
            key = ("complete", id(call), index, env.key, counts, frozen)
            hit = self.memo.get(key)
            if hit is None:
                hit = self._complete(call, index, chosen, env, counts, None)
                self.memo[key] = hit
            return hit
        return self._complete(call, index, chosen, env, counts, reasons)

    def _complete(
        self,
        call: PrimCall,
        index: int,
        chosen: dict[str, Any],
        env: _Env,
        counts: tuple,
        reasons: list[str] | None,
    ) -> bool:
        name, expr = call.params[index]
        spec = REGISTRY[call.op]
        pspec = spec.param(name)
        if isinstance(expr, Slot):
            if not self.item(expr.item, env, counts):
                if reasons is not None:
                    reasons.append(f"{call.op}: no {name} block can be built")
                return False
            return self.complete(call, index + 1, {**chosen, name: expr}, env, counts, reasons)
        if pspec is not None and pspec.active is not None and not pspec.active(chosen):
            return self.complete(
                call, index + 1, {**chosen, name: pspec.default}, env, counts, reasons
            )
        cands = self.candidates(name, expr, env)
        probe: list[Value] = (
            [cands.low, cands.high] if isinstance(cands, FloatRange) else list(cands)
        )
        for value in probe:
            why = pspec.check(value, chosen, env.ctx) if pspec and pspec.check else None
            if why:
                if reasons is not None:
                    reasons.append(f"{call.op}: {name}={value!r}: {why}")
                continue
            if self.complete(call, index + 1, {**chosen, name: value}, env, counts, reasons):
                return True
        return False


@dataclass(frozen=True)
class _Env:
    shared: dict[str, Value]
    causal: bool
    ctx: Context
    key: tuple


def make_env(grammar: Grammar, shared: dict[str, Value], causal: bool) -> _Env:
    width = shared.get("width")
    ctx = Context(d_model=int(width) if width is not None else 1, causal=causal)
    key = (causal, tuple(sorted((k, repr(v)) for k, v in shared.items())))
    return _Env(shared, causal, ctx, key)


def shared_values(grammar: Grammar, name: str) -> tuple[Value, ...]:
    expr = grammar.shared[name].expr
    if isinstance(expr, Fixed):
        return (expr.value,)
    values = expr.domain.finite_values()
    if values is None:
        raise DerivationError(f"shared value ${name} must have finitely many values")
    return values


def _enter(name: str, max_depth: int | None, counts: tuple) -> tuple | None:
    """Recursion counts after entering rule `name`, or None when its bound is reached."""
    if max_depth is None:
        return counts
    d = dict(counts)
    n = d.get(name, 0) + 1
    if n > max_depth:
        return None
    d[name] = n
    return tuple(sorted(d.items()))


# -------------------------------------------------------------------------------- expansion

# Beyond this many combinations of the remaining shared values, their joint feasibility is not
# enumerated (each later value is still checked exactly when it is chosen).
_SHARED_ENUM_LIMIT = 512


class _Expander:
    def __init__(self, grammar: Grammar, chooser: Chooser, causal: bool) -> None:
        self.g = grammar
        self.chooser = chooser
        self.causal = causal
        self.feas = Feasibility(grammar)
        self.choices: dict[str, Value] = {}

    def pick(self, point: ChoicePoint) -> Value:
        if point.options is not None and len(point.options) == 1:
            return point.options[0]  # not a real choice: nothing recorded
        value = self.chooser.choose(point)
        if not point.admits(value):
            raise DerivationError(f"chooser returned {value!r} for {point.path}, not an option")
        self.choices[point.path] = value
        return value

    # ---- shared values: `width` first, each value kept only if the model stays buildable
    def shared(self) -> dict[str, Value]:
        names = sorted(self.g.shared, key=lambda n: n != "width")
        chosen: dict[str, Value] = {}
        for i, name in enumerate(names):
            rest = names[i + 1 :]
            universe = shared_values(self.g, name)
            options = tuple(v for v in universe if self._shared_ok({**chosen, name: v}, rest))
            if not options:
                raise DerivationError(
                    f"no value of ${name} leaves a buildable model "
                    f"({'causal' if self.causal else 'non-causal'} task)"
                )
            chosen[name] = self.pick(
                ChoicePoint(f"${name}", ChoiceKind.SHARED, options, universe=universe)
            )
        return chosen

    def _shared_ok(self, partial: dict[str, Value], rest: list[str]) -> bool:
        combos: list[dict[str, Value]] = [dict(partial)]
        for name in rest:
            values = shared_values(self.g, name)
            if len(combos) * len(values) > _SHARED_ENUM_LIMIT:
                break
            combos = [{**c, name: v} for c in combos for v in values]
        return any(
            self.feas.rule(self.g.start, make_env(self.g, c, self.causal), ()) for c in combos
        )

    def run(self) -> Derivation:
        shared = self.shared()
        self.env = make_env(self.g, shared, self.causal)
        tree = self.rule(self.g.start, self.g.start, ())
        return Derivation(self.g, self.causal, self.choices, tree, shared)

    def rule(self, name: str, path: str, counts: tuple) -> DNode:
        rule = self.g.rules[name]
        inner = _enter(name, rule.max_depth, counts)
        assert inner is not None, "feasibility pruning admitted a rule past its bound"
        viable = [i for i, a in enumerate(rule.alts) if self.feas.alt(a, self.env, inner)]
        if not viable:
            raise DerivationError(f"{path}: no alternative of {name} can be built here")
        index = int(
            self.pick(
                ChoicePoint(
                    path,
                    ChoiceKind.ALT,
                    tuple(viable),
                    weights=tuple(rule.alts[i].weight for i in viable),
                    labels=tuple(rule.alts[i].label for i in viable),
                    universe=tuple(range(len(rule.alts))),
                )
            )
        )
        alt = rule.alts[index]
        node = DNode("rule", name, path, alt=index)
        for item, seg in zip(alt.items, alt.segments, strict=True):
            node.children.extend(self.item(item, f"{path}.{seg}", inner))
        return node

    def item(self, item: Item, path: str, counts: tuple) -> list[DNode]:
        if isinstance(item, RuleRef):
            return [self.rule(item.rule, path, counts)]
        if isinstance(item, PrimCall):
            return [self.call(item, path, counts)]
        if isinstance(item, Wrap):
            node = DNode("wrap", item.op, path)
            for child, seg in zip(item.body, item.segments, strict=True):
                node.children.extend(self.item(child, f"{path}.{seg}", counts))
            return [node]
        if isinstance(item, Repeat):
            base = path
            n = int(
                self.pick(
                    ChoicePoint(
                        f"{base}#count",
                        ChoiceKind.COUNT,
                        tuple(range(item.low, item.high + 1)),
                        universe=tuple(range(item.low, item.high + 1)),
                    )
                )
            )
            node = DNode("repeat", item.item.segment, base, params={"count": n})
            for k in range(n):
                node.children.extend(self.item(item.item, f"{base}[{k}]", counts))
            return [node]
        assert isinstance(item, Identity)
        return [DNode("identity", "identity", path)]

    def call(self, call: PrimCall, path: str, counts: tuple) -> DNode:
        spec = REGISTRY[call.op]
        chosen: dict[str, Any] = {}
        for index, (name, expr) in enumerate(call.params):
            ppath = f"{path}.{name}"
            if isinstance(expr, Slot):
                (child,) = self.item(expr.item, ppath, counts)
                chosen[name] = _slot_value(child)
                continue
            pspec = spec.param(name)
            if pspec is not None and pspec.active is not None and not pspec.active(chosen):
                chosen[name] = pspec.default  # irrelevant here: no choice, one identity
                continue
            cands = self.feas.candidates(name, expr, self.env)

            def fits(
                value: Value,
                name: str = name,
                index: int = index,
                pspec: ParamSpec | None = pspec,
            ) -> bool:
                if pspec is not None and pspec.check and pspec.check(value, chosen, self.env.ctx):
                    return False
                rest = {**chosen, name: value}
                return self.feas.complete(call, index + 1, rest, self.env, counts)

            if isinstance(cands, FloatRange):
                value = self.pick(
                    ChoicePoint(
                        ppath, ChoiceKind.PARAM, None, low=cands.low, high=cands.high, log=cands.log
                    )
                )
            else:
                options = tuple(v for v in cands if fits(v))
                if not options:
                    raise DerivationError(f"{ppath}: no value fits")
                if isinstance(expr, Fixed | SharedRef):
                    value = options[0]  # not a choice here: fixed, or chosen once as $shared
                else:
                    value = self.pick(
                        ChoicePoint(ppath, ChoiceKind.PARAM, options, universe=tuple(cands))
                    )
            chosen[name] = value
        return DNode("prim", call.op, path, params=chosen)


def _slot_value(node: DNode) -> dict[str, Any]:
    """A slot's derived block as a nested {op, params} value (a single primitive)."""
    while node.kind == "rule":
        (node,) = node.children
    if node.kind != "prim":
        raise DerivationError(f"{node.path}: a slot must derive one primitive")
    return {"op": node.name, "params": dict(node.params)}


def expand(grammar: Grammar, chooser: Chooser, causal: bool) -> Derivation:
    """Expand the grammar, asking `chooser` at every choice point."""
    return _Expander(grammar, chooser, causal).run()


def sample(grammar: Grammar, rng: random.Random | int, causal: bool = True) -> Derivation:
    """Draw one architecture from the PCFG."""
    if isinstance(rng, int):
        rng = random.Random(rng)
    return expand(grammar, RandomChooser(rng), causal)


def replay(
    grammar: Grammar, choices: dict[str, Value], causal: bool, rng: random.Random | None = None
) -> Derivation:
    """Re-derive from stored choices. Without `rng` every choice must be present and valid
    (DerivationError otherwise); with it, missing or invalid ones are drawn afresh."""
    if rng is None:
        return expand(grammar, StrictReplay(choices), causal)
    return expand(grammar, ReplayChooser(choices, RandomChooser(rng)), causal)
