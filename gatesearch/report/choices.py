"""What the report analyses: the gating choices of the top trials against all of them, and
the kinds of failure."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx

from gatesearch.arch.describe import wrapper_of
from gatesearch.arch.graph import INPUT_OP, OUTPUT_OP
from gatesearch.registry import REGISTRY, PrimitiveSpec, Role

if TYPE_CHECKING:
    pass

from gatesearch.report.data import Ranked, RunData

# ------------------------------------------------------------------------- gating choices


def _nodes_with_nested(g: nx.DiGraph) -> Iterator[tuple[str, dict[str, Any]]]:
    """(op, params) of every node, and of primitives nested in params (a mixture's expert)."""

    def nested(op: str, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        yield op, params
        for value in params.values():
            if isinstance(value, dict) and isinstance(value.get("op"), str):
                yield from nested(value["op"], value.get("params") or {})

    for _, attrs in g.nodes(data=True):
        if attrs["op"] not in (INPUT_OP, OUTPUT_OP):
            yield from nested(attrs["op"], attrs["params"])


def _active_params(spec: PrimitiveSpec, params: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(name, value) of each parameter that matters here: written values, else the default;
    a parameter whose `active` says it plays no part (a gate activation without a gate) is
    left out, so it does not count as a choice."""
    for p in spec.params:
        if p.active is not None and not p.active(params):
            continue
        value = params.get(p.name, p.default)
        if value is not None:
            yield p.name, value


Picker = Callable[[str, PrimitiveSpec, dict[str, Any]], list[str]]


def _by_param(op: str, param: str) -> Picker:
    def pick(node_op: str, spec: PrimitiveSpec, params: dict[str, Any]) -> list[str]:
        if node_op != op:
            return []
        return [str(v) for name, v in _active_params(spec, params) if name == param]

    return pick


def _by_role(role: Role) -> Picker:
    def pick(node_op: str, spec: PrimitiveSpec, params: dict[str, Any]) -> list[str]:
        return [node_op] if spec.role is role else []

    return pick


def _skip_path(node_op: str, spec: PrimitiveSpec, params: dict[str, Any]) -> list[str]:
    return [wrapper_of(node_op)] if spec.role is Role.COMBINE else []


def _by_ref(role: Role) -> Picker:
    """Values of every parameter that names a primitive of `role` (act=, prune=)."""

    def pick(node_op: str, spec: PrimitiveSpec, params: dict[str, Any]) -> list[str]:
        return [
            str(v)
            for name, v in _active_params(spec, params)
            if (p := spec.param(name)) is not None and p.ref is role and not p.slot
        ]

    return pick


@dataclass(frozen=True)
class ChoiceFamily:
    """One panel of the choices plot: a family of gating decisions read off the graph."""

    title: str
    pick: Picker


FAMILIES: tuple[ChoiceFamily, ...] = (
    ChoiceFamily("attention gate position", _by_param("attention", "gate")),
    ChoiceFamily("sequence mixer / recurrence", _by_role(Role.MIXER)),
    ChoiceFamily("GLU variant", _by_param("glu", "variant")),
    ChoiceFamily("MoE router", _by_param("moe", "router")),
    ChoiceFamily("activation", _by_ref(Role.ACTIVATION)),
    ChoiceFamily("pruning gate", _by_ref(Role.PRUNING_GATE)),
    ChoiceFamily("skip path", _skip_path),
)


def choices_of(g: nx.DiGraph) -> dict[str, Counter[str]]:
    """Family title -> how many times this architecture takes each value (one count per
    attention layer for the gate position, per `act=` parameter for activations, ...)."""
    found: dict[str, Counter[str]] = {f.title: Counter() for f in FAMILIES}
    for op, params in _nodes_with_nested(g):
        spec = REGISTRY.get(op)
        if spec is None:
            continue
        for family in FAMILIES:
            found[family.title].update(family.pick(op, spec, params))
    return found


@dataclass(frozen=True)
class FamilyShares:
    """One family's values with their share in the top-k and in all architectures.

    A share is the fraction of the family's uses in an architecture that take the value
    (3 attention layers, one gated g1: 1/3), averaged over the architectures that use the
    family at all, so a deep model counts as much as a shallow one and the shares of a group
    add up to 1."""

    top_with: int  # top-k architectures that use the family
    all_with: int  # evaluated architectures that use the family
    rows: list[tuple[str, float, float]]  # (value, top share, all share), top share first


@dataclass(frozen=True)
class ChoiceShares:
    top_n: int  # 0: too few architectures for a top that is a strict minority
    all_n: int
    families: dict[str, FamilyShares]
    asked: int = 0  # the top-k asked for (--top); top_n is less when that is no minority

    @property
    def capped(self) -> bool:
        """Whether the minority rule, not a lack of ranked architectures, made the top
        smaller than asked: only then does the caption's reason hold."""
        return 0 < self.top_n < self.asked and self.top_n == minority_cap(self.all_n)


def top_minority(asked: int, ranked: int, evaluated: int) -> int:
    """How many of the best to set against all `evaluated`: `asked`, but always a strict
    minority (fewer than half), so the comparison can show something — the top 6 of 6 is
    the whole field. 0 when even one is no minority (two architectures or fewer)."""
    return max(0, min(asked, ranked, minority_cap(evaluated)))


def minority_cap(evaluated: int) -> int:
    """The largest top that is still fewer than half of `evaluated`."""
    return max(0, (evaluated - 1) // 2)


def _mean_shares(
    graphs: list[dict[str, Counter[str]]], family: str
) -> tuple[int, defaultdict[str, float]]:
    total: defaultdict[str, float] = defaultdict(float)
    users = 0
    for choices in graphs:
        counts = choices[family]
        n = sum(counts.values())
        if n:
            users += 1
            for value, k in counts.items():
                total[value] += k / n
    return users, defaultdict(float, {v: t / users for v, t in total.items()} if users else {})


def choice_shares(data: RunData, ranked: list[Ranked], top: int) -> ChoiceShares:
    everyone = [
        choices_of(g) for r in data.evaluated() if (g := data.graph(r.arch_hash)) is not None
    ]
    k = top_minority(top, len(ranked), len(everyone))
    best = [choices_of(g) for x in ranked[:k] if (g := data.graph(x.record.arch_hash)) is not None]
    if not best:  # nothing to set against the field: no panel, the page says why
        return ChoiceShares(0, len(everyone), {}, top)
    families: dict[str, FamilyShares] = {}
    for family in FAMILIES:
        all_with, all_share = _mean_shares(everyone, family.title)
        top_with, top_share = _mean_shares(best, family.title)
        values = set(all_share) | set(top_share)
        if not values:
            continue  # this space never offers the choice: no empty panel
        rows = [(v, top_share[v], all_share[v]) for v in values]
        rows.sort(key=lambda row: (-row[1], -row[2], row[0]))
        families[family.title] = FamilyShares(top_with, all_with, rows)
    return ChoiceShares(len(best), len(everyone), families, top)


# ------------------------------------------------------------------------- failures


_HEX = re.compile(r"\b[0-9a-f]{8,}\b")
_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(\.\d+)?(e[-+]?\d+)?")


def failure_kind(reason: str) -> str:
    """A failure reason with its specifics (hashes, numbers) blanked, so that 'out of memory
    at 2.00 GiB' and 'at 3.50 GiB' count as one kind."""
    text = _HEX.sub("…", reason.strip())
    return _NUMBER.sub("N", text)


def failure_kinds(data: RunData) -> list[tuple[str, int]]:
    counts = Counter(failure_kind(r.fail_reason or "failed") for r in data.failed())
    return counts.most_common()
