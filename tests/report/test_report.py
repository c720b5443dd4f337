"""`gatesearch report` end to end: real null campaigns on a local Ray (started once here), the
report drawn by the real console command in a subprocess, its files checked as a user's tools
would read them (PNG decoder, HTML parser, CSV reader); hostile strings, a campaign that is
still running, and bad input."""

from __future__ import annotations

import base64
import csv
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from clitools import cli

from gatesearch.arch.graph import read_graph, write_graph
from gatesearch.report import load_run, rank_trials
from gatesearch.report.choices import ChoiceShares, top_minority
from gatesearch.runs.ranking import pareto_mask
from gatesearch.runs.store import DriverState, RunState, RunStore, campaign_state

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 5_000  # a real plot; an empty canvas or an error image is smaller
SUBPROCESS_TIMEOUT_S = 120
TRIALS = 16
HOSTILE = '<script>alert("x")</script>'


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def report_subprocess(*args: object) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gatesearch.cli.app", "report", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        env={**os.environ, "COLUMNS": "160"},
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One single-objective campaign with failures (null-faulty) and one loss-vs-params
    campaign (NSGA-II), both finished."""
    root = tmp_path_factory.mktemp("runs")
    preset = root / "nsga2.toml"
    preset.write_text('strategy = "nsga2"\n[options]\npopulation_size = 4\n')
    common = ("--trials", TRIALS, "--workers", 2, "--runs-dir", root)
    assert cli("run", "--task", "null-faulty", "--name", "single", *common) == 0
    multi = ("--task", "null", "--objectives", "loss,params", "--strategy", preset)
    assert cli("run", "--name", "multi", *multi, *common) == 0
    return {"single": root / "single", "multi": root / "multi"}


# Two mixers at two widths: four architectures, each trained for six steps on a tiny MQAR.
TINY_SPACE = """\
task causal
let width = choice(32, 64)
model := embed stack rmsnorm head
stack := repeat(block, 1..1)
block := residual(rmsnorm mixer)
mixer := gru | lstm
"""
TINY_MQAR = {"vocab": 16, "length": 16, "pairs": 2, "n_valid": 32, "n_test": 32}
CURVE_STEPS = (2, 4, 6)  # 3 validation points over 6 steps


@pytest.fixture(scope="module")
def curved(tmp_path_factory) -> Path:
    """A one-objective campaign that trains, with 3 validation points a trial: the study
    holds each trial's learning curve."""
    root = tmp_path_factory.mktemp("curved")
    space = root / "tiny.space"
    space.write_text(TINY_SPACE)
    params = [a for k, v in TINY_MQAR.items() for a in ("--task-param", f"{k}={v}")]
    proxy = ("--proxy-option", "eval_points=3", "--proxy-option", "batch_size=4")
    args = ("--task", "mqar", *params, "--space", space, "--budget", "6steps", *proxy)
    common = ("--trials", 6, "--workers", 2, "--strategy", "random", "--runs-dir", root)
    assert cli("run", *args, *common, "--name", "curved") == 0
    return root / "curved"


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report"))
    return dst


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------ checkers


class PageParser(html.parser.HTMLParser):
    """Collects what a self-contained page must not have, and what it must."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.refs: list[str] = []
        self.tables: int = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data", "poster"):
                self.refs.append(value or "")
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag == "table":
            self.tables += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > MIN_PNG_BYTES, (path, len(data))
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, path
    assert pixels.std() > 0.01, f"{path} is blank"


def check_page(folder: Path) -> PageParser:
    text = (folder / "index.html").read_text(encoding="utf-8")
    page = PageParser()
    page.feed(text)
    page.close()
    assert page.tags[0] == "html" and "body" in page.tags and "style" in page.tags
    # Self-contained: every reference is an embedded image; no URL anywhere in the page.
    assert all(ref.startswith("data:image/png;base64,") for ref in page.refs), page.refs
    assert not re.search(r"https?://|url\(|@import|<link|<script", text, re.IGNORECASE)
    # Each embedded image is exactly one of the PNG files written beside the page.
    pngs = {p.read_bytes() for p in folder.glob("*.png")}
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in page.images]
    assert set(embedded) == pngs and len(embedded) == len(pngs)
    return page


def front_numbers(run: Path) -> set[int]:
    """Trial numbers on the Pareto front, by brute force over trials.csv."""
    with open(run / "report" / "trials.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["state"] == "complete" and not r["duplicate_of"]]
    points = {int(r["number"]): (float(r["loss"]), float(r["params"])) for r in rows}
    return {
        n
        for n, p in points.items()
        if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points.values())
    }


# -------------------------------------------------------------------------------- reports


def test_single_objective_report(runs):
    run = runs["single"]
    result = report_subprocess(run, "--top", 5)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    folder = run / "report"
    for name in ("best_so_far", "choices", "failures", "best_architecture"):
        check_png(folder / f"{name}.png")
    assert not (folder / "pareto.png").exists()  # one objective: no front to draw
    page = check_page(folder)
    assert page.tables >= 3  # config, leaderboard, failures

    data = load_run(run)
    ranked = rank_trials(data)
    best = ranked[0].record
    (objective,) = data.objectives
    sign = data.signs[0]
    assert sign * best.values[0] == min(sign * r.values[0] for r in data.completed())
    # Terminal: the leaderboard with the best trial first, counts, failure reasons, the page.
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("rank"))
    assert objective in lines[header] and "FLOPs/token" in lines[header]
    assert lines[header + 1].split()[:2] == ["1", str(best.number)]
    assert len([ln for ln in lines[header + 1 :] if re.match(r"\s+\d+\s+\d+\s", ln)]) == 5
    counts = data.counts()
    assert f"{counts['failed']} failed" in out and counts["failed"] > 0
    assert "failed ×" in out and str(folder / "index.html") in out
    # The page: leaderboard in rank order with hashes, the best tree, the failure reasons.
    text = (folder / "index.html").read_text()
    positions = [text.index(x.record.arch_hash) for x in ranked[:5]]
    assert positions == sorted(positions)
    assert "Leaderboard" in text and "Best architecture" in text and "Failures" in text
    # A null task trains nothing: no learning curve, and the page says how to get one.
    assert not (folder / "learning_curves.png").exists()
    assert '<h2>Learning curves</h2><p class="note">No trial has a learning curve' in text
    g = read_graph(run / "graphs" / f"{best.arch_hash}.parquet")
    assert "embed" in text and g.nodes["input"]["params"]["d_model"] > 0
    with open(folder / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == len(data.records)


def test_multi_objective_report_draws_the_front(runs):
    run = runs["multi"]
    result = report_subprocess(run)
    assert result.returncode == 0, result.stderr
    folder = run / "report"
    for name in ("best_so_far", "pareto", "choices", "best_architecture"):
        check_png(folder / f"{name}.png")
    assert not (folder / "failures.png").exists()
    check_page(folder)
    text = (folder / "index.html").read_text()
    assert "Pareto front" in text and "No failed trials." in text
    assert not (folder / "learning_curves.png").exists()  # several objectives: no curve
    assert "No trial has a learning curve" in text and "eval_points=N" in text
    front = front_numbers(run)
    ranked = rank_trials(load_run(run))
    assert {x.record.number for x in ranked if x.level == 1} == front
    # Front trials rank first, and the terminal shows their level.
    assert [x.level for x in ranked[: len(front)]] == [1] * len(front)
    assert "front" in result.stdout


def test_learning_curves_are_drawn_from_the_studys_intermediate_values(curved):
    result = report_subprocess(curved, "--top", 3)
    assert result.returncode == 0, result.stderr
    folder = curved / "report"
    check_png(folder / "learning_curves.png")
    check_page(folder)  # the PNG is embedded in the page, byte for byte
    text = (folder / "index.html").read_text()
    section = text[text.index("<h2>Learning curves</h2>") :].split("</section>")[0]
    assert '<figure><img alt="learning curves" src="data:image/png;base64,' in section
    assert "<figcaption>Each trial&#x27;s validation accuracy" in section
    assert "No trial has a learning curve" not in text
    # What was drawn: every trained trial's curve, read back from the study in step order.
    data = load_run(curved)
    trained = [r for r in data.completed() if r.duplicate_of is None]
    assert len(trained) >= 2
    for r in trained:
        assert [step for step, _ in r.curve] == list(CURVE_STEPS)
        assert r.curve[-1][1] == pytest.approx(r.values[0])  # ends at the trial's score
    assert all(r.curve == () for r in data.records if r.duplicate_of is not None)


@pytest.mark.parametrize("n,d", [(200, 2), (150, 3)], ids=["N200-D2", "N150-D3"])
def test_pareto_mask_matches_brute_force(n, d):
    rng = np.random.default_rng(0)
    points = np.round(rng.random((n, d)), 1)  # rounded: ties and exact duplicates happen
    expected = [
        not any(np.all(q <= p) and np.any(q < p) for q in points) for p in points
    ]  # fmt: skip
    assert pareto_mask(points).tolist() == expected


def test_report_escapes_hostile_strings(runs, tmp_path, capsys):
    run = copy_run(runs["single"], tmp_path / "hostile")
    config = json.loads((run / "config.json").read_text())
    config["space"] = HOSTILE
    config["task"] = "<img src=x onerror=alert(1)>"
    (run / "config.json").write_text(json.dumps(config))
    best = rank_trials(load_run(run))[0].record
    path = run / "graphs" / f"{best.arch_hash}.parquet"
    g = read_graph(path)
    node = next(n for n, op in g.nodes(data="op") if op == "embed")
    # A graph read back is checked for structure, not for the registry's domains: a param
    # named and valued with markup (and a `$`, which matplotlib would read as math) gets in.
    g.nodes[node]["params"] = {"<marquee>k</marquee>": HOSTILE + " costs $5 & more"}
    write_graph(g, path)
    assert cli("report", run) == 0
    text = (run / "report" / "index.html").read_text()
    check_page(run / "report")
    assert "<script" not in text.lower() and "<img src=x" not in text and "<marquee" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    check_png(run / "report" / "best_architecture.png")


def test_report_while_a_campaign_runs(runs, tmp_path, capsys):
    """A driver holds the lock and has a trial RUNNING: the report reads past both and
    changes nothing in the run but its report folder."""
    run = copy_run(runs["single"], tmp_path / "live")
    with RunStore.open(run, writer=True) as store:  # holds driver.lock, as a driver does
        some = store.records()[0]
        store.start_trial(TRIALS, 0, some.arch_hash, some.choices, None)
        before = snapshot(run)
        capsys.readouterr()
        assert cli("report", run, "--top", 3) == 0
        out = capsys.readouterr().out
        assert "1 running" in out
        after = snapshot(run)
    added = set(after) - set(before)
    assert added == {f"report/{n}" for n in ("best_so_far.png", "choices.png", "failures.png",
                     "best_architecture.png", "trials.csv", "index.html")}  # fmt: skip
    assert {k: after[k] for k in before} == before
    assert "The campaign was running when" in (run / "report" / "index.html").read_text()


def test_campaign_state_read_from_the_lock_file(runs, tmp_path):
    run = copy_run(runs["single"], tmp_path / "state")
    lock = run / "driver.lock"
    assert campaign_state(run, TRIALS, TRIALS) == DriverState(RunState.FINISHED)
    assert campaign_state(run, TRIALS - 1, TRIALS) == DriverState(RunState.STOPPED)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lock.write_text(f"pid {dead.stdout.strip()} on {os.uname().nodename}")  # a killed driver
    assert campaign_state(run, TRIALS - 1, TRIALS).state is RunState.STOPPED
    lock.write_text(f"pid {os.getpid()} on {os.uname().nodename}")
    assert campaign_state(run, TRIALS - 1, TRIALS) == DriverState(RunState.RUNNING)
    lock.write_text("pid 1 on some-other-host")
    state = campaign_state(run, TRIALS - 1, TRIALS)
    assert state == DriverState(RunState.RUNNING, "some-other-host")
    assert str(state) == "running on some-other-host"


def test_journal_line_being_appended_is_waited_for(runs, tmp_path):
    run = copy_run(runs["single"], tmp_path / "appending")
    journal = run / "study.journal"
    n_before = len(load_run(run).records)
    head = journal.read_bytes().splitlines(keepends=True)[-1]
    with open(journal, "ab") as f:
        f.write(head[:10])  # a driver's write, half-way through
    finish = threading.Timer(0.3, lambda: journal.open("ab").write(head[10:]))
    finish.start()
    try:
        assert len(load_run(run).records) == n_before
    finally:
        finish.join()


def test_out_folder(runs, tmp_path, capsys):
    run = copy_run(runs["multi"], tmp_path / "elsewhere")
    out = tmp_path / "shared" / "report"
    assert cli("report", run, "--out", out) == 0
    assert (out / "index.html").is_file() and (out / "pareto.png").is_file()
    assert not (run / "report").exists()


# ------------------------------------------------------------------------------ bad input


def truncate_journal(run: Path) -> None:
    journal = run / "study.journal"
    journal.write_bytes(journal.read_bytes()[:-5])


def corrupt_journal(run: Path) -> None:
    with open(run / "study.journal", "ab") as f:
        f.write(b'{"op_code": 4, not json}\n')


def not_a_run(run: Path) -> None:
    (run / "config.json").unlink()


@pytest.mark.parametrize(
    "damage,message",
    [
        (truncate_journal, "truncated"),
        (corrupt_journal, "corrupt record"),
        (not_a_run, "not a gatesearch run"),
    ],
    ids=["truncated-journal", "corrupt-journal", "no-config"],
)
def test_damaged_run_is_refused_and_left_alone(runs, tmp_path, capsys, damage, message):
    run = copy_run(runs["single"], tmp_path / "damaged")
    damage(run)
    before = snapshot(run)
    capsys.readouterr()
    started = time.monotonic()
    assert cli("report", run) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert snapshot(run) == before and not (run / "report").exists()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "args,message",
    [
        (("{tmp}/nowhere",), "no such run directory"),
        (("{run}", "--top", "0"), "--top"),
        (("{run}", "--out", "{tmp}/a-file"), "is a file"),
    ],
    ids=["missing-dir", "top-zero", "out-is-a-file"],
)
def test_bad_arguments(runs, tmp_path, capsys, args, message):
    (tmp_path / "a-file").write_text("")
    run = copy_run(runs["single"], tmp_path / "run")
    before = snapshot(run)
    capsys.readouterr()
    assert cli("report", *(a.format(tmp=tmp_path, run=run) for a in args)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert snapshot(run) == before


def test_unreadable_graphs_are_named_and_said_to_be_skipped(runs, tmp_path, capsys, monkeypatch):
    # At 80 columns the sizes (params, FLOPs, decode state) leave the architecture too little
    # room for the whole note; a wider terminal shows it as it is.
    monkeypatch.setenv("COLUMNS", "120")
    run = copy_run(runs["single"], tmp_path / "torn")
    best = rank_trials(load_run(run))[0].record.arch_hash
    (run / "graphs" / f"{best}.parquet").write_bytes(b"not parquet")
    capsys.readouterr()
    assert cli("report", run) == 0
    out = capsys.readouterr().out
    assert "(graph file unreadable)" in out
    skipped = [line for line in out.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 1 and "1 graph file could not be read" in skipped[0], out
    assert f"{best}.parquet" in skipped[0]
    page = (run / "report" / "index.html").read_text()
    assert "Skipped: 1 graph file could not be read" in page
    assert "(graph file unreadable)" in page
    assert cli("status", run) == 0
    assert "(graph file unreadable)" in capsys.readouterr().out
    (run / "graphs" / f"{best}.parquet").unlink()
    assert cli("status", run) == 0
    assert "(graph file missing)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("asked", "ranked", "evaluated", "top", "capped"),
    [
        (6, 10, 10, 4, True),  # 6 of 10 is no minority: cut to 4, and the caption says why
        (6, 3, 30, 3, False),  # only 3 ranked: fewer than asked, but not for the minority rule
        (3, 10, 10, 3, False),  # as asked
        (6, 10, 2, 0, False),  # nothing to compare: no panel at all
    ],
)
def test_the_choices_caption_blames_the_minority_rule_only_when_it_cut_the_top(
    asked, ranked, evaluated, top, capped
):
    k = top_minority(asked, ranked, evaluated)
    assert k == top
    assert ChoiceShares(k, evaluated, {}, asked).capped is capped
