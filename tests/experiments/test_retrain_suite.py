"""How `retrain` scores a suite's finalist, on hand-made member results (no training): the
per-seed weighted mean of member scores on each split, the mean over seeds and its range,
and which `--dropout` a run gets by default."""

from __future__ import annotations

import json
import math

import networkx as nx
import pytest
from optuna.trial import TrialState
from suitefiles import COPY_WEIGHT, TWO_MEMBERS

from gatesearch.arch.space import load_space, sample_architectures
from gatesearch.budget import parse_budget
from gatesearch.experiments.retrain import (
    DEFAULT_DROPOUTS,
    DEFAULT_PATIENCE,
    METRICS,
    RETRAINED,
    SUITE_DROPOUTS,
    SUITE_PATIENCE,
    MemberResult,
    RetrainJob,
    combine_suite,
    default_dropouts,
    default_patience,
    keep_members,
    suite_metrics,
)
from gatesearch.runs.request import RunRequest, package_versions, prepare_run
from gatesearch.runs.store import RunStore, TrialRecord
from gatesearch.tasks import TaskSpec
from gatesearch.tasks.suite import parse_suite

SUITE = parse_suite(TWO_MEMBERS, "two.toml")


def trained(valid: float, test: float, loss: float = 1.0, steps: int = 10) -> dict[str, object]:
    """A member's retrain metrics as `retrain_body` writes them, with the fields read."""
    return {
        "valid": {"metric": valid, "loss": loss},
        "test": {"metric": test, "loss": 2 * loss},
        "best_step": steps // 2,
        "params": 100 * steps,
        "steps": steps,
        "tokens": 16 * steps,
        "stopped_early": False,
        "eval_points": 4,
        "patience": 0,
        "schedule": "cosine",
        "pruned": False,
        "cpu_seconds": 1.0,
    }


def test_a_finalists_score_is_the_weighted_mean_per_seed_then_the_mean_over_seeds():
    # (valid, test) accuracies per seed; copy weighs COPY_WEIGHT: seed 11 valid is
    # (0.2 + 2·0.5)/3 = 0.4, seed 12's (0.8 + 2·0.6)/3 = 0.667.
    kept = {
        (0, "in_context_recall"): MemberResult(11, "tuned", trained(0.2, 0.1)),
        (0, "copy"): MemberResult(11, "dropout 0.25", trained(0.5, 0.4, steps=20)),
        (1, "in_context_recall"): MemberResult(12, "tuned", trained(0.8, 0.7)),
        (1, "copy"): MemberResult(12, "tuned", trained(0.6, 0.3)),
    }
    m = suite_metrics(SUITE, kept, cpu_seconds=7.0)
    w = 1 + COPY_WEIGHT
    seed_valid = [(0.2 + COPY_WEIGHT * 0.5) / w, (0.8 + COPY_WEIGHT * 0.6) / w]
    seed_test = [(0.1 + COPY_WEIGHT * 0.4) / w, (0.7 + COPY_WEIGHT * 0.3) / w]
    assert m["seeds"] == [11, 12]
    assert [s["valid"]["metric"] for s in m["per_seed"]] == pytest.approx(seed_valid)
    assert [s["test"]["metric"] for s in m["per_seed"]] == pytest.approx(seed_test)
    assert m["valid"]["metric"] == pytest.approx(sum(seed_valid) / 2)
    assert m["test"]["metric"] == pytest.approx(sum(seed_test) / 2)
    assert (m["valid"]["min"], m["valid"]["max"]) == pytest.approx(tuple(seed_valid))
    assert (m["test"]["min"], m["test"]["max"]) == pytest.approx(tuple(sorted(seed_test)))
    # Losses over each member's chance loss, weighted alike: a uniform guess over recall's 8
    # classes and copying's 6 (4 data tokens, the blank and the marker).
    chance = {"in_context_recall": math.log(8), "copy": math.log(6)}
    loss = (1.0 / chance["in_context_recall"] + COPY_WEIGHT / chance["copy"]) / w
    assert m["valid"]["loss"] == pytest.approx(loss)
    assert m["test"]["loss"] == pytest.approx(2 * loss)
    assert m["members"]["copy"]["valid"] == pytest.approx(0.55)
    assert m["members"]["in_context_recall"]["test"] == pytest.approx(0.4)
    assert m["per_seed"][0]["members"]["copy"]["variant"] == "dropout 0.25"
    # Costs as a trial's: the largest member model, one seed's training summed over members.
    assert m["params"] == 2000 and m["steps"] == 30 and m["tokens"] == 480
    assert m["cpu_seconds"] == 7.0


def test_a_suite_retrains_with_the_proxys_dropout_and_no_early_stop_by_default():
    assert default_dropouts(SUITE.to_spec()) == SUITE_DROPOUTS == "tuned"
    assert default_dropouts(TaskSpec("mqar", {})) == DEFAULT_DROPOUTS == "tuned,0.25"
    assert default_patience(SUITE.to_spec()) == SUITE_PATIENCE == 0
    assert default_patience(TaskSpec("mqar", {})) == DEFAULT_PATIENCE == 5


def test_a_member_failing_at_one_seed_costs_that_seed_not_the_finalists_other_trainings():
    """Seed 0: recall failed in both variants, so seed 0 is left out whole (a score needs
    every member) and its failure is named; seed 1: copy's tuned variant failed, its 0.25
    variant stands, and each member keeps its better variant on validation."""
    record = TrialRecord(3, 3, TrialState.COMPLETE, 3, 0, "h", {}, (0.5,), {}, 3, None, None)
    recall, copy = SUITE.members

    def job(member, draw, dropout):
        return RetrainJob(1, record, nx.DiGraph(), {}, 10 + draw, dropout, member, draw)

    results = [
        (job(recall, 0, None), None, "out of memory"),
        (job(recall, 0, 0.25), None, "out of memory"),
        (job(copy, 0, None), {"metrics": trained(0.9, 0.9)}, None),
        (job(recall, 1, None), {"metrics": trained(0.3, 0.3)}, None),
        (job(recall, 1, 0.25), {"metrics": trained(0.4, 0.2)}, None),
        (job(copy, 1, None), None, "killed"),
        (job(copy, 1, 0.25), {"metrics": trained(0.6, 0.5)}, None),
    ]
    kept, failures = keep_members(SUITE, results)
    assert set(kept) == {(1, "in_context_recall"), (1, "copy")}
    assert kept[1, "in_context_recall"].variant == "dropout 0.25"
    assert kept[1, "copy"] == MemberResult(11, "dropout 0.25", trained(0.6, 0.5))
    assert failures == ["member in_context_recall, seed 1 (10): out of memory"]
    # Nothing at any seed: no score, every failure named.
    kept, failures = keep_members(SUITE, [r for r in results if r[0].draw == 0])
    assert kept == {} and len(failures) == 1


def test_a_result_short_of_seeds_replaces_an_earlier_one_only_where_that_was_no_better(tmp_path):
    """A short result (a member failed at a seed) is stored over a damaged file and over
    another short one; it leaves an earlier result that lost no seed in place (the file unchanged,
    the row is that result, the new scores beside it), unless it still has more seeds or
    was trained at another budget."""
    (tmp_path / "two.toml").write_text(TWO_MEMBERS)
    request = RunRequest(task=str(tmp_path / "two.toml"), runs_dir=tmp_path, name="r")
    config, space, preset = prepare_run(request)
    graph = sample_architectures(load_space(space), 1, seed=0)[0].graph
    record = TrialRecord(3, 3, TrialState.COMPLETE, 3, 0, "h", {}, (0.5,), {}, 3, None, None)
    recall, copy = SUITE.members

    def results(valid: float, seeds: int, lost: int = 0) -> list:
        """Both members at `seeds` seeds, recall failed at the first `lost` of them."""
        done = [
            (
                RetrainJob(1, record, graph, {}, 10 + d, None, m, d),
                {"metrics": trained(valid, valid)},
                None,
            )
            for m in (recall, copy)
            for d in range(seeds)
        ]
        return [
            (j, None, "out of memory") if j.member == recall and j.draw < lost else (j, r, e)
            for j, r, e in done
        ]

    budget, other = parse_budget("1000tokens"), parse_budget("2000tokens")
    with RunStore.create(tmp_path / "r", config, space, preset.text, package_versions()) as store:
        path = store.root / RETRAINED / "h" / METRICS

        def stored() -> float:
            return json.loads(path.read_text())["valid"]["metric"]

        path.parent.mkdir(parents=True)
        path.write_text("{")  # a damaged earlier result is replaced, not an error
        for valid in (0.7, 0.9):  # short over damaged, then short over short
            row = combine_suite(store, SUITE, results(valid, 2, lost=1), budget)
            assert "not_stored" not in row and row["metrics"]["failures"]
            assert stored() == pytest.approx(valid)
        combine_suite(store, SUITE, results(0.5, 2), budget)
        before = path.read_bytes()
        row = combine_suite(store, SUITE, results(0.9, 3, lost=1), budget)  # 2 seeds of 3
        assert row["metrics"]["valid"]["metric"] == pytest.approx(0.5)
        assert row["not_stored"]["valid"]["metric"] == pytest.approx(0.9)
        assert row["path"] == path.parent and path.read_bytes() == before
        row = combine_suite(store, SUITE, results(0.8, 4, lost=1), budget)  # 3 seeds > 2
        assert "not_stored" not in row and stored() == pytest.approx(0.8)
        combine_suite(store, SUITE, results(0.5, 2), budget)
        row = combine_suite(store, SUITE, results(0.6, 2, lost=1), other)  # another budget
        assert "not_stored" not in row and stored() == pytest.approx(0.6)
