"""A suite campaign through the real command line: one run of two tiny members on local Ray
(started once here) shared by the tests that read it; resume on a copy of it. Bad suites and
objectives are refused in one line before anything is written."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from clitools import captured
from suitefiles import COPY_WEIGHT, TWO_MEMBERS

from gatesearch.experiments.retrain import retrained_key, suite_seeds
from gatesearch.formats import score
from gatesearch.runs.store import RunStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

# Tiny causal models only: one width, one mixer, so that a trial costs a second or two.
SPACE = """\
task causal
let width = choice(16)
model := embed block rmsnorm head
block := residual(rmsnorm mixer)
mixer := gru | mingru | lstm | attention(heads=2)
"""

MEMBERS = ["in_context_recall", "copy"]


def one_line_error(result) -> str:
    """The refusal's line on stderr (exit status 2, nothing on stdout's tables)."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    (root / "two.toml").write_text(TWO_MEMBERS)
    (root / "tiny.space").write_text(SPACE)
    return root


def run_args(files: Path, name: str, *more: object) -> list[object]:
    return [
        "run", "--task", files / "two.toml", "--space", files / "tiny.space",
        "--strategy", "random", "--budget", "4steps", "--workers", 2,
        "--proxy-option", "batch_size=4", "--runs-dir", files / "runs", "--name", name, *more,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def campaign(files: Path) -> tuple[Path, str]:
    """The finished run (2 trials, two objectives: the suite's score and one member's) and
    what `run` printed."""
    result = captured(*run_args(files, "s", "--trials", 2, "--objectives", "metric,member:copy"))
    assert result.returncode == 0, result.stdout + result.stderr
    return files / "runs" / "s", result.stdout


def test_a_suite_campaign_stores_every_members_score(campaign: tuple[Path, str]) -> None:
    run, printed = campaign
    config = json.loads((run / "config.json").read_text())
    # The suite stored written out: a resume never reads the file again.
    assert config["task"]["name"] == "suite"
    assert [m["name"] for m in config["task"]["params"]["members"]] == MEMBERS
    assert config["metric_name"] == "score"
    assert config["directions"] == ["maximize", "maximize"]
    assert "each member trains an equal share, 2steps of the trial's 4steps" in printed
    # The finalists' retrain at several seeds is offered; the export names a member's ends.
    assert f"gatesearch retrain {run} --top 3" in printed
    assert f"gatesearch export {run} --member in_context_recall -o best.py" in printed
    with RunStore.open(run, writer=False) as store:
        records = [r for r in store.records() if r.scored]
        assert len(records) == 2
        for record in records:
            doc = store.load_trial_metrics(record.number) or {}
            members = doc["metrics"]["members"]
            assert list(members) == MEMBERS
            assert all(0.0 <= m["score"] <= 1.0 and m["steps"] == 2 for m in members.values())
            assert record.values == (record.metrics["metric"], members["copy"]["score"])


def test_status_shows_the_member_scores(campaign: tuple[Path, str]) -> None:
    run, _ = campaign
    result = captured("status", run, "--wide")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "suite two (2 members: in_context_recall, copy)" in text
    assert "score ↑" in text and "member:copy ↑" in text
    # The members not already objectives, in a table of their own under the leaderboard.
    assert "member scores (0 to 1, higher better):" in text
    table = text.split("member scores (0 to 1, higher better):")[1]
    assert "in_context_recall" in table and "copy" not in table
    info = json.loads(captured("status", run, "--json").stdout)
    assert set(info["best"]["members"]) == set(MEMBERS)


def test_report_shows_the_member_scores(campaign: tuple[Path, str], tmp_path: Path) -> None:
    run, _ = campaign
    result = captured("report", run, "--out", tmp_path / "r")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "member scores (0 to 1, higher better):" in result.stdout
    page = (tmp_path / "r" / "index.html").read_text()
    assert "<th>in_context_recall</th>" in page  # the member column beside the objectives
    assert "member copy" in page and "selective_copy(vocab=4" in page  # its spec and weight
    head = (tmp_path / "r" / "trials.csv").read_text().splitlines()[0]
    assert "metric_member:in_context_recall" in head


def test_resume_goes_on_with_the_stored_suite(campaign: tuple[Path, str], tmp_path: Path) -> None:
    """On a copy, with the suite's file gone: the run's config holds the suite."""
    run, _ = campaign
    copy = tmp_path / "s"
    shutil.copytree(run, copy)
    (run.parent.parent / "two.toml").rename(tmp_path / "moved.toml")
    try:
        result = captured("resume", copy, "--trials", 1)
    finally:
        (tmp_path / "moved.toml").rename(run.parent.parent / "two.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    with RunStore.open(copy, writer=False) as store:
        records = [r for r in store.records() if r.scored]
    assert len(records) == 3
    assert all(set(r.metrics) >= {"member:copy", "member:in_context_recall"} for r in records)


def test_fidelity_refuses_a_suite_in_one_line(files: Path) -> None:
    """It needs one task's model (its embedding and head); a suite trial has one a member."""
    fidelity = ["fidelity", "--task", files / "two.toml", "--runs-dir", files / "f"]
    line = one_line_error(captured(*fidelity))
    assert "suite two" in line and "needs one task" in line
    assert not (files / "f").exists()


def test_retrain_scores_the_finalists_on_every_member_at_common_seeds(
    campaign: tuple[Path, str], tmp_path: Path
) -> None:
    """On a copy: each of the best two trains both members at the same 2 seeds at the trial's
    budget, with the proxy's dropout only and no early stop (a suite's defaults); its score is the suite's
    weighted mean per seed, then the mean over seeds; the ranking follows it, and the export
    of a member's ends too. No weights are kept."""
    run = tmp_path / "s"
    shutil.copytree(campaign[0], run)
    with RunStore.open(run, writer=False) as store:
        seeds = suite_seeds(store.config.seed, 2)
        # What retrain starts each member at: its trial's highest learning rate.
        members = [
            m
            for r in store.records()
            for m in store.load_trial_metrics(r.number)["metrics"]["members"].values()
        ]
        assert len(members) == 4 and all(m["peak_lr"] > 0 for m in members)
    result = captured("retrain", run, "--top", 2)
    assert result.returncode == 0, result.stdout + result.stderr
    printed = result.stdout
    assert (
        "(mean of 2 seeds:" in printed and "members (valid, 0 to 1): in_context_recall" in printed
    )
    assert f"gatesearch export {run} --rank 1 --member in_context_recall -o best.py" in printed
    docs = [json.loads(p.read_text()) for p in sorted(run.glob("retrained/*/metrics.json"))]
    assert len(docs) == 2
    assert docs[0]["seeds"] == docs[1]["seeds"] == seeds and len(set(seeds)) == 2
    for doc in docs:
        # By default a suite's finalists train at the trial's budget (4 steps, 2 a member).
        assert doc["suite"] == "two" and doc["budget"] == "4steps"
        assert doc["patience"] == 0  # a suite's finalists train the whole budget
        for split in ("valid", "test"):
            per_seed = []
            for s in doc["per_seed"]:
                members = s["members"]
                assert set(members) == set(MEMBERS)
                mean = members["in_context_recall"][split] + COPY_WEIGHT * members["copy"][split]
                assert s[split]["metric"] == pytest.approx(mean / (1 + COPY_WEIGHT))
                assert all(m["best_step"] <= 2 for m in members.values())
                assert all(m["variant"] == "tuned" for m in members.values())
                per_seed.append(s[split]["metric"])
            assert doc[split]["metric"] == pytest.approx(sum(per_seed) / 2)
            assert doc[split]["min"] == min(per_seed) and doc[split]["max"] == max(per_seed)
    folders = list(run.glob("retrained/*"))
    assert all((f / "graph.parquet").is_file() and not (f / "weights.safetensors").exists()
               for f in folders)  # fmt: skip
    # `report` and `export --rank` follow the retrained order.
    best = min(docs, key=lambda d: retrained_key(d, higher_is_better=True))
    report = captured("report", run, "--out", tmp_path / "r")
    assert report.returncode == 0, report.stdout + report.stderr
    assert "retrained: best validation score first" in report.stdout
    out = tmp_path / "best.py"
    exported = captured("export", run, "--rank", 1, "--member", "copy", "-o", out)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    text = out.read_text()
    assert best["arch_hash"] in text and f"campaign rank {best['rank']})" in text
    # The suite's scores, named so: not the exported member's accuracy.
    assert "retrained on every member, the mean over its seeds" in text
    assert f"validation score: {score(best['valid']['metric'])}\n" in text
    line = one_line_error(captured("export", run, "--member", "copy", "--weights", "-o", out))
    assert "its retrain scores finalists" in line
    assert ">4steps × 2 seeds</td>" in (tmp_path / "r" / "index.html").read_text()
    # A later retrain on other terms: its ranks still count the earlier one, and it says so.
    again = captured("retrain", run, "--top", 1, "--seeds", 1)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "earlier retrains trained otherwise (1 at 4steps × 2 seeds)" in again.stdout


def test_export_takes_a_members_ends(campaign: tuple[Path, str], tmp_path: Path) -> None:
    """The exported file builds the campaign's best with the named member's embedding and head:
    selective copying's vocabulary of 4 data tokens (6 ids with blank and marker) in and out."""
    run, _ = campaign
    out = tmp_path / "best.py"
    result = captured("export", run, "--member", "copy", "-o", out)
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    assert "suite member copy (selective_copy)" in text
    # Its scores are the suite's (one seed, not retrained), not the member's accuracy.
    assert "the campaign's one-seed trial; not retrained" in text
    assert "validation score: " in text and "accuracy" not in text.split("Output:")[0]
    spec = importlib.util.spec_from_file_location("suite_best", out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Model()
    logits = model(torch.randint(0, 6, (2, 16)))
    assert logits.shape == (2, 16, 6)


@pytest.mark.parametrize(
    ("more", "fragment"),
    [
        ([], "give --member NAME for the ends to export with (one of: in_context_recall, copy)"),
        (["--member", "nope"], "the suite has no member 'nope' (its members: in_context_recall"),
        (["--member", "copy", "--weights"], "a suite campaign keeps no trained weights"),
    ],
    ids=["no-member", "unknown-member", "weights"],
)
def test_a_bad_suite_export_is_one_line(
    campaign: tuple[Path, str], tmp_path: Path, more: list[str], fragment: str
) -> None:
    run, _ = campaign
    line = one_line_error(captured("export", run, "-o", tmp_path / "x.py", *more))
    assert fragment in line
    assert not (tmp_path / "x.py").exists()


@pytest.mark.parametrize(
    ("more", "fragment"),
    [
        (["--objectives", "metric,member:nope"], "the suite has no member 'nope' (its members: "),
        (["--budget", "1steps"], "give at least 2steps"),
        (["--schedule", "asha"], "not supported for suites"),
        (["--task-param", "vocab=3"], "task params (vocab) do not apply to a suite"),
    ],
    ids=["unknown-member", "budget-too-small", "schedule", "task-param"],
)
def test_a_bad_request_is_one_line_and_writes_nothing(
    files: Path, more: list[str], fragment: str
) -> None:
    line = one_line_error(captured(*run_args(files, "bad", "--trials", 1, *more)))
    assert fragment in line
    assert not (files / "runs" / "bad").exists()


def test_a_bad_suite_file_is_one_line_naming_its_line(files: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TWO_MEMBERS.replace(f"weight = {COPY_WEIGHT}", "weight = 0"))
    args = run_args(files, "bad", "--trials", 1)
    args[args.index(files / "two.toml")] = bad
    line = one_line_error(captured(*args))
    assert line.startswith(f"error: {bad}:11: member copy: weight must be a number > 0")
    assert not (files / "runs" / "bad").exists()


def test_member_objectives_are_a_suites_only(files: Path) -> None:
    line = one_line_error(
        captured("run", "--task", "null", "--objectives", "member:x", "--runs-dir", files / "n")
    )
    assert "member:NAME objectives are a suite's" in line
    assert not (files / "n").exists()
