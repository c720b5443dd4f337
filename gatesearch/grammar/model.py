"""The compiled grammar: a typed probabilistic context-free grammar over registered primitives."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from gatesearch.grammar.errors import Loc
from gatesearch.registry import Domain, Value


class Causality(Enum):
    ANY = "any"
    CAUSAL = "causal"
    NONCAUSAL = "noncausal"

    def admits(self) -> tuple[bool, ...]:
        """The values of Context.causal a space written for this setting must support."""
        return {
            Causality.ANY: (True, False),
            Causality.CAUSAL: (True,),
            Causality.NONCAUSAL: (False,),
        }[self]


# ------------------------------------------------------------------------------ parameter values


@dataclass(frozen=True)
class Fixed:
    value: Value
    loc: Loc


@dataclass(frozen=True)
class Choose:
    domain: Domain
    loc: Loc


@dataclass(frozen=True)
class SharedRef:
    name: str
    loc: Loc


@dataclass(frozen=True)
class Slot:
    """A parameter whose value is itself a derived primitive (the experts of a mixture)."""

    item: Item
    loc: Loc


ParamExpr = Fixed | Choose | SharedRef | Slot


# ------------------------------------------------------------------------------------- items


@dataclass(frozen=True)
class RuleRef:
    rule: str
    loc: Loc

    @property
    def segment(self) -> str:
        return self.rule


@dataclass(frozen=True)
class PrimCall:
    """A leaf primitive with its parameter expressions (grammar-given or registry defaults)."""

    op: str
    params: tuple[tuple[str, ParamExpr], ...]
    loc: Loc

    @property
    def segment(self) -> str:
        return self.op


@dataclass(frozen=True)
class Wrap:
    """A wrapper (residual, highway) around a body sequence."""

    op: str
    body: tuple[Item, ...]
    loc: Loc
    # Path segment of each body item, as for an Alternative's items.
    segments: tuple[str, ...] = ()

    @property
    def segment(self) -> str:
        return self.op


@dataclass(frozen=True)
class Repeat:
    """`repeat(item, lo..hi)`: lo to hi copies of item, each derived independently."""

    item: Item
    low: int
    high: int
    loc: Loc

    @property
    def segment(self) -> str:
        return self.item.segment


@dataclass(frozen=True)
class Identity:
    loc: Loc

    @property
    def segment(self) -> str:
        return "identity"


Item = RuleRef | PrimCall | Wrap | Repeat | Identity


@dataclass(frozen=True)
class Alternative:
    weight: float
    items: tuple[Item, ...]
    # Path segment of each item: its name, with [k] when the name occurs more than once.
    segments: tuple[str, ...]
    label: str
    loc: Loc


@dataclass(frozen=True)
class Rule:
    name: str
    alts: tuple[Alternative, ...]
    max_depth: int | None
    loc: Loc


@dataclass(frozen=True)
class SharedDecl:
    name: str
    expr: Fixed | Choose
    loc: Loc


@dataclass
class Grammar:
    file: str
    causality: Causality
    shared: dict[str, SharedDecl]
    rules: dict[str, Rule]
    start: str
    source: str = ""
    _feasible_cache: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        from pathlib import Path

        return Path(self.file).stem
