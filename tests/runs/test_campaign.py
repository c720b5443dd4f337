"""The campaign loop in process: failures, timeouts, duplicates, seeds, budgets."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from optuna.trial import TrialState

from gatesearch.budget import Budget, BudgetError, BudgetUnit, parse_budget
from gatesearch.runs.campaign import Campaign, open_for_resume
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.runs.ranking import summary
from gatesearch.runs.request import (
    CampaignError,
    RunRequest,
    package_versions,
    prepare_run,
    trial_seed,
)
from gatesearch.runs.store import RunStore

TINY_SPACE = """\
task causal
let width = choice(64)
model := embed stack rmsnorm head
stack := repeat(block, 1..1)
block := residual(rmsnorm mixer)
mixer := gru | lstm
"""


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def run_campaign(tmp_path: Path, **kw) -> RunStore:
    req = RunRequest(runs_dir=tmp_path / "runs", name="c", **kw)
    config, space, preset = prepare_run(req)
    store = RunStore.create(req.runs_dir / "c", config, space, preset.text, package_versions())
    with store:
        Campaign(store).run()
    return RunStore.open(req.runs_dir / "c", writer=False)


def test_failed_trials_are_stored_with_reasons_and_the_campaign_goes_on(tmp_path):
    store = run_campaign(tmp_path, task="null-faulty", trials=16, strategy="random")
    records = store.records()
    assert len({r.slot for r in records}) == 16
    failed = [r for r in records if r.state is TrialState.FAIL]
    assert failed and len(failed) < 16
    reasons = {r.fail_reason for r in failed}
    assert any("injected fault" in x for x in reasons)
    assert all(r.fail_reason for r in failed)
    info = summary(store)
    assert info["failed"] == len(failed) and info["finished"] == 16
    assert sum(info["failure_reasons"].values()) == len(failed)


def test_duplicates_reuse_the_stored_result(tmp_path):
    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    store = run_campaign(tmp_path, task="null", space=space, trials=12, strategy="random")
    records = store.records()
    originals = [r for r in records if r.duplicate_of is None]
    dups = [r for r in records if r.duplicate_of is not None]
    assert len(originals) == 2 and len(dups) == 10  # the space holds two architectures
    by_number = {r.number: r for r in records}
    for d in dups:
        assert d.values == by_number[d.duplicate_of].values
        assert d.arch_hash == by_number[d.duplicate_of].arch_hash
    assert len(list((store.root / "graphs").glob("*.parquet"))) == 2
    assert summary(store)["duplicates"] == 10


SMALL_SPACE = """\
task causal
let width = choice(64)
model := embed stack rmsnorm head
stack := repeat(block, 1..2)
block := residual(rmsnorm mixer)
mixer := gru | lstm | mingru
"""


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_repeated_proposals_are_asked_again_and_take_no_trial(tmp_path, strategy):
    """Twelve architectures, six trials: a strategy repeats itself often in so small a space,
    and each repeat is set aside for a fresh proposal instead of spending a trial."""
    space = tmp_path / "small.space"
    space.write_text(SMALL_SPACE)
    store = run_campaign(tmp_path, task="null", space=space, trials=6, strategy=strategy)
    records = store.records()
    trials = [r for r in records if r.slot >= 0]
    assert len(trials) == 6 and all(r.duplicate_of is None for r in trials)
    assert len({r.arch_hash for r in trials}) == 6
    info = summary(store)
    assert info["finished"] == 6 and info["duplicates"] == 0 and info["repeated"] > 0
    if strategy == "tpe":  # its repeats are failed trials of its study, outside every slot
        repeats = [r for r in records if r.slot < 0]
        assert repeats and all(r.outcome is TrialOutcome.REPEATED for r in repeats)
    store.close()
    with open_for_resume(store.root, 1, None) as resumed:  # counted on from the stored count
        assert Campaign(resumed).stats.repeated == info["repeated"]


def test_every_trial_carries_its_choices_as_optuna_parameters(tmp_path):
    """Evolution's and random search's trials too (not only an Optuna sampler's), with the
    distributions an Optuna sampler suggests from: a TPE continuing the study, and
    optuna-dashboard's parameter plots and importances, see every trial."""
    import warnings

    import optuna

    store = run_campaign(tmp_path, task="null", trials=6, strategy="evolution")
    trials = store.study.trials
    assert len(trials) == 6
    for t, r in zip(trials, store.records()):
        assert t.params == r.choices and t.params  # every choice point, as chosen
        for path, dist in t.distributions.items():
            assert dist._contains(dist.to_internal_repr(t.params[path])), path
    # Optuna's own analysis runs over them (its default evaluator; fANOVA needs sklearn).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some regimes have less than 2 trials": 6 trials
        assert optuna.importance.get_param_importances(store.study)


TINY_MQAR = {"vocab": 16, "length": 16, "pairs": 2, "n_valid": 32, "n_test": 32}


def test_a_real_task_trains_through_the_proxy(tmp_path):
    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    store = run_campaign(
        tmp_path, task="mqar", task_params=TINY_MQAR, space=space, budget="5steps", trials=1
    )
    (record,) = store.records()
    assert record.state is TrialState.COMPLETE, record.fail_reason
    assert record.metrics["steps"] == 5 and record.metrics["params"] > 0
    assert record.metrics["host"] == socket.gethostname()  # the local Ray's one node
    assert store.config.to_dict()["directions"] == ["maximize"]  # accuracy, the task's metric
    assert record.values == (record.metrics["accuracy"],)
    assert 0.0 <= record.values[0] <= 1.0
    assert "lr" in record.metrics["hyperparameters"] and "trajectory" not in record.metrics
    doc = store.load_trial_metrics(record.number)
    assert doc["metrics"]["trajectory"] and doc["arch_hash"] == record.arch_hash
    assert doc["task"] == {"name": "mqar", "params": {**TINY_MQAR, "alpha": 0.1, "data_seed": 0}}


def test_proxy_options_reach_every_trial_and_survive_resume(tmp_path):
    from gatesearch.evaluate import resolve_task
    from gatesearch.runs.campaign import open_for_resume
    from gatesearch.tasks import TaskSpec

    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    options = {"self_tuning": True, "batch_size": 4, "hyper_warmup": 0.0, "train_per_hyper": 1}
    kw = {"task": "mqar", "task_params": TINY_MQAR, "space": space, "budget": "3steps"}
    store = run_campaign(tmp_path, trials=1, proxy=options, **kw)
    assert store.config.to_dict()["proxy"] == options
    with open_for_resume(store.root, trials=1, address=None) as again:
        Campaign(again).run()
    records = RunStore.open(store.root, writer=False).records()
    assert len(records) == 2
    seq_len = resolve_task(TaskSpec("mqar", TINY_MQAR)).task.seq_len
    for r in records:  # 3 steps of 4 sequences, a hyper step after each but the last
        assert r.state is TrialState.COMPLETE, r.fail_reason
        assert (r.metrics["tokens"], r.metrics["hyper_steps"]) == (3 * 4 * seq_len, 2)
    # Without options the trainer's defaults (batch 32) apply, with fixed hyperparameters:
    # the campaign's default, written into the run so that it stays what the run began with.
    plain = run_campaign(tmp_path / "plain", trials=1, **kw)
    assert plain.config.to_dict()["proxy"] == {"self_tuning": False}
    (first,) = plain.records()
    assert first.metrics["tokens"] == 3 * 32 * seq_len
    assert first.metrics["self_tuning"] is False and first.metrics["hyper_steps"] == 0


def test_a_run_stored_before_fixed_hyperparameters_were_the_default_resumes_self_tuning(
    tmp_path,
):
    """A config.json whose proxy table does not name self_tuning was written when campaigns
    self-tuned by default: its trials go on self-tuning, as they began."""
    import json

    from gatesearch.runs.campaign import open_for_resume

    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    kw = {"task": "mqar", "task_params": TINY_MQAR, "space": space, "budget": "3steps"}
    store = run_campaign(tmp_path, trials=1, proxy={"batch_size": 4}, **kw)
    path = store.root / "config.json"
    doc = json.loads(path.read_text())
    assert doc["proxy"] == {"self_tuning": False, "batch_size": 4}
    doc["proxy"] = {"batch_size": 4}  # as a run of the earlier default stored it
    path.write_text(json.dumps(doc, indent=2))
    with open_for_resume(store.root, trials=1, address=None) as again:
        Campaign(again).run()
    second = max(RunStore.open(store.root, writer=False).records(), key=lambda r: r.number)
    assert second.state is TrialState.COMPLETE, second.fail_reason
    assert second.metrics["self_tuning"] is True


def test_a_self_tuning_option_without_the_self_tuning_proxy_is_refused(tmp_path):
    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    with pytest.raises(CampaignError, match=r"hyper_lr acts only on the self-tuning proxy.*"
                       r"self_tuning=true"):  # fmt: skip
        run_campaign(tmp_path, trials=1, space=space, proxy={"hyper_lr": 0.1})
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    store = run_campaign(  # with it, the option is taken
        tmp_path, trials=1, space=space, budget="2steps", task="mqar", task_params=TINY_MQAR,
        proxy={"hyper_lr": 0.1, "self_tuning": True},
    )  # fmt: skip
    assert store.config.to_dict()["proxy"] == {"self_tuning": True, "hyper_lr": 0.1}


def test_learning_curves_are_the_studys_intermediate_values(tmp_path):
    """Read back through Optuna's own storage API, as optuna-dashboard reads them: the
    validation points of each trial at its weight steps, ending at its final score."""
    import optuna

    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    kw = {"task": "mqar", "task_params": TINY_MQAR, "space": space, "budget": "6steps"}
    store = run_campaign(tmp_path, trials=2, proxy={"eval_points": 3, "batch_size": 4}, **kw)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(store.root / "study.journal"))
    )
    study = optuna.load_study(study_name="c", storage=storage)
    originals = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert originals
    for t in originals:
        assert t.state is TrialState.COMPLETE
        assert sorted(t.intermediate_values) == [2, 4, 6]  # 3 points over 6 steps
        assert t.intermediate_values[6] == pytest.approx(t.values[0])
        curve = store.load_trial_metrics(t.number)["metrics"]["curve"]
        assert [t.intermediate_values[p["step"]] for p in curve] == [
            p["valid_metric"] for p in curve
        ]
    # Several objectives: Optuna keeps no curve for them.
    multi = run_campaign(tmp_path / "multi", trials=1, objectives="metric,params", **kw)
    assert all(not t.intermediate_values for t in multi.study.trials)


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_max_params_turns_larger_models_down_untrained_and_keeps_the_rest(tmp_path, strategy):
    """The limit is checked on the model built for the task (here MQAR's vocabulary of 16):
    the LSTM block is larger than the GRU block, so with the limit between them every LSTM
    proposal is turned down at once and every GRU proposal trains. Turned-down proposals are
    a count in the study; one an Optuna sampler made is a pruned trial with its reason."""
    from gatesearch.arch.build import build_model, count_params
    from gatesearch.arch.space import Architecture, load_space
    from gatesearch.evaluate import resolve_task
    from gatesearch.grammar.derive import sample
    from gatesearch.proxy.trainer import task_context
    from gatesearch.tasks import TaskSpec

    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    evaluator = resolve_task(TaskSpec("mqar", TINY_MQAR))
    sizes = {}
    for seed in range(20):
        arch = Architecture.from_derivation(sample(load_space(space), seed))
        model = build_model(arch.graph, task_context(arch.graph, evaluator.task))
        sizes[arch.hash] = count_params(model)
        assert evaluator.count_params(arch.graph) == sizes[arch.hash]  # meta == real
    small, large = sorted(sizes.values())
    limit = (small + large) // 2
    store = run_campaign(
        tmp_path,
        task="mqar",
        task_params=TINY_MQAR,
        space=space,
        budget="2steps",
        trials=6,
        strategy=strategy,
        max_params=limit,
    )
    assert store.config.to_dict()["max_params"] == limit
    records = store.records()
    trained = [r for r in records if r.slot >= 0]
    # (An Optuna sampler's repeats of the GRU block are trials outside every slot too.)
    rejected = [r for r in records if r.outcome is TrialOutcome.REJECTED]
    # Turned-down proposals take no slot: all six slots trained the GRU block.
    assert sorted(r.slot for r in trained) == list(range(6))
    for r in trained:
        assert sizes[r.arch_hash] == small and r.choices
        assert r.state is TrialState.COMPLETE and r.metrics["steps"] == 2
    if strategy == "random":
        assert rejected == [] and store.rejected_untracked > 0
    else:  # the sampler's own trials, pruned with the reason, their choices not kept
        assert rejected and store.rejected_untracked == 0
    for r in rejected:
        # PRUNED, not FAIL: TPE learns from pruned trials (the worst of all without values).
        assert sizes[r.arch_hash] == large and r.state is TrialState.PRUNED and r.choices == {}
        # ... and infeasible by how far it is over, which TPE ranks after every scored trial.
        assert store.study.trials[r.number].constraints == {"params_over_limit": large - limit}
        assert r.fail_reason == (
            f"over the parameter limit: {large:,} parameters > --max-params {limit:,}"
        )
    total = store.rejected_untracked + len(rejected)
    info = summary(store)
    assert (info["finished"], info["failed"], info["rejected"]) == (6, 0, total)
    # The report counts them apart and analyses only what was trained.
    from gatesearch.report import load_run

    data = load_run(store.root)
    assert data.counts()["rejected"] == total and data.counts()["failed"] == 0
    assert sorted(r.slot for r in data.records) == list(range(6))
    # A resumed campaign counts on from the stored count.
    store.close()
    resumed = open_for_resume(store.root, 2, None)
    with resumed:
        stats = Campaign(resumed).run()
        assert stats.rejected >= total and stats.done == 8
        assert summary(resumed)["rejected"] == stats.rejected

    # A limit nothing fits stops the campaign with one line, before any training.
    req = RunRequest(
        runs_dir=tmp_path / "runs",
        name="none-fit",
        task="mqar",
        task_params=TINY_MQAR,
        space=space,
        strategy="random",
        trials=2,
        max_params=10,
    )
    config, space_path, preset = prepare_run(req)
    store = RunStore.create(
        req.runs_dir / "none-fit", config, space_path, preset.text, package_versions()
    )
    with store, pytest.raises(CampaignError, match="proposals in a row are over --max-params 10"):
        Campaign(store).run()
    with pytest.raises(CampaignError, match="--max-params must be at least 1"):
        prepare_run(RunRequest(task="null", max_params=0))


def test_seed_archs_run_as_given_under_a_parameter_limit(tmp_path):
    """The limit turns down proposals; a known architecture the user seeds is run as asked."""
    known = Path(__file__).resolve().parents[2] / "spaces" / "known" / "llama.toml"
    store = run_campaign(tmp_path, task="null", trials=1, seed_archs=[known], max_params=1000)
    (record,) = store.records()
    assert record.state is TrialState.COMPLETE and record.slot == 0
    assert summary(store)["rejected"] == 0


def test_trial_seeds_depend_on_campaign_seed_and_slot():
    seeds = {trial_seed(s, slot) for s in range(3) for slot in range(50)}
    assert len(seeds) == 150
    assert trial_seed(1, 2) == trial_seed(1, 2)
    assert trial_seed(1, 2, stream=1) != trial_seed(1, 2)


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        ("200steps", 200, BudgetUnit.STEPS),
        ("30s", 30, BudgetUnit.SECONDS),
        ("0.5s", 0.5, BudgetUnit.SECONDS),
        ("1e6tokens", 1e6, BudgetUnit.TOKENS),
        (" 12 steps ", 12, BudgetUnit.STEPS),
    ],
    ids=lambda v: str(v),
)
def test_budget_parsing(text, amount, unit):
    budget = parse_budget(text)
    assert budget == Budget(amount, unit)
    assert parse_budget(str(budget)) == budget


@pytest.mark.parametrize("text", ["", "10", "steps", "-5steps", "1.5steps", "3 weeks", "0s"])
def test_bad_budgets_name_the_accepted_forms(text):
    with pytest.raises(BudgetError, match=r"budget"):
        parse_budget(text)


def test_an_overflowing_budget_is_called_too_large_not_negative():
    with pytest.raises(BudgetError, match=r"'1e999tokens' is too large"):
        parse_budget("1e999tokens")


def test_tokens_budget_becomes_steps():
    assert parse_budget("1e6tokens").steps(tokens_per_step=1024) == 977
    assert parse_budget("30s").steps(tokens_per_step=1024) is None


def test_the_tasks_metric_name_stands_for_metric():
    config = prepare_run(RunRequest(task="mqar", objectives="accuracy,params"))[0].to_dict()
    assert config["objectives"] == ["metric", "params"]
    assert config["directions"] == ["maximize", "minimize"]
    with pytest.raises(CampaignError, match=r"choose from loss, metric \(accuracy\), params"):
        prepare_run(RunRequest(task="mqar", objectives="acc"))
    with pytest.raises(CampaignError, match="names an objective twice"):
        prepare_run(RunRequest(task="mqar", objectives="metric,accuracy"))


def test_bad_objectives_and_seed_arch(tmp_path):
    with pytest.raises(CampaignError, match="unknown objective 'acc'"):
        prepare_run(RunRequest(task="null", objectives="loss,acc"))
    with pytest.raises(CampaignError, match="at least 1"):
        prepare_run(RunRequest(task="null", trials=0))


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_between_storing_and_dispatching_a_trial_leaves_nothing_running(
    tmp_path, monkeypatch, signals
):
    """The race a real Ctrl-C can hit: the trial is in the study, not yet in flight. One
    Ctrl-C is deferred to the loop's next check; a second interrupts at once, and the
    driver's sweep fails what it had opened."""
    req = RunRequest(runs_dir=tmp_path / "runs", name="c", task="null", trials=8)
    config, space, preset = prepare_run(req)
    store = RunStore.create(req.runs_dir / "c", config, space, preset.text, package_versions())
    start_trial = store.start_trial

    def start_then_interrupt(*args, **kw):
        opened = start_trial(*args, **kw)
        if opened[1] == 2:  # the third trial: two are already in flight
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)
        return opened

    monkeypatch.setattr(store, "start_trial", start_then_interrupt)
    # A suite started in the background (`cmd &`) inherits SIGINT ignored: give this process
    # the disposition a terminal gives it for the test's length.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with store, pytest.raises(KeyboardInterrupt):
            Campaign(store).run()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    with RunStore.open(req.runs_dir / "c", writer=False) as reopened:
        info = summary(reopened)
        states = [r.state for r in reopened.records()]
    assert TrialState.RUNNING not in states and len(states) == 3
    assert info["running"] == 0 and info["interrupted"] == 3 - info["finished"]


def test_the_timeout_counts_from_a_trials_start_not_its_queueing(tmp_path):
    """8 workers on the module's 2-CPU Ray: the last pair of 1 s trials waits three rounds
    (≥ 3 s) for a CPU, so a 4 s timeout counted from dispatch would fail them."""
    store = run_campaign(
        tmp_path, task="null", budget="1s", timeout=4, workers=8, trials=8, strategy="random"
    )
    records = store.records()
    assert [r.state for r in records] == [TrialState.COMPLETE] * 8


# Last in the module: cancelling a trial kills its Ray worker, and new workers take seconds
# to start.
def test_a_trial_past_its_timeout_fails_as_timed_out(tmp_path):
    store = run_campaign(
        tmp_path, task="null", budget="30s", timeout=0.5, trials=2, strategy="random"
    )
    records = store.records()
    assert [r.state for r in records] == [TrialState.FAIL] * 2
    assert all("timeout" in r.fail_reason for r in records)
