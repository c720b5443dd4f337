"""A campaign on a real task through the CLI and the proxy, then `retrain`: the stored
weights load into a fresh model and give back the stored scores. Real local Ray (started once
here), real journal storage, the real console entry point."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from clitools import cli
from safetensors.torch import load as load_tensors
from safetensors.torch import load_file

from gatesearch.arch.build import build_model
from gatesearch.arch.graph import arch_hash, read_graph
from gatesearch.budget import BudgetError
from gatesearch.experiments.retrain import (
    GRAPH,
    METRICS,
    RETRAINED,
    WEIGHTS,
    RetrainError,
    SelfTune,
    final_order,
    parse_dropouts,
    retrain_body,
    retrain_streamed,
    select,
)
from gatesearch.proxy.trainer import task_context
from gatesearch.runs.store import RunStore
from gatesearch.tasks import Split, make_task, split_scores
from gatesearch.tasks import evaluate as task_metric

# Every block has a pruning gate, so retrain exercises the pruned-graph path.
GATED_SPACE = """\
task causal
let width = choice(32)
model := embed stack rmsnorm head
stack := repeat(block, 1..1)
block := residual(rmsnorm mixer) residual(rmsnorm glu(expand=2, prune=trainable))
mixer := gru | mingru | gla(heads=2)
"""
TINY_MQAR = {"vocab": 16, "length": 16, "pairs": 2, "n_valid": 48, "n_test": 48}
TASK_ARGS = [a for k, v in TINY_MQAR.items() for a in ("--task-param", f"{k}={v}")]
# The same score twice from the same weights and data: only float summation order may differ.
SCORE_TOL = 1e-5


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


@pytest.fixture(scope="module")
def mqar_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("campaign")
    space = tmp / "gated.space"
    space.write_text(GATED_SPACE)
    code = cli(
        "run", "--task", "mqar", *TASK_ARGS, "--space", space, "--strategy", "random",
        "--budget", "6steps", "--trials", "3", "--workers", "2",
        "--proxy-option", "batch_size=8", "--runs-dir", tmp / "runs", "--name", "m",
    )  # fmt: skip
    assert code == 0
    return tmp / "runs" / "m"


def test_a_campaign_on_mqar_stores_proxy_metrics(mqar_run, capsys):
    capsys.readouterr()
    assert cli("status", mqar_run, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["finished"] == 3 and info["failed"] == 0, info["failure_reasons"]
    assert info["task_spec"]["params"]["vocab"] == 16
    assert info["metric_name"] == "accuracy" and info["directions"] == ["maximize"]
    assert cli("status", mqar_run) == 0
    assert "accuracy ↑" in capsys.readouterr().out
    with RunStore.open(mqar_run, writer=False) as store:
        records = [r for r in store.records() if r.duplicate_of is None]
        for r in records:
            assert r.values == (r.metrics["accuracy"],)
            assert r.metrics["steps"] == 6 and r.metrics["self_tuning"] is False
            doc = store.load_trial_metrics(r.number)
            hypers = doc["metrics"]["hyperparameters"]
            assert hypers == r.metrics["hyperparameters"] and "lr" in hypers
            assert "sparsity_weight" in hypers  # the pruning gates' weight is tuned
            trajectory = doc["metrics"]["trajectory"]
            assert trajectory[0]["step"] == 0 and trajectory[-1]["step"] == 6


def test_retrain_top_1_weights_reproduce_the_stored_scores(mqar_run, capsys):
    capsys.readouterr()
    assert cli("retrain", mqar_run, "--top", "1", "--budget", "8steps", "--dropout", "tuned") == 0
    assert "next:" in capsys.readouterr().out
    (folder,) = (mqar_run / RETRAINED).iterdir()
    with RunStore.open(mqar_run, writer=False) as store:
        best = max(
            (r for r in store.records() if r.duplicate_of is None), key=lambda r: r.values[0]
        )
    assert folder.name == best.arch_hash
    doc = json.loads((folder / METRICS).read_text())
    assert doc["trial"] == best.number and doc["steps"] == 8 and doc["pruned"] is True
    # At the campaign's batch size (--proxy-option batch_size=8), not the trainer's default.
    assert doc["proxy_options"] == {"batch_size": 8}
    assert doc["tokens"] / doc["steps"] == best.metrics["tokens"] / best.metrics["steps"]
    # Regularisers where the proxy left them; the learning rate at the proxy's peak (cosine
    # decay from there).
    with RunStore.open(mqar_run, writer=False) as store:
        trajectory = store.load_trial_metrics(best.number)["metrics"]["trajectory"]
    peak = max(p["lr"] for p in [best.metrics["hyperparameters"], *trajectory])
    assert doc["hyperparameters"] == pytest.approx({**best.metrics["hyperparameters"], "lr": peak})
    graph = read_graph(folder / GRAPH)
    assert arch_hash(graph) == doc["graph_hash"] != best.arch_hash  # the pruned architecture
    task = make_task("mqar", **TINY_MQAR)
    model = build_model(graph, task_context(graph, task))
    model.load_state_dict(load_file(folder / WEIGHTS))
    assert sum(p.numel() for p in model.parameters()) == doc["params"]
    torch.set_num_threads(1)
    for split in (Split.VALID, Split.TEST):
        stored = doc[split.value]
        assert task_metric(model, task, split, 128) == pytest.approx(
            stored["metric"], abs=SCORE_TOL
        )
        loss, _ = split_scores(model, task, split, 128)
        assert loss == pytest.approx(stored["loss"], rel=SCORE_TOL)


def test_retrain_keeps_each_best_point_ranks_by_it_and_export_follows(mqar_run, tmp_path, capsys):
    capsys.readouterr()
    args = ("--top", "3", "--budget", "40steps", "--eval-points", "8", "--patience", "2")
    assert cli("retrain", mqar_run, *args) == 0
    printed = capsys.readouterr().out
    assert "ETA" in printed and "best validation score first" in " ".join(printed.split())
    docs = [json.loads((d / METRICS).read_text()) for d in (mqar_run / RETRAINED).iterdir()]
    assert len(docs) >= 2
    for doc in docs:
        curve = doc["curve"]
        assert 1 <= len(curve) <= 8 and doc["eval_points"] == 8 and doc["patience"] == 2
        best = max(curve, key=lambda p: (p["valid_metric"], -p["valid_loss"]))
        assert doc["best_step"] == best["step"]
        assert doc["valid"]["metric"] == pytest.approx(best["valid_metric"], abs=SCORE_TOL)
        assert doc["stopped_early"] == (curve[-1]["step"] < 40)
        if doc["stopped_early"]:  # exactly `patience` points after the best one
            assert curve.index(best) == len(curve) - 3
    # The retrained table and `export --rank 1` take the best retrained validation score, not
    # the campaign's order.
    winner = min(docs, key=lambda d: (-d["valid"]["metric"], d["valid"]["loss"]))
    first = re.search(r"^\s*1\s+#(\d+)\s+(\d+)\s", printed, re.MULTILINE)
    assert first is not None and first.groups() == (str(winner["rank"]), str(winner["trial"]))
    assert cli("export", mqar_run, "--rank", "1", "-o", tmp_path / "m.py") == 0
    source = (tmp_path / "m.py").read_text()
    assert winner["arch_hash"] in source and f"campaign rank {winner['rank']})" in source
    # `report` shows the same order, in the terminal and on the page.
    capsys.readouterr()
    assert cli("report", mqar_run, "--out", tmp_path / "report") == 0
    printed = capsys.readouterr().out
    after = printed[printed.index("retrained: best validation") :]
    first = re.search(r"^\s*1\s+#(\d+)\s+(\d+)\s", after, re.MULTILINE)
    assert first is not None and first.groups() == (str(winner["rank"]), str(winner["trial"]))
    page = (tmp_path / "report" / "index.html").read_text()
    retrained = page[page.index("<h2>Retrained</h2>") :]
    assert retrained.index(winner["arch_hash"]) < min(
        retrained.index(d["arch_hash"]) for d in docs if d is not winner
    )
    # A damaged retrain result is one line, not a guess at the order.
    copy = tmp_path / "copy"
    shutil.copytree(mqar_run, copy)
    (copy / RETRAINED / winner["arch_hash"] / METRICS).write_text('{"valid": 3}')
    capsys.readouterr()
    for args in (("export", copy, "--rank", "1", "-o", tmp_path / "n.py"), ("report", copy)):
        assert cli(*args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not a retrain result" in err
    assert not (tmp_path / "n.py").exists()
    # Hostile JSON (nesting past the parser's recursion, a number past float) is one line too.
    for text in ("[" * 100_000 + "]" * 100_000, '{"valid": {"metric": 1' + "0" * 400 + "}}"):
        (copy / RETRAINED / winner["arch_hash"] / METRICS).write_text(text)
        assert cli("export", copy, "--rank", "1", "-o", tmp_path / "n.py") == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_failed_training_is_raised_by_the_streamed_task(mqar_run):
    """The thread's exception reaches the generator (and so the driver), never a hang."""
    graph = read_graph(next((mqar_run / "graphs").iterdir()))
    task = make_task("mqar", **TINY_MQAR)
    spec = {"name": "mqar", "params": TINY_MQAR}
    with pytest.raises(BudgetError):
        list(retrain_streamed(graph, spec, "3 weeks", 0, {}, 1))
    events = list(retrain_streamed(graph, spec, "4steps", 0, {}, 1, 2, 0))
    assert [next(iter(e)) for e in events] == ["progress", "progress", "result"]
    assert events[0]["progress"]["metric_name"] == task.metric_name
    # The campaign's options are kept but for those retrain's recipe sets itself (here the
    # validation points, patience and self-tuning).
    proxy = {"batch_size": 4, "eval_points": 7, "patience": 1, "self_tuning": True, "lr_final": 0.5}
    events = list(retrain_streamed(graph, spec, "4steps", 0, {}, 1, 2, 0, proxy=proxy))
    assert [next(iter(e)) for e in events] == ["progress", "progress", "result"]
    metrics = events[-1]["result"]["metrics"]
    assert metrics["proxy_options"] == {"batch_size": 4} and metrics["patience"] == 0
    assert metrics["tokens"] == 4 * 4 * task.seq_len


def test_bad_input_is_one_line(mqar_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli("run", "--task", "null", "--trials", "2", "--runs-dir", runs, "--name", "n") == 0
    # A hand-edited proxy option that retrain would keep: refused before any training.
    edited = tmp_path / "edited"
    shutil.copytree(mqar_run, edited, ignore=shutil.ignore_patterns(RETRAINED))
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "proxy": {"batch_size": 0}}))
    cases = {
        "bad stored proxy option": (["retrain", edited], "batch_size"),
        "missing run": (["retrain", tmp_path / "nope"], "no such run"),
        "top 0": (["retrain", mqar_run, "--top", "0"], "--top"),
        "eval points 0": (["retrain", mqar_run, "--eval-points", "0"], "--eval-points"),
        "patience -1": (["retrain", mqar_run, "--patience", "-1"], "--patience"),
        "bad budget": (["retrain", mqar_run, "--budget", "3 weeks"], "3 weeks"),
        "dropout 1": (["retrain", mqar_run, "--dropout", "1"], "--dropout"),
        "bad schedule": (["retrain", mqar_run, "--schedule", "linear"], "--schedule"),
        "seeds on one task": (["retrain", mqar_run, "--seeds", "2"], "suite campaign's finalists"),
        "seeds 0": (["retrain", mqar_run, "--seeds", "0"], "--seeds"),
        "plateau, no patience": (
            ["retrain", mqar_run, "--schedule", "plateau", "--patience", "0"],
            "--patience",
        ),
        "null task": (["retrain", runs / "n"], "trains no model"),
        "param without =": (["run", "--task", "mqar", "--task-param", "vocab"], "key=value"),
        "unknown param": (["run", "--task", "mqar", "--task-param", "vocabb=3"], "vocabb"),
        "bad param value": (["run", "--task", "mqar", "--task-param", "vocab=x"], "vocab"),
        "params for null": (["run", "--task", "null", "--task-param", "a=1"], "no params"),
    }
    for label, (args, needle) in cases.items():
        capsys.readouterr()
        extra = ["--runs-dir", runs, "--name", "new"] if args[0] == "run" else []
        assert cli(*args, *extra) == 2, label
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (label, err)
    assert not (runs / "new").exists()
    assert not (runs / "n" / RETRAINED).exists() and not (edited / RETRAINED).exists()


def test_retrain_dropout_replaces_every_tuned_rate(mqar_run, tmp_path, capsys):
    run = tmp_path / "m"
    shutil.copytree(mqar_run, run, ignore=shutil.ignore_patterns(RETRAINED))
    assert cli("retrain", run, "--top", "1", "--budget", "4steps", "--dropout", "0.3") == 0
    with RunStore.open(run, writer=False) as store:
        (placed,) = [p for p in final_order(store) if p.retrained is not None]
        tuned = dict(select(store, 1)[0].hyperparameters)
    used = placed.retrained["hyperparameters"]
    rates = [k for k in tuned if k.startswith("dropout_")]
    # Stored as the trainer holds them (float32), hence approx.
    assert rates and all(used[k] == pytest.approx(0.3, abs=1e-6) for k in rates)
    others = [k for k in tuned if k not in rates and k != "lr"]
    assert all(used[k] == pytest.approx(tuned[k], rel=1e-5) for k in others)


def test_retrain_schedule_plateau_decays_and_says_where(mqar_run, tmp_path, capsys):
    """--schedule plateau through the CLI: stored with the result, and the line says where
    the decay began (here at the budget's last fifth at the latest)."""
    run = tmp_path / "m"
    shutil.copytree(mqar_run, run, ignore=shutil.ignore_patterns(RETRAINED))
    capsys.readouterr()
    args = ("--top", "1", "--budget", "10steps", "--eval-points", "5", "--dropout", "tuned")
    assert cli("retrain", run, *args, "--schedule", "plateau", "--patience", "1") == 0
    assert "decay from " in " ".join(capsys.readouterr().out.split())
    with RunStore.open(run, writer=False) as store:
        (placed,) = [p for p in final_order(store) if p.retrained is not None]
    metrics = placed.retrained
    assert metrics["schedule"] == "plateau" and 0 < metrics["cooldown_start"] <= 0.8


def test_retrain_with_several_dropouts_keeps_the_best_on_validation(mqar_run, tmp_path, capsys):
    run = tmp_path / "m"
    shutil.copytree(mqar_run, run, ignore=shutil.ignore_patterns(RETRAINED))
    capsys.readouterr()
    args = ("--top", "1", "--budget", "6steps", "--eval-points", "2", "--patience", "0")
    assert cli("retrain", run, *args, "--dropout", "tuned,0.5") == 0
    out = capsys.readouterr().out
    assert "dropout 0.5)" in out and "tuned)" in out and "kept of 2 variants" in out
    with RunStore.open(run, writer=False) as store:
        (placed,) = [p for p in final_order(store) if p.retrained is not None]
    doc = placed.retrained
    variants = {v["variant"]: v["valid_metric"] for v in doc["variants"]}
    assert set(variants) == {"tuned", "dropout 0.5"}
    assert doc["valid"]["metric"] == max(variants.values())  # accuracy: higher is better
    kept = next(k for k, v in variants.items() if v == doc["valid"]["metric"])
    rates = [k for k in doc["hyperparameters"] if k.startswith("dropout_")]
    if kept == "dropout 0.5":
        assert all(doc["hyperparameters"][k] == pytest.approx(0.5, abs=1e-6) for k in rates)
    assert len(list((run / RETRAINED).iterdir())) == 1  # one folder per architecture


@pytest.mark.parametrize("text", ["0.5,0.5", "tuned,x", "1.0", ""])
def test_bad_dropout_lists_are_refused(text):
    with pytest.raises(RetrainError, match="--dropout"):
        parse_dropouts(text)


def test_self_tune_goes_on_tuning_the_regularisers_and_returns_a_plain_model(mqar_run):
    """With `self_tune` the regularisers move from where the campaign left them (without it
    they stay put), the learning rate stays on its schedule, and the weights load into a
    model built from the returned graph."""
    graph = read_graph(next((mqar_run / "graphs").iterdir()))
    spec = {"name": "mqar", "params": TINY_MQAR}
    start = {"dropout_mixer": 0.1, "dropout_channel": 0.1, "weight_decay": 1e-4, "lr": 3e-3}
    fixed = retrain_body(graph, spec, "40steps", 0, start, 1, 4, 0)["metrics"]
    tuned = retrain_body(graph, spec, "40steps", 0, start, 1, 4, 0, self_tune=SelfTune())
    moved = tuned["metrics"]["hyperparameters"]
    stay = fixed["hyperparameters"]
    assert all(stay[k] == pytest.approx(v, rel=1e-5) for k, v in start.items() if k in stay)
    assert any(moved[k] != pytest.approx(start[k], rel=1e-3) for k in start if k != "lr")
    assert moved["lr"] == pytest.approx(start["lr"])  # hypergradient off: only the schedule
    model = build_model(
        tuned["graph"], task_context(tuned["graph"], make_task("mqar", **TINY_MQAR))
    )
    model.load_state_dict(load_tensors(tuned["weights"]))


def test_retrain_by_default_tries_the_tuned_dropout_and_0_25(mqar_run, tmp_path, capsys):
    run = tmp_path / "m"
    shutil.copytree(mqar_run, run, ignore=shutil.ignore_patterns(RETRAINED))
    args = ("--top", "1", "--budget", "4steps", "--eval-points", "2", "--patience", "0")
    assert cli("retrain", run, *args) == 0
    assert "kept of 2 variants" in capsys.readouterr().out
    (folder,) = (run / RETRAINED).iterdir()
    doc = json.loads((folder / METRICS).read_text())
    assert {v["variant"] for v in doc["variants"]} == {"tuned", "dropout 0.25"}


def test_retrain_self_tune_goes_on_tuning_and_is_a_variant_like_any(mqar_run, tmp_path, capsys):
    run = tmp_path / "m"
    shutil.copytree(mqar_run, run, ignore=shutil.ignore_patterns(RETRAINED))
    args = ("--top", "1", "--budget", "30steps", "--eval-points", "2", "--patience", "0")
    assert cli("retrain", run, *args, "--dropout", "self-tune") == 0
    assert "self-tune)" in capsys.readouterr().out
    with RunStore.open(run, writer=False) as store:
        (placed,) = [p for p in final_order(store) if p.retrained is not None]
        tuned = dict(select(store, 1)[0].hyperparameters)
    used = placed.retrained["hyperparameters"]
    assert any(used[k] != pytest.approx(v, rel=1e-3) for k, v in tuned.items() if k != "lr")
    assert parse_dropouts("tuned,self-tune,0.25") == [None, "self-tune", 0.25]
    with pytest.raises(RetrainError, match="twice"):
        parse_dropouts("self-tune,self-tune")
