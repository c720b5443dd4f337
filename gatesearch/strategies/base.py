"""The strategy interface: ask for a derivation, tell the result.

A strategy proposes derivations for campaign slots (0, 1, 2, ...) and learns from finished
trials. It keeps no state that the store cannot give back: on resume the campaign builds a
fresh strategy and tells it every finished trial in completion order, which rebuilds
populations and ages exactly. Randomness comes from a per-slot seed, never from a generator
carried across slots, so the proposal for a slot depends only on the campaign seed, the slot
and what was told before it.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import optuna

from gatesearch.errors import GatesearchError
from gatesearch.grammar import Derivation, Grammar, replay


class StrategyError(GatesearchError, ValueError):
    """A bad strategy preset: unknown strategy, unknown or ill-typed option."""


@dataclass(frozen=True)
class Observation:
    """A finished trial as strategies see it. `values` is None for a failed trial; a
    negative `slot` marks a proposal turned down over --max-params (never evaluated)."""

    slot: int
    choices: dict[str, Any]
    values: tuple[float, ...] | None
    # The derivation when the campaign still holds it; else strategies replay `choices`.
    derivation: Derivation | None = None
    # Multi-fidelity: the rung `values` were scored at (0 without a schedule). A trial is
    # told once per rung it reaches, its slot the same each time.
    rung: int = 0


@dataclass
class Proposal:
    """A derivation for one slot, and the Optuna trial it was suggested through, if any."""

    derivation: Derivation
    trial: optuna.trial.Trial | None = None


class Strategy(ABC):
    """Ask/tell over derivations of one grammar.

    Subclasses declare `name`, an `Options` dataclass (the preset's `[options]` table, each
    field with a default) and `ask`; `tell` is optional.
    """

    name: ClassVar[str]

    @dataclass(frozen=True)
    class Options:
        pass

    # Whether proposals come through Optuna trials (the campaign then records into them).
    uses_optuna: ClassVar[bool] = False

    def __init__(
        self,
        grammar: Grammar,
        causal: bool,
        directions: list[str],
        options: Options,
    ) -> None:
        self.grammar = grammar
        self.causal = causal
        self.directions = directions
        self.options = options

    @abstractmethod
    def ask(self, slot: int, seed: int, study: optuna.Study) -> Proposal:
        """A derivation for `slot`, drawing randomness only from `seed`."""

    def ask_fixed(
        self, slot: int, seed: int, study: optuna.Study, choices: dict[str, Any]
    ) -> Proposal:
        """The derivation of `choices` (a seed architecture, a re-run after a crash)."""
        return Proposal(replay(self.grammar, choices, self.causal, random.Random(seed)))

    def tell(self, obs: Observation) -> None:  # noqa: B027 - optional hook
        """Learn from a finished trial (completed, failed or duplicate)."""


def parse_options(cls: type[Strategy], table: dict[str, Any], where: str) -> Any:
    """Build `cls.Options` from a preset table, naming any unknown or ill-typed key."""
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    for key, value in table.items():
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise StrategyError(
                f"{where}: unknown option {key!r} for strategy {cls.name} (known: {known})"
            )
        default = fields[key].default
        ok = isinstance(value, type(default)) or (
            isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)
        )
        if isinstance(default, int) and isinstance(value, bool) and not isinstance(default, bool):
            ok = False
        if not ok:
            raise StrategyError(
                f"{where}: option {key} = {value!r} should be a {type(default).__name__}"
            )
    opts = cls.Options(**table)
    check = getattr(opts, "check", None)
    if check is not None:
        problem = check()
        if problem:
            raise StrategyError(f"{where}: {problem}")
    return opts
