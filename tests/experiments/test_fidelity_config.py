"""The fidelity config: typed, checked once, old folders still read, unknown keys refused;
the space a task is studied in by default."""

from __future__ import annotations

import json

import pytest
from classifydata import write_classify_npz

from gatesearch.arch.space import SPACES_DIR
from gatesearch.budget import parse_budget
from gatesearch.experiments.fidelity import (
    FidelityConfig,
    FidelityError,
    FidelityRequest,
    prepare,
)
from gatesearch.runs.config import TrialResources
from gatesearch.tasks import TaskSpec

# config.json as the first version of `gatesearch fidelity` wrote it (before --max-params,
# --repeat-full, --proxy-option, --full-option, --reference and per-training resources).
FIRST = {
    "kind": "fidelity",
    "name": "fidelity-mqar-20261122-101500",
    "created": "2026-11-22T10:15:00",
    "space": "spaces/gated_lm.space",
    "task": {"name": "mqar", "params": {"vocab": 64, "length": 32, "pairs": 4}},
    "metric_name": "accuracy",
    "higher_is_better": True,
    "archs": 20,
    "proxy_budget": "20s",
    "full_budget": "200s",
    "full_trainer": "self-tuning",
    "workers": 2,
    "seed": 0,
    "causal": True,
}


def test_a_first_version_config_reads_as_those_runs_behaved() -> None:
    config = FidelityConfig.from_dict(json.loads(json.dumps(FIRST)), "config.json")
    assert config.task == TaskSpec("mqar", {"vocab": 64, "length": 32, "pairs": 4})
    assert config.proxy_budget == parse_budget("20s") and config.full_budget == parse_budget("200s")
    assert config.max_params is None and not config.repeat_full and config.reference is None
    assert config.proxy == {} and config.full == {}  # the trainer's defaults then
    assert config.trial == TrialResources(cpus=1, gpus=0.0, timeout=0.0, retries=1)
    assert config.compared == ("self_tuning", "fixed", "params")


def test_the_document_round_trips_key_for_key() -> None:
    config = FidelityConfig.from_dict(FIRST, "config.json")
    doc = config.to_dict()
    assert list(doc)[: len(FIRST)] == list(FIRST)  # the order it has always been written in
    assert FidelityConfig.from_dict(doc, "again") == config
    assert json.loads(json.dumps(doc)) == doc


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"tau": 0.5}, "unknown key(s) 'tau'"),
        ({"kind": "campaign"}, "'kind' must be 'fidelity'"),
        ({"archs": "20"}, "'archs' must be a whole number"),
        ({"full_budget": "ten"}, "'full_budget'"),
        ({"full_trainer": "grid"}, "'full_trainer' must be self-tuning or fixed"),
        ({"task": {"name": 3}}, "'task'"),
        ({"trial": {"cpus": -1, "gpus": 0, "timeout": 0, "retries": 1}}, "cpus must be"),
    ],
    ids=["unknown", "kind", "archs", "budget", "trainer", "task", "trial"],
)
def test_a_bad_document_is_refused_by_key(change: dict, needle: str) -> None:
    with pytest.raises(FidelityError) as err:
        FidelityConfig.from_dict({**FIRST, **change}, "runs/x/config.json")
    assert needle in str(err.value) and str(err.value).startswith("runs/x/config.json: ")


def test_a_missing_key_is_named() -> None:
    doc = {k: v for k, v in FIRST.items() if k != "seed"}
    with pytest.raises(FidelityError, match="missing key\\(s\\) 'seed'"):
        FidelityConfig.from_dict(doc, "config.json")


def test_fidelity_on_classify_samples_the_noncausal_space_by_default(tmp_path) -> None:
    data = str(write_classify_npz(tmp_path / "cls.npz"))
    req = FidelityRequest(task="classify", task_params={"path": data}, archs=3, runs_dir=tmp_path)
    config, _, archs = prepare(req)
    assert config.space == str(SPACES_DIR / "gated_classify.space") and config.causal is False
    assert len(archs) == 3 and not any(a.derivation.causal for a in archs)
