"""The typed run config: a run folder written before it existed still opens and reads the same;
config.json is written byte for byte as before; bad documents fail with the key's name."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from gatesearch.budget import parse_budget
from gatesearch.runs.config import Direction, RunConfig, RunConfigError
from gatesearch.runs.ranking import summary
from gatesearch.runs.store import CONFIG, RunStore, StoreError
from gatesearch.tasks import TaskSpec

# A 4-trial `null` campaign written by gatesearch 0.1.0 before the config was typed (machine
# paths replaced by the repository-relative ones).
FIXTURE = Path(__file__).parent / "fixtures" / "run_0_1_0"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "run_0_1_0"
    shutil.copytree(FIXTURE, run)
    return run


def test_a_run_written_before_the_typed_config_opens_and_reads_the_same(old_run):
    with RunStore.open(old_run, writer=False) as store:
        config = store.config
        info = summary(store)
    assert config.task == TaskSpec("null", {}) and config.budget == parse_budget("1steps")
    assert config.directions == (Direction.MINIMIZE,) and config.signs == (1.0,)
    assert config.trial.cpus == 1 and config.max_params is None and config.proxy == {}
    assert info["finished"] == 4 and info["target"] == 4 and info["best"] is not None
    # What `status --json` shows of the config is what the document holds.
    doc = json.loads((old_run / CONFIG).read_text())
    for key in ("budget", "objectives", "directions", "metric_name", "strategy", "name"):
        assert info[key] == doc[key], key


def test_config_json_is_written_as_it_was(old_run):
    text = (old_run / CONFIG).read_text()
    config = RunConfig.from_dict(json.loads(text), "config.json")
    assert json.dumps(config.to_dict(), indent=2) + "\n" == text
    assert RunConfig.from_dict(config.to_dict(), "again") == config


def test_older_configs_are_migrated_in_one_place(old_run):
    doc = json.loads((old_run / CONFIG).read_text())
    doc["task"] = "null"  # before task params
    for key in ("metric_name", "higher_is_better", "max_params", "proxy"):
        del doc[key]  # before tasks named their metric, before --max-params, --proxy-option
    doc["trial"]["timeout"] = None
    config = RunConfig.from_dict(doc, "old")
    assert config.task == TaskSpec("null", {}) and config.metric_name == "metric"
    assert config.higher_is_better is False and config.max_params is None
    assert config.proxy == {} and config.trial.timeout == 0.0


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.update(budgets="1steps"), "unknown key(s) 'budgets'"),
        (lambda d: d.pop("seed"), "missing key(s) 'seed'"),
        (lambda d: d.update(trials="4"), "'trials' must be a whole number"),
        (lambda d: d.update(trials=True), "'trials' must be a whole number"),
        (lambda d: d.update(causal=1), "'causal' must be true or false"),
        (lambda d: d.update(directions=["up"]), "'directions' holds 'up'"),
        (lambda d: d.update(directions=["minimize", "maximize"]), "pair up"),
        (lambda d: d.update(budget="3 weeks"), "'budget'"),
        (lambda d: d.update(task={"name": "null", "param": {}}), "'task'"),
        (lambda d: d["trial"].update(cpus=-1), "'trial' cpus must be a number >= 0"),
        (lambda d: d["trial"].pop("gpus"), "'trial' must be a table of"),
        (lambda d: d.update(proxy=[1]), "'proxy' must be a table"),
    ],
)
def test_a_damaged_config_fails_naming_the_key_and_changes_nothing(old_run, change, needle):
    path = old_run / CONFIG
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    before = {p: p.read_bytes() for p in old_run.rglob("*") if p.is_file()}
    with pytest.raises(StoreError) as caught:
        RunStore.open(old_run, writer=True)
    message = str(caught.value)
    assert needle in message and str(path) in message and "\n" not in message
    assert {p: p.read_bytes() for p in old_run.rglob("*") if p.is_file()} == before
    with pytest.raises(RunConfigError):
        RunConfig.from_dict(doc, "doc")


def test_the_config_is_frozen(old_run):
    with RunStore.open(old_run, writer=False) as store:
        config = store.config
    with pytest.raises(AttributeError):
        config.workers = 3  # type: ignore[misc]
    assert replace(config, address="ray://x:10001").address == "ray://x:10001"


def test_a_schedule_is_stored_and_read_back_only_when_staged(old_run):
    from gatesearch.runs.schedule import Schedule, ScheduleKind

    doc = json.loads((old_run / CONFIG).read_text())
    assert "schedule" not in doc  # written before multi-fidelity: none
    assert RunConfig.from_dict(doc, "old").schedule == Schedule()
    asha = {"kind": "asha", "min_budget": "2steps", "eta": 2}
    config = RunConfig.from_dict({**doc, "schedule": asha}, "new")
    assert config.schedule == Schedule(ScheduleKind.ASHA, parse_budget("2steps"), 2)
    assert config.to_dict()["schedule"] == asha
    for bad, needle in [
        ({"kind": "bohb"}, "schedule 'bohb' is not one of none, asha, hyperband"),
        ({"kind": "asha", "eta": 1}, "eta must be a whole number >= 2"),
        ({"kind": "asha", "min_budget": "soon"}, "min_budget"),
        ({"kind": "asha", "rungs": 3}, "unknown key(s) 'rungs'"),
    ]:
        with pytest.raises(RunConfigError, match=re.escape(needle)):
            RunConfig.from_dict({**doc, "schedule": bad}, "new")


def test_the_default_campaign_is_named_apart_from_task_mqar(tmp_path):
    from gatesearch.runs.request import RunRequest, prepare_run

    default, _, _ = prepare_run(RunRequest(runs_dir=tmp_path))
    full, _, _ = prepare_run(RunRequest(runs_dir=tmp_path, task="mqar"))
    assert default.name.startswith("evolution-mqar-small-")
    assert full.name.startswith("evolution-mqar-2")  # a date follows
