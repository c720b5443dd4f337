"""Strategy presets: a TOML file (or a name in the shipped strategies/ folder) naming a
strategy, its options and the resources of each trial."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatesearch.grammar import Grammar
from gatesearch.runs.config import TrialResources
from gatesearch.runs.schedule import Schedule, ScheduleError
from gatesearch.shipped import shipped_dir
from gatesearch.strategies import STRATEGIES, Strategy, StrategyError, parse_options

PRESETS_DIR = shipped_dir("strategies")
DEFAULT_PRESET = "evolution"


# ---------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    strategy: str
    options: dict[str, Any]
    trial: TrialResources
    text: str
    source: str
    schedule: Schedule = field(default_factory=Schedule)


_PRESET_KEYS = {"strategy", "description", "options", "trial", "schedule"}


def resolve_preset_path(spec: str | Path | None) -> Path:
    """A preset file, or a preset name (`tpe`) found in the bundled strategies/ folder."""
    if spec is None:
        spec = DEFAULT_PRESET
    path = Path(spec)
    if path.suffix == ".toml" or path.exists() or os.sep in str(spec):
        if not path.is_file():
            raise StrategyError(f"strategy preset {path}: no such file")
        return path
    bundled = PRESETS_DIR / f"{spec}.toml"
    if not bundled.is_file():
        names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
        raise StrategyError(
            f"unknown strategy preset {spec!r}: give a .toml file or one of {names}"
        )
    return bundled


def parse_preset(text: str, source: str) -> Preset:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StrategyError(f"{source}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in _PRESET_KEYS:
            raise StrategyError(
                f"{source}: unknown key {key!r} (known: {', '.join(sorted(_PRESET_KEYS))})"
            )
    name = doc.get("strategy")
    if not isinstance(name, str):
        raise StrategyError(f'{source}: needs `strategy = "<name>"` ({", ".join(STRATEGIES)})')
    if name not in STRATEGIES:
        raise StrategyError(
            f"{source}: unknown strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})"
        )
    options = doc.get("options", {})
    trial = doc.get("trial", {})
    if not isinstance(options, dict) or not isinstance(trial, dict):
        raise StrategyError(f"{source}: [options] and [trial] must be tables")
    parse_options(STRATEGIES[name], options, source)  # validated now, rebuilt on use
    known = TrialResources.__dataclass_fields__
    for key, value in trial.items():
        if key not in known:
            raise StrategyError(
                f"{source}: unknown key {key!r} in [trial] (known: {', '.join(known)})"
            )
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < 0
        ):
            raise StrategyError(f"{source}: [trial] {key} = {value!r} must be a number >= 0")
    resources = TrialResources(**trial)
    if resources.cpus < 1 or resources.cpus != int(resources.cpus):
        raise StrategyError(f"{source}: [trial] cpus must be a whole number >= 1")
    table = doc.get("schedule", {})
    if not isinstance(table, dict):
        raise StrategyError(f"{source}: [schedule] must be a table")
    try:
        schedule = Schedule.from_dict(table, source)
    except ScheduleError as exc:
        raise StrategyError(str(exc)) from None
    return Preset(name, options, resources, text, source, schedule)


def load_preset(path: Path) -> Preset:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StrategyError(f"{path}: cannot read: {exc}") from None
    return parse_preset(text, str(path))


def make_strategy(
    preset: Preset, grammar: Grammar, causal: bool, directions: list[str]
) -> Strategy:
    cls = STRATEGIES[preset.strategy]
    return cls(grammar, causal, directions, parse_options(cls, preset.options, preset.source))
