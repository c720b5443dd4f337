"""The tables a user reads, through the real command line on one real campaign: a tiny
classification task whose validation split is one sequence, so accuracies are 0 or 1 and
architectures tie, as they do on small real splits; `--max-params` turns the largest
architecture down. Local Ray (started once here); the campaign runs once, `retrain` once."""

from __future__ import annotations

import ast
import csv
import html
import io
import json
import re
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clitools import cli

from gatesearch.arch.describe import describe
from gatesearch.arch.graph import read_graph
from gatesearch.experiments.retrain import METRICS, RETRAINED, final_order
from gatesearch.formats import TIE_NOTE, count, score
from gatesearch.report import load_run, rank_trials
from gatesearch.report.plots import best_so_far_figure
from gatesearch.runs.store import RunStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

# One width; attention takes three non-default parameters, more than a short label shows.
SPACE = """\
task noncausal
let width = choice(16)
model := embed block rmsnorm head
block := residual(rmsnorm mixer)
mixer := [2] attention(heads=2, qk_norm=true, gate=choice(g1, g2, g3)) | gru | mingru | lstm
"""
# At width 16 on this task: mingru 656 parameters, attention 1,440, gru 1,776, lstm 2,320.
MAX_PARAMS = 2_000
TRIALS = 6
HEADER = "accuracy ↑"
COMPLETE_ATTENTION = "attention(heads=2, qk_norm=True, gate=g"
SHORT_ATTENTION = "attention(heads=2, qk_norm=True, …)"


def classify_data(path: Path) -> Path:
    """Eight training sequences, one validation and two test sequences of tokens 0..4,
    labels 0 or 1."""
    rng = np.random.default_rng(0)
    splits = ["train"] * 8 + ["valid"] + ["test"] * 2
    rows = [rng.integers(0, 5, int(n)).tolist() for n in rng.integers(3, 7, len(splits))]
    labels = [int(x) for x in rng.integers(0, 2, len(splits))]
    pq.write_table(pa.table({"tokens": rows, "label": labels, "split": splits}), path)
    return path


def captured(*args: object) -> tuple[int, str]:
    """`gatesearch ARGS` in this process (module fixtures cannot take capsys): exit status
    and what it printed."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cli(*args)
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> tuple[Path, str]:
    """The finished run and what `run --wide` printed."""
    root = tmp_path_factory.mktemp("tables")
    data = classify_data(root / "c.parquet")
    space = root / "t.space"
    space.write_text(SPACE)
    code, out = captured(
        "run", "--task", "classify", "--task-param", f"path={data}", "--space", space,
        "--strategy", "random", "--budget", "2steps", "--trials", TRIALS, "--workers", 2,
        "--max-params", MAX_PARAMS, "--runs-dir", root, "--name", "t", "--wide",
    )  # fmt: skip
    assert code == 0, out
    run = root / "t"
    with RunStore.open(run, writer=False) as store:
        distinct = [r for r in store.records() if r.duplicate_of is None and r.scored]
    # Accuracy on one sequence is 0 or 1: three distinct architectures must tie.
    assert len(distinct) >= 3, "the seed gave too few distinct architectures to tie"
    return run, out


@pytest.fixture(scope="module")
def retrained(campaign: tuple[Path, str]) -> tuple[Path, str]:
    run, _ = campaign
    code, out = captured(
        "retrain", run, "--top", 1, "--budget", "2steps", "--dropout", "tuned", "--wide"
    )
    assert code == 0, out
    return run, out


def board(run: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    capsys.readouterr()
    assert cli("status", run, "--json") == 0
    return json.loads(capsys.readouterr().out)["leaderboard"]


def complete(run: Path, arch_hash: str) -> str:
    return describe(read_graph(run / "graphs" / f"{arch_hash}.parquet"), complete=True)


def whole_on_a_line(text: str, output: str) -> bool:
    return any(text in line for line in output.splitlines())


# ---------------------------------------------------------------------- campaign tables


def test_the_end_of_run_board_marks_ties_and_wide_prints_each_architecture_whole(campaign, capsys):
    run, out = campaign
    rows = board(run, capsys)
    assert any(r["tied"] for r in rows)
    for r in rows:
        assert r["arch"] == complete(run, r["arch_hash"])
        assert whole_on_a_line(r["arch"], out), r["arch"]
        if r["tied"]:
            assert re.search(rf"^\s*={r['joint_rank']}\s+{r['number']}\s", out, re.M), out
    assert TIE_NOTE in out and HEADER in out


def test_status_is_short_unless_wide_and_names_every_value(campaign, capsys):
    run, _ = campaign
    rows = board(run, capsys)
    assert cli("status", run) == 0
    short = capsys.readouterr().out
    assert cli("status", run, "--wide") == 0
    wide = capsys.readouterr().out
    assert TIE_NOTE in short and TIE_NOTE in wide
    assert f"{TRIALS}/{TRIALS} finished" in short and "over --max-params 2,000" in short
    long_ones = [r["arch"] for r in rows if len(r["arch"]) > 60]
    assert long_ones, "no architecture long enough to be cut"
    for arch in long_ones:
        assert arch not in short and whole_on_a_line(arch, wide)
    rows_shown = [ln for ln in short.splitlines() if re.match(r"\s*=?\d+\s+\d+\s", ln)]
    assert rows_shown and max(map(len, rows_shown)) <= 80  # cut to the console's width
    for text in (short, wide):
        assert not re.search(r"[(,] ?(True|False)\b", text)  # never a bare boolean
    # The short form keeps two values a primitive, each named; the complete one has them all.
    attention = [r for r in rows if COMPLETE_ATTENTION in r["arch"]]
    assert attention, "no attention architecture on the board"
    assert all(SHORT_ATTENTION in r["arch_short"] for r in attention)


# ---------------------------------------------------------------------------- report


def test_report_counts_the_turned_down_and_its_tables_are_whole(campaign, capsys):
    run, _ = campaign
    capsys.readouterr()
    assert cli("report", run, "--top", 10, "--wide") == 0
    out = capsys.readouterr().out
    data = load_run(run)
    assert data.rejected > 0
    header = " ".join(out.split("\n\n")[0].split()[:40])  # Rich wraps it at the width
    assert f"· {data.rejected} over --max-params, not trained" in header
    ranked = rank_trials(data)
    assert any(x.tied for x in ranked) and TIE_NOTE in out
    for x in ranked:
        arch = complete(run, x.record.arch_hash)
        assert whole_on_a_line(arch, out)
        cell = f"={x.joint_rank}" if x.tied else str(x.rank)
        assert re.search(rf"^\s*{cell}\s+{x.record.number}\s", out, re.M), out
    # trials.csv: every trial with its architecture, complete, in the last column.
    with open(run / "report" / "trials.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames is not None and reader.fieldnames[-1] == "architecture"
        for row in reader:
            assert row["architecture"] == complete(run, row["arch_hash"])
    # The page: objective heads as the terminal writes them, ranks shared, each architecture
    # whole, and a top that is fewer than half of the evaluated architectures.
    page = (run / "report" / "index.html").read_text()
    assert f"<th>{HEADER}</th>" in page and "metric (accuracy)" not in page
    assert html.escape(TIE_NOTE, quote=True) in page
    for x in ranked:
        assert html.escape(complete(run, x.record.arch_hash), quote=True) in page
        if x.tied:
            assert f'<td class="num">={x.joint_rank}</td>' in page
    evaluated = len(data.evaluated())
    top = re.search(r"Coloured: the top (\d+) \(not the 10 asked", page)
    assert top is not None and 2 * int(top.group(1)) < evaluated, page


def test_the_best_so_far_legend_is_outside_every_panel(campaign):
    run, _ = campaign
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = best_so_far_figure(load_run(run))
    assert fig is not None
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # the constrained layout places everything
    legends = [leg for ax in fig.axes if (leg := ax.get_legend()) is not None]
    assert len(legends) == 1
    box = legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a panel"


# ---------------------------------------------------------------------------- retrain


def test_retrain_table_writes_counts_and_heads_as_every_table(retrained):
    run, out = retrained
    (folder,) = (run / RETRAINED).iterdir()
    doc = json.loads((folder / METRICS).read_text())
    assert "accuracy ↑" in out and "loss ↓" in out
    line = next(ln for ln in out.splitlines() if re.match(r"\s*1\s+#1\s", ln))
    cells = line.split()
    assert count(doc["params"]) in cells and score(doc["valid"]["metric"]) in cells
    # At 80 columns no number is cut: the loss, the best step (was "3.342e-…", "4,000/4,").
    assert score(doc["valid"]["loss"]) in cells and f"{int(doc['best_step']):,}" in cells, line
    assert any(
        ln.strip().startswith(f"gatesearch export {run} --rank 1") for ln in out.splitlines()
    )
    assert "e+0" not in out  # never 1.003e+05
    assert whole_on_a_line(complete(run, folder.name), out)
    # The campaign's ties are among trials this table does not list: no tie note under it.
    assert TIE_NOTE not in out.split("retrained from", 1)[1], out


# ----------------------------------------------------------------------------- export


def test_export_names_the_scores_and_where_the_class_logits_are(retrained, tmp_path):
    run, _ = retrained
    (folder,) = (run / RETRAINED).iterdir()
    doc = json.loads((folder / METRICS).read_text())
    # A string stored in the run never reaches the code, however it reads.
    doc["note"] = '"""; import os  # stored'
    doc["metric_name"] = 'accuracy"""'
    (folder / METRICS).write_text(json.dumps(doc))
    out = tmp_path / "best.py"
    code, printed = captured("export", run, "--rank", 1, "-o", out)
    assert code == 0, printed
    text = ast.get_docstring(ast.parse(out.read_text()), clean=False)
    assert text is not None
    assert "Scores (retrained at the full budget, at its best validation point):" in text
    valid, test = doc["valid"], doc["test"]
    assert f"validation accuracy: {score(valid['metric'])} (loss {score(valid['loss'])})" in text
    assert f"test accuracy: {score(test['metric'])} (loss {score(test['loss'])})" in text
    assert "The class logits are y[b, n_b - 1, :]" in text and "over the 2 classes" in text
    assert "stored" not in out.read_text() and 'accuracy"' not in out.read_text()


def test_export_of_a_tied_rank_says_which_it_took(campaign, tmp_path):
    run = Path(shutil.copytree(campaign[0], tmp_path / "run"))
    shutil.rmtree(run / RETRAINED, ignore_errors=True)  # the campaign's order alone
    with RunStore.open(run, writer=False) as store:
        rows = final_order(store)
    tied = next(p for p in rows if p.tied and p.rank != p.joint_rank)  # not the first of it
    tie = [p for p in rows if p.joint_rank == tied.joint_rank]
    assert [p.record.number for p in tie] == sorted(p.record.number for p in tie)
    out = tmp_path / "tied.py"
    code, printed = captured("export", run, "--rank", tied.rank, "-o", out)
    assert code == 0, printed
    first = " ".join(printed.split("wrote")[0].split())  # Rich may wrap the line
    ranks = ", ".join(str(p.rank) for p in tie)
    assert f"ranks {ranks} tie" in first
    assert f"rank {tied.rank} is trial {tied.record.number}" in first
    text = ast.get_docstring(ast.parse(out.read_text()), clean=False)
    assert text is not None and "Scores (the campaign's short proxy training" in text
    assert "test accuracy: not measured" in text
    assert f"validation accuracy: {score(tied.record.metrics['metric'])}" in text
