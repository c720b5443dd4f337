"""`gatesearch fidelity` end to end on a real local Ray (started once here), and the rank
statistics it reports."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from clitools import cli

from gatesearch.evaluate import resolve_task
from gatesearch.experiments.fidelity import (
    PLOT,
    PROXIES,
    REPEAT,
    RESULT,
    analyse,
    bootstrap_taus,
    rank_correlations,
    top_agreement,
)
from gatesearch.tasks import TaskSpec

TINY_SPACE = """\
task causal
let width = choice(16, 32)
model := embed stack rmsnorm head
stack := repeat(block, 1..2)
block := residual(rmsnorm mixer)
mixer := gru | mingru | gla(heads=2) | gcnn
"""
TINY_MQAR = {"vocab": 16, "length": 16, "pairs": 2, "n_valid": 32, "n_test": 32}
TASK_ARGS = [a for k, v in TINY_MQAR.items() for a in ("--task-param", f"{k}={v}")]
EXACT = 1e-12


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


@pytest.mark.parametrize(
    ("x", "y", "tau", "rho"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0, 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0, -1.0),
        # 5 concordant, 1 discordant pair: τ = 4/6; ranks differ by 1 twice: ρ = 1 − 6·2/60.
        ([1, 2, 3, 4], [1, 3, 2, 4], 4 / 6, 0.8),
        # Pairs with a missing or non-finite side are left out.
        ([1, None, 2, 3, math.nan, 4], [1, 5, 3, 2, 9, 4], 4 / 6, 0.8),
    ],
    ids=["agree", "reversed", "one-swap", "gaps"],
)
def test_rank_correlations(x, y, tau, rho):
    stats = rank_correlations(x, y)
    assert stats["tau"] == pytest.approx(tau, abs=EXACT)
    assert stats["rho"] == pytest.approx(rho, abs=EXACT)
    assert stats["n"] == 4


@pytest.mark.parametrize(
    ("x", "y", "k", "overlap", "pick"),
    [
        (list(range(8)), list(range(8)), 2, 2, 1),
        (list(range(8)), list(range(8))[::-1], 2, 0, 8),
        # The proxy's best (x = 7) is the reference's third; top-2 {6, 7} vs {0, 1}: none.
        ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 3, 4, 5, 2, 1, 7], 2, 0, 3),
        # Ties in the reference share the better rank and count as its top k; pairs with a
        # gap are left out.
        ([1, 2, 3, None, 4], [5, 5, 5, 9, 5], 1, 1, 1),
    ],
    ids=["agree", "reversed", "third", "ties-gaps"],
)
def test_top_agreement(x, y, k, overlap, pick):
    assert top_agreement(x, y) == {"k": k, "overlap": overlap, "pick_rank": pick}


def test_top_agreement_of_nothing():
    assert top_agreement([None], [1.0]) == {"k": None, "overlap": None, "pick_rank": None}


def test_rank_correlations_undefined():
    assert rank_correlations([1, 2], [1, 2])["tau"] is None  # too few pairs
    assert rank_correlations([1, 1, 1], [1, 2, 3])["rho"] is None  # one side constant


def test_fidelity_on_four_tiny_architectures(tmp_path, capsys):
    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    code = cli(
        "fidelity", "--space", space, "--task", "mqar", *TASK_ARGS, "--archs", "4",
        "--proxy-budget", "3steps", "--full-budget", "12steps",
        "--runs-dir", tmp_path / "runs", "--name", "f", "--workers", "2", "--repeat-full",
        "--proxy-option", "batch_size=4", "--full-option", "batch_size=8",
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0, text
    assert "(a) self-tuning" in text and "mqar (accuracy)" in text and "top-k" in text
    assert "(d) full, seed 2" in text and "τ against the mean of both full runs" in text
    assert "95% intervals over the architectures" in " ".join(text.split())
    run = tmp_path / "runs" / "f"
    assert (run / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((run / RESULT).read_text())
    assert result["config"]["proxy_budget"] == "3steps"
    assert result["config"]["full_budget"] == "12steps"
    assert result["config"]["proxy"] == {"batch_size": 4}
    assert result["config"]["full"] == {"lr_schedule": "cosine", "batch_size": 8}
    seq_len = resolve_task(TaskSpec("mqar", TINY_MQAR)).task.seq_len
    rows = result["archs"]
    assert len({r["arch_hash"] for r in rows}) == 4
    for row in rows:
        assert (run / "graphs" / f"{row['arch_hash']}.parquet").is_file()
        runs = row["runs"]
        assert runs["full"]["metrics"]["steps"] == 12
        # The repeat is the same training at another seed: same budget, other numbers.
        assert runs[REPEAT]["metrics"]["steps"] == 12 and row["repeat_seed"] != row["seed"]
        assert runs[REPEAT]["metrics"]["loss"] != runs["full"]["metrics"]["loss"]
        assert runs["self_tuning"]["metrics"]["self_tuning"] is True
        assert runs["fixed"]["metrics"]["self_tuning"] is False
        assert runs["fixed"]["metrics"]["steps"] == 3 and row["params"] > 0
        # The proxy options shape (a) and (b) only, the full options the reference only.
        for kind in ("self_tuning", "fixed"):
            assert runs[kind]["metrics"]["tokens"] == 3 * 4 * seq_len
        for kind in ("full", REPEAT):
            assert runs[kind]["metrics"]["tokens"] == 12 * 8 * seq_len
        assert all(runs[k]["cpu_seconds"] > 0 for k in runs)
    for key in ("metric", "loss"):
        assert set(result["correlations"][key]) == {*PROXIES, REPEAT}
        assert set(result["two_seeds"][key]) == set(PROXIES)
        for stats in (*result["correlations"][key].values(), *result["two_seeds"][key].values()):
            assert stats["n"] == 4 and stats["k"] == 1 and 1 <= stats["pick_rank"] <= 4
    assert result["cpu_seconds"]["full"]["runs"] == 4
    assert set(result["bootstrap"]["tau"]) == {*PROXIES, REPEAT}
    assert set(result["bootstrap"]["difference"]) == {"self_tuning-fixed", "self_tuning-params"}
    # `ls` lists the folder as a fidelity result with its τ, not as an unreadable campaign.
    (tmp_path / "runs" / "u").mkdir()  # and one whose run never wrote its result
    (tmp_path / "runs" / "u" / "config.json").write_text('{"kind": "fidelity", "archs": 4}')
    capsys.readouterr()
    assert cli("ls", tmp_path / "runs") == 0
    listing = capsys.readouterr().out.splitlines()[1:]
    listed = {line.split()[0]: line.split() for line in listing if line[:1].strip()}
    assert listed["f"][:5] == ["f", "finished", "fidelity", "mqar", "4"]
    assert "τ(a)=" in " ".join(listing) and "unreadable" not in " ".join(listing)
    assert listed["u"][:3] == ["u", "unfinished", "fidelity"]
    assert result["failures"] == {"full": 0, REPEAT: 0, "self_tuning": 0, "fixed": 0}

    # Another proxy setting against the same reference: its full runs are reused, not rerun.
    base = ["fidelity", "--space", space, "--task", "mqar", *TASK_ARGS, "--archs", "4",
            "--proxy-budget", "3steps", "--runs-dir", tmp_path / "runs"]  # fmt: skip
    same = ["--full-budget", "12steps", "--full-option", "batch_size=8", "--reference", run]
    again = [*base, *same, "--proxy-option", "lr=0.001"]
    assert cli(*again, "--name", "g") == 0
    second = json.loads((tmp_path / "runs" / "g" / RESULT).read_text())
    assert second["config"]["reference"] == str(run) and not second["config"]["repeat_full"]
    for old, new in zip(rows, second["archs"]):
        assert new["runs"]["full"] == {**old["runs"]["full"], "reused": True}
        assert REPEAT not in new["runs"]  # not asked for this time
        assert (
            new["runs"]["self_tuning"]["metrics"]["hyperparameters"]["lr"]
            != (old["runs"]["self_tuning"]["metrics"]["hyperparameters"]["lr"])
        )
    capsys.readouterr()
    mismatched = {
        "other full budget": ([*same, "--full-budget", "24steps"], "full_budget"),
        "other full options": (same[:2] + same[4:], "measured with full"),
        "other seed": ([*same, "--seed", "1"], "seed"),
        "bad full option": ([*same, "--full-option", "lr_schedule=steep"], "lr_schedule"),
        "no result": (["--full-budget", "12steps", "--reference", tmp_path], "no fidelity.json"),
    }
    for label, (extra, needle) in mismatched.items():
        assert cli(*base, *extra, "--name", "h") == 2, label
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (label, err)
        assert not (tmp_path / "runs" / "h").exists()


def test_analyse_ranks_the_repeat_only_when_there_is_one():
    def row(i: int, full: float, repeat: float | None) -> dict:
        runs = {"full": {"metrics": {"metric": full, "loss": -full}, "cpu_seconds": 1.0}}
        for kind in ("self_tuning", "fixed"):
            runs[kind] = {"metrics": {"metric": full, "loss": -full}, "cpu_seconds": 0.1}
        if repeat is not None:
            runs[REPEAT] = {"metrics": {"metric": repeat, "loss": -repeat}, "cpu_seconds": 1.0}
        return {"index": i, "params": float(i), "runs": runs}

    plain = analyse([row(i, v, None) for i, v in enumerate([0.1, 0.5, 0.9])], True)
    assert set(plain["correlations"]["metric"]) == set(PROXIES) and REPEAT not in plain["failures"]
    # The repeat swaps the top two: one discordant pair of three.
    rows = [row(i, v, r) for i, (v, r) in enumerate([(0.1, 0.1), (0.5, 0.9), (0.9, 0.5)])]
    both = analyse(rows, higher_is_better=True, repeat_full=True)
    assert both["correlations"]["metric"][REPEAT]["tau"] == pytest.approx(1 / 3, abs=EXACT)
    assert both["correlations"]["metric"]["self_tuning"]["tau"] == pytest.approx(1.0)
    assert both["cpu_seconds"][REPEAT] == {"total": 3.0, "mean": 1.0, "runs": 3}
    # Against the mean of both full runs, (0.1, 0.7, 0.7), the proxy's (0.1, 0.5, 0.9) has two
    # concordant pairs and one tied in the reference: τ-b = 2 / √(3·2).
    two = both["two_seeds"]["metric"]
    assert set(two) == set(PROXIES) and "two_seeds" not in plain
    assert two["self_tuning"]["tau"] == pytest.approx(2 / math.sqrt(6), abs=EXACT)


def test_bootstrap_intervals_are_paired_and_cover_the_truth():
    rng = np.random.default_rng(3)
    truth = list(rng.normal(size=30))
    noisy = [t + e for t, e in zip(truth, rng.normal(scale=0.7, size=30))]
    unrelated = list(rng.normal(size=30))
    scores = {"exact": truth, "noisy": noisy, "same": noisy, "unrelated": unrelated}
    pairs = (("noisy", "same"), ("exact", "unrelated"), ("noisy", "unrelated"))
    boot = bootstrap_taus(scores, truth, pairs, resamples=400, seed=1)
    assert boot["resamples"] == 400 and boot["level"] == 0.95
    assert boot["tau"]["exact"] == pytest.approx([1.0, 1.0], abs=EXACT)
    observed = rank_correlations(noisy, truth)["tau"]
    lo, hi = boot["tau"]["noisy"]
    assert lo < observed < hi and hi - lo > 0.1  # 30 samples cannot pin τ down
    lo, hi = boot["tau"]["unrelated"]
    assert lo < 0 < hi
    # Paired: the same scores differ by exactly 0 in every resample.
    assert boot["difference"]["noisy-same"] == [0.0, 0.0]
    assert boot["difference"]["exact-unrelated"][0] > 0.5
    assert boot["difference"]["noisy-unrelated"][0] > 0
    # Seeded: the same intervals every time.
    assert bootstrap_taus(scores, truth, pairs, resamples=400, seed=1) == boot


def test_bootstrap_gives_no_interval_where_tau_is_mostly_undefined():
    flat = [1.0] * 10
    boot = bootstrap_taus(
        {"flat": flat, "other": list(range(10))},
        list(range(10)),
        (("flat", "other"),),
        resamples=50,
    )
    assert boot["tau"]["flat"] is None and boot["difference"]["flat-other"] is None
    assert boot["tau"]["other"] == pytest.approx([1.0, 1.0], abs=EXACT)


def test_max_params_samples_only_architectures_within_the_limit(tmp_path):
    from gatesearch.experiments.fidelity import FidelityRequest, prepare

    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    evaluator = resolve_task(TaskSpec("mqar", TINY_MQAR))
    req = FidelityRequest(space=space, task_params=TINY_MQAR, archs=6, runs_dir=tmp_path)
    _, _, free = prepare(req)
    sizes = sorted(evaluator.count_params(a.graph) for a in free)
    limit = sizes[len(sizes) // 2]
    config, _, archs = prepare(replace(req, max_params=limit))
    assert config.max_params == limit and len(archs) == 6
    assert all(evaluator.count_params(a.graph) <= limit for a in archs)


def test_fidelity_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    base = ["fidelity", "--runs-dir", tmp_path / "runs", "--proxy-budget", "1steps"]
    cases = {
        "unknown task": (["--task", "mqar9"], "mqar9"),
        "null task": (["--task", "null"], "trains no model"),
        "too few archs": (["--archs", "2"], "--archs"),
        "bad budget": (["--full-budget", "ten"], "ten"),
        "bad trainer": (["--full-trainer", "grid"], "grid"),
        "missing space": (["--space", tmp_path / "nope.space"], "nope.space"),
        "existing run": (["--name", "taken"], "already exists"),
        "bad param": (["--task-param", "vocab=1"], "vocab"),
        "zero limit": (["--max-params", "0"], "--max-params must be at least 1"),
        "no cpus": (["--cpus", "0"], "--cpus must be at least 1"),
        "negative gpus": (["--gpus", "-1"], "--gpus must be at least 0"),
        "unknown proxy option": (["--proxy-option", "batch=8"], "unknown proxy option 'batch'"),
        "unknown full option": (["--full-option", "batch=8"], "--full-option: unknown proxy"),
        "proxy option type": (["--proxy-option", "batch_size=0.5"], "takes an integer"),
        "proxy option range": (["--proxy-option", "lr=2"], "lr must lie within"),
        "proxy option form": (["--proxy-option", "centred"], "expected key=value"),
        # 3 archs: it gives up after 200 draws per architecture asked for, ~6 ms each.
        "nothing fits": (
            ["--max-params", "10", "--archs", "3"],
            "distinct architectures within --max-params",
        ),
    }
    for label, (extra, needle) in cases.items():
        capsys.readouterr()
        assert cli(*base, *extra) == 2, label
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (label, err)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["taken"]
