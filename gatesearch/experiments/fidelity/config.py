"""What a fidelity measurement is asked (`FidelityRequest`) and what it resolved and stored
(`FidelityConfig`, the `config` of fidelity.json and config.json), with the names of its runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gatesearch.budget import Budget
from gatesearch.errors import GatesearchError
from gatesearch.runs.config import DocReader, TrialResources
from gatesearch.tasks import TaskSpec

KIND = "fidelity"  # config.json's "kind": what tells a fidelity folder from a campaign's
PROXIES = ("self_tuning", "fixed", "params")
REPEAT = "full_repeat"  # (d): reported beside the proxies when the full runs are repeated
PROXY_TITLES = {
    "self_tuning": "(a) self-tuning proxy",
    "fixed": "(b) fixed hyperparameters",
    "params": "(c) parameter count",
    REPEAT: "(d) full, another seed",
}
# The same, short enough for a terminal table's first column.
PROXY_LABELS = {
    "self_tuning": "(a) self-tuning",
    "fixed": "(b) fixed hypers",
    "params": "(c) params",
    REPEAT: "(d) full, seed 2",
}
RUN_KINDS = ("full", REPEAT, "self_tuning", "fixed")  # dispatch order: the longest runs first
FULL_TRAINERS = ("self-tuning", "fixed")
RESULT = "fidelity.json"
PLOT = "fidelity.png"
FULL_BUDGET_FACTOR = 10
# The reference trains with a decaying learning rate, as `retrain` does. Measured on tiny
# Shakespeare (benchmarks/RESULTS.md): at a constant rate the end of training is noisy enough
# that two seeds of the same 20 full runs ranked each other at τ 0.54; decayed, at τ 0.84.
DEFAULT_FULL_OPTIONS: dict[str, Any] = {"lr_schedule": "cosine"}
# The small MQAR of the default campaign: a fidelity check that ends in minutes.
DEFAULT_PROXY_BUDGET = "20s"


class FidelityError(GatesearchError):
    """A fidelity request that cannot run as asked (user input)."""


@dataclass
class FidelityRequest:
    space: Path | None = None
    task: str = "mqar"
    task_params: dict[str, Any] = field(default_factory=dict)
    archs: int = 20
    proxy_budget: str | None = None  # None: DEFAULT_PROXY_BUDGET
    full_budget: str | None = None  # None: FULL_BUDGET_FACTOR x the proxy budget
    full_trainer: str = "self-tuning"
    runs_dir: Path = Path("runs")
    name: str | None = None
    workers: int = 2
    seed: int = 0
    address: str | None = None
    cpus: int = 1  # CPUs (torch threads) per training
    gpus: float = 0.0  # GPUs per training, fractions allowed
    max_params: int | None = None  # sample only architectures at most this large
    repeat_full: bool = False  # train the full budget twice (another seed): the ceiling (d)
    proxy: dict[str, Any] = field(default_factory=dict)  # ProxyConfig fields for (a) and (b)
    reference: Path | None = None  # an earlier fidelity run whose full-budget runs are reused
    # ProxyConfig fields for the full runs, over DEFAULT_FULL_OPTIONS.
    full: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FidelityConfig:
    """A fidelity run as resolved: checked once, written to config.json and fidelity.json."""

    name: str
    created: str
    space: str  # the space file as given; the folder's own copy is space.space
    task: TaskSpec  # as resolved (every param, defaults included)
    metric_name: str
    higher_is_better: bool
    archs: int
    proxy_budget: Budget
    full_budget: Budget
    full_trainer: str  # one of FULL_TRAINERS
    workers: int
    seed: int
    causal: bool
    max_params: int | None
    repeat_full: bool
    proxy: Mapping[str, Any]  # ProxyConfig fields of (a) and (b), as given
    full: Mapping[str, Any]  # ProxyConfig fields of the full runs, defaults included
    reference: str | None  # the earlier run whose full-budget runs were reused
    trial: TrialResources = field(default_factory=lambda: TrialResources(cpus=1, retries=1))
    kind: str = KIND

    @property
    def compared(self) -> tuple[str, ...]:
        """What is ranked against the full budget: the proxies, and the repeat when there is
        one."""
        return (*PROXIES, REPEAT) if self.repeat_full else PROXIES

    @property
    def full_self_tuning(self) -> bool:
        return self.full_trainer == "self-tuning"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, in the order gatesearch has always written it."""
        return {
            "kind": self.kind,
            "name": self.name,
            "created": self.created,
            "space": self.space,
            "task": self.task.to_dict(),
            "metric_name": self.metric_name,
            "higher_is_better": self.higher_is_better,
            "archs": self.archs,
            "proxy_budget": str(self.proxy_budget),
            "full_budget": str(self.full_budget),
            "full_trainer": self.full_trainer,
            "workers": self.workers,
            "seed": self.seed,
            "causal": self.causal,
            "max_params": self.max_params,
            "repeat_full": self.repeat_full,
            "proxy": dict(self.proxy),
            "full": dict(self.full),
            "reference": self.reference,
            "trial": {
                "cpus": self.trial.cpus,
                "gpus": self.trial.gpus,
                "timeout": self.trial.timeout,
                "retries": self.trial.retries,
            },
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str) -> FidelityConfig:
        """The config of a fidelity document; FidelityError naming `source` and the key."""
        if not isinstance(doc, dict):
            raise FidelityError(f"{source}: not a JSON object")
        get = DocReader(_migrate(doc), source, FidelityError)
        get.check_keys({f.name for f in fields(cls)})
        if get.doc["kind"] != KIND:
            raise get.fail("kind", repr(KIND))
        trainer = get.text("full_trainer")
        if trainer not in FULL_TRAINERS:
            raise get.fail("full_trainer", " or ".join(FULL_TRAINERS))
        return cls(
            kind=KIND,
            name=get.text("name"),
            created=get.text("created"),
            space=get.text("space"),
            task=get.task(),
            metric_name=get.text("metric_name"),
            higher_is_better=get.flag("higher_is_better"),
            archs=get.whole("archs"),
            proxy_budget=get.budget("proxy_budget"),
            full_budget=get.budget("full_budget"),
            full_trainer=trainer,
            workers=get.whole("workers"),
            seed=get.whole("seed"),
            causal=get.flag("causal"),
            max_params=get.optional_whole("max_params"),
            repeat_full=get.flag("repeat_full"),
            proxy=get.table("proxy"),
            full=get.table("full"),
            reference=get.optional_text("reference"),
            trial=get.trial(),
        )


def _migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """What fidelity folders written by earlier versions lack, filled as those versions behaved."""
    out = dict(doc)
    out.setdefault("max_params", None)  # before --max-params: no limit
    out.setdefault("repeat_full", False)  # before --repeat-full: one full run each
    out.setdefault("proxy", {})  # before --proxy-option: the trainer's defaults
    out.setdefault("full", {})  # before --full-option: the trainer's defaults (constant lr)
    out.setdefault("reference", None)
    # Before [trial] resources: one CPU per training, one retry.
    out.setdefault("trial", {"cpus": 1, "gpus": 0.0, "timeout": 0.0, "retries": 1})
    return out
