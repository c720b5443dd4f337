"""A campaign's configuration as `config.json` holds it: one frozen, typed `RunConfig`.

Every reader goes through `RunConfig.from_dict`, which checks each field's type once, fills
what older run folders lack (their migrations are here and nowhere else) and refuses keys it
does not know by name, so a renamed key fails where it is read, not far from its cause.
`to_dict` writes the same JSON, key for key and in the same order, as the dict it replaced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from gatesearch.budget import Budget, BudgetError, parse_budget
from gatesearch.errors import GatesearchError
from gatesearch.runs.schedule import Schedule, ScheduleError
from gatesearch.tasks import TaskError, TaskSpec
from gatesearch.tasks.suite import objective_member

FORMAT = 1


class RunConfigError(GatesearchError):
    """A config.json that is not a campaign's config as gatesearch writes it (one line)."""


class Direction(StrEnum):
    """Optuna's direction of one objective."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    @property
    def sign(self) -> float:
        """+1 for a minimised objective, −1 for a maximised one: sign·value is minimised."""
        return 1.0 if self is Direction.MINIMIZE else -1.0

    @classmethod
    def of(cls, objective: str, higher_is_better: bool) -> Direction:
        """The direction of `objective` on a task whose metric is `higher_is_better`: only the
        metric itself, and a suite member's score (on [0, 1], higher better), can be
        maximised (params, FLOPs and latency are costs)."""
        if objective_member(objective) is not None:
            return cls.MAXIMIZE
        return cls.MAXIMIZE if objective == "metric" and higher_is_better else cls.MINIMIZE


@dataclass(frozen=True)
class TrialResources:
    """A preset's `[trial]` table: what each trial gets and how long it may take."""

    cpus: int = 1  # CPUs per trial; torch in the trial uses this many threads
    gpus: float = 0.0  # GPUs per trial, fractions allowed
    timeout: float = 0.0  # seconds from its start to cancellation and failure; 0: none
    retries: int = 1  # re-runs of a trial whose worker or node died


@dataclass(frozen=True)
class RunConfig:
    """What `gatesearch run` resolved; `resume`, `status`, `report`, `retrain` read it back."""

    name: str
    created: str
    space: str  # the space file as given; the run's own copy is space.space
    strategy: str
    preset: str  # where the preset came from; the run's own copy is strategy.toml
    options: Mapping[str, Any]
    task: TaskSpec  # as resolved (every param, defaults included)
    metric_name: str
    higher_is_better: bool
    budget: Budget
    trials: int
    workers: int
    seed: int
    objectives: tuple[str, ...]
    directions: tuple[Direction, ...]
    causal: bool
    trial: TrialResources
    seed_archs: tuple[Mapping[str, Any], ...]
    storage: str | None
    address: str | None
    max_params: int | None
    # Only the proxy options given: the trainer's defaults fill the rest.
    proxy: Mapping[str, Any] = field(default_factory=dict)
    # Multi-fidelity: how trials train over rungs (`none`: each trains the budget once).
    schedule: Schedule = field(default_factory=Schedule)
    format: int = FORMAT

    @property
    def signs(self) -> tuple[float, ...]:
        """Per objective, +1 (minimised) or −1 (maximised)."""
        return tuple(d.sign for d in self.directions)

    def to_dict(self) -> dict[str, Any]:
        """config.json's document (JSON-ready, in the order gatesearch has always written)."""
        return {
            "format": self.format,
            "name": self.name,
            "created": self.created,
            "space": self.space,
            "strategy": self.strategy,
            "preset": self.preset,
            "options": dict(self.options),
            "task": self.task.to_dict(),
            "metric_name": self.metric_name,
            "higher_is_better": self.higher_is_better,
            "budget": str(self.budget),
            "trials": self.trials,
            "workers": self.workers,
            "seed": self.seed,
            "objectives": list(self.objectives),
            "directions": [str(d) for d in self.directions],
            "causal": self.causal,
            "trial": {
                "cpus": self.trial.cpus,
                "gpus": self.trial.gpus,
                "timeout": self.trial.timeout,
                "retries": self.trial.retries,
            },
            "seed_archs": [dict(s) for s in self.seed_archs],
            "storage": self.storage,
            "address": self.address,
            "max_params": self.max_params,
            "proxy": dict(self.proxy),
            # Only when staged: a campaign without rungs writes config.json as before them.
            **({"schedule": self.schedule.to_dict()} if self.schedule.staged else {}),
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str) -> RunConfig:
        """The config of a config.json document; RunConfigError naming `source` and the key."""
        if not isinstance(doc, dict):
            raise RunConfigError(f"{source}: not a JSON object")
        get = DocReader(_migrate(doc), source)
        get.check_keys({f.name for f in fields(cls)})
        objectives = tuple(get.list_of("objectives", str))
        directions = tuple(get.direction(d) for d in get.list_of("directions", str))
        if not objectives or len(directions) != len(objectives):
            raise RunConfigError(f"{source}: 'objectives' and 'directions' must pair up")
        return cls(
            format=get.whole("format"),
            name=get.text("name"),
            created=get.text("created"),
            space=get.text("space"),
            strategy=get.text("strategy"),
            preset=get.text("preset"),
            options=get.table("options"),
            task=get.task(),
            metric_name=get.text("metric_name"),
            higher_is_better=get.flag("higher_is_better"),
            budget=get.budget(),
            trials=get.whole("trials"),
            workers=get.whole("workers"),
            seed=get.whole("seed"),
            objectives=objectives,
            directions=directions,
            causal=get.flag("causal"),
            trial=get.trial(),
            seed_archs=tuple(get.list_of("seed_archs", dict)),
            storage=get.optional_text("storage"),
            address=get.optional_text("address"),
            max_params=get.optional_whole("max_params"),
            proxy=get.table("proxy"),
            schedule=get.schedule(),
        )


def _migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """What run folders written by earlier versions lack, filled as those versions behaved."""
    out = dict(doc)
    if isinstance(out.get("task"), str):  # before task params: a bare task name
        out["task"] = {"name": out["task"], "params": {}}
    # Before tasks named their metric, the objective was a loss, minimised.
    out.setdefault("metric_name", "metric")
    out.setdefault("higher_is_better", False)
    out.setdefault("max_params", None)  # before --max-params: no limit
    if out.get("proxy") is None:  # before --proxy-option: the trainer's defaults
        out["proxy"] = {}
    out.setdefault("schedule", Schedule().to_dict())  # before multi-fidelity: none
    return out


class DocReader:
    """Typed reads of one JSON document's keys, each failing with the source and the key as
    `error` (a GatesearchError: one line for the user)."""

    def __init__(
        self, doc: dict[str, Any], source: str, error: type[GatesearchError] = RunConfigError
    ) -> None:
        self.doc, self.source, self.error = doc, source, error

    def fail(self, key: str, what: str) -> GatesearchError:
        return self.error(f"{self.source}: {key!r} must be {what}, got {self.doc[key]!r}")

    def check_keys(self, known: set[str]) -> None:
        """Refuse, by name, keys not in `known` and keys of it that are missing."""
        unknown = sorted(set(self.doc) - known)
        if unknown:
            raise self.error(f"{self.source}: unknown key(s) {', '.join(map(repr, unknown))}")
        missing = sorted(known - set(self.doc))
        if missing:
            raise self.error(f"{self.source}: missing key(s) {', '.join(map(repr, missing))}")

    def text(self, key: str) -> str:
        value = self.doc[key]
        if not isinstance(value, str):
            raise self.fail(key, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.doc[key] is None else self.text(key)

    def whole(self, key: str) -> int:
        value = self.doc[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, "a whole number")
        return value

    def optional_whole(self, key: str) -> int | None:
        return None if self.doc[key] is None else self.whole(key)

    def flag(self, key: str) -> bool:
        value = self.doc[key]
        if not isinstance(value, bool):
            raise self.fail(key, "true or false")
        return value

    def table(self, key: str) -> dict[str, Any]:
        value = self.doc[key]
        if not isinstance(value, dict):
            raise self.fail(key, "a table")
        return dict(value)

    def list_of(self, key: str, kind: type) -> list[Any]:
        value = self.doc[key]
        if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
            raise self.fail(key, f"a list of {kind.__name__}")
        return value

    def direction(self, text: str) -> Direction:
        try:
            return Direction(text)
        except ValueError:
            raise self.error(
                f"{self.source}: 'directions' holds {text!r} (minimize or maximize)"
            ) from None

    def task(self) -> TaskSpec:
        value = self.doc["task"]
        if not isinstance(value, dict):
            raise self.fail("task", "a task spec")
        try:
            return TaskSpec.from_dict(value)
        except TaskError as exc:
            raise self.error(f"{self.source}: 'task': {exc}") from None

    def budget(self, key: str = "budget") -> Budget:
        text = self.text(key)
        try:
            return parse_budget(text)
        except BudgetError as exc:
            raise self.error(f"{self.source}: {key!r}: {exc}") from None

    def schedule(self) -> Schedule:
        try:
            return Schedule.from_dict(self.table("schedule"), self.source)
        except ScheduleError as exc:
            raise self.error(str(exc)) from None

    def trial(self) -> TrialResources:
        value = self.table("trial")
        if value.get("timeout", 0) is None:  # early runs stored "no timeout" as null
            value["timeout"] = 0.0
        known = {f.name for f in fields(TrialResources)}
        if set(value) != known:
            raise self.fail("trial", f"a table of {', '.join(sorted(known))}")
        for key, number in value.items():
            ok = isinstance(number, int | float) and not isinstance(number, bool)
            if not ok or not math.isfinite(number) or number < 0:
                raise self.error(
                    f"{self.source}: 'trial' {key} must be a number >= 0, got {number!r}"
                )
        return TrialResources(**value)
