"""One suite over every built-in task: the contract of `Task` (see gatesearch/tasks/base.py)."""

from __future__ import annotations

import itertools
import json
import pickle
from pathlib import Path

import pytest
import torch

from gatesearch.arch.build import build_model
from gatesearch.arch.space import load_known
from gatesearch.registry import InputKind
from gatesearch.tasks import (
    Batch,
    Readout,
    Split,
    Task,
    TaskSpec,
    available_tasks,
    evaluate,
    make_task,
)

SPACES = Path(__file__).resolve().parents[2] / "spaces"
SMALL_SETS = {"n_valid": 40, "n_test": 24}
BATCH = 8


def task_specs(request: pytest.FixtureRequest) -> dict[str, TaskSpec]:
    return {
        "mqar": TaskSpec("mqar", {"vocab": 32, "length": 24, "pairs": 3, **SMALL_SETS}),
        "selective_copy": TaskSpec("selective_copy", {"length": 20, "n_tokens": 4, **SMALL_SETS}),
        "parity": TaskSpec("parity", {"length": 12, **SMALL_SETS}),
        "flip_flop": TaskSpec("flip_flop", {"length": 16, **SMALL_SETS}),
        "in_context_recall": TaskSpec("in_context_recall", {"length": 16, **SMALL_SETS}),
        "noisy_recall": TaskSpec("noisy_recall", {"length": 16, **SMALL_SETS}),
        "fuzzy_recall": TaskSpec("fuzzy_recall", {"length": 32, **SMALL_SETS}),
        "memorization": TaskSpec("memorization", {"vocab": 32, "length": 8, **SMALL_SETS}),
        "compression": TaskSpec("compression", {"length": 8, **SMALL_SETS}),
        "charlm": TaskSpec(
            "charlm", {"path": str(request.getfixturevalue("small_corpus")), "seq_len": 16}
        ),
        "frames": TaskSpec("frames", {"path": str(request.getfixturevalue("frames_parquet"))}),
        "tokens": TaskSpec("tokens", {"path": str(request.getfixturevalue("tokens_parquet"))}),
        "classify": TaskSpec(
            "classify", {"path": str(request.getfixturevalue("classify_parquet"))}
        ),
    }


def test_suite_covers_every_builtin_task() -> None:
    assert set(available_tasks()) >= {
        "mqar",
        "selective_copy",
        "parity",
        "flip_flop",
        "charlm",
        "frames",
        "tokens",
        "classify",
        *MAD,
    }


MAD = ["in_context_recall", "noisy_recall", "fuzzy_recall", "memorization", "compression"]
NAMES = ["mqar", "selective_copy", "parity", "flip_flop", *MAD, "charlm", "frames", "tokens"]
NAMES.append("classify")


@pytest.fixture(params=NAMES)
def task(request: pytest.FixtureRequest) -> Task:
    return make_task(task_specs(request)[request.param])


@pytest.fixture(scope="module")
def llama_graph():
    return load_known(SPACES / "known" / "llama.toml").graph


def check_batch(task: Task, batch: Batch, batch_size: int | None) -> None:
    B, T = batch.mask.shape
    if batch_size is not None:
        assert B == batch_size
    assert batch.mask.dtype == torch.bool
    assert 1 <= T <= task.seq_len
    if task.input_kind is InputKind.TOKENS:
        assert batch.inputs.dtype == torch.int64 and batch.inputs.shape == (B, T)
        assert 0 <= int(batch.inputs.min()) and int(batch.inputs.max()) < task.n_in
    else:
        assert batch.inputs.dtype == torch.float32 and batch.inputs.shape == (B, T, task.n_in)
    assert batch.targets.shape[0] == B
    assert batch.mask.any(), "a batch with nothing to score"


def test_train_batches_have_the_declared_shapes(task: Task) -> None:
    for batch in itertools.islice(task.batches(Split.TRAIN, BATCH, seed=3), 3):
        check_batch(task, batch, BATCH)


def test_eval_splits_are_finite_fixed_and_independent_of_seed(task: Task) -> None:
    for split in (Split.VALID, Split.TEST):
        first = list(task.batches(split, BATCH))
        again = list(task.batches(split, BATCH))
        for batch in first:
            check_batch(task, batch, None)
        assert len(first) == len(again) and len(first) >= 1
        for a, b in zip(first, again):
            assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
        # A seed shuffles the order of the same examples.
        shuffled = list(task.batches(split, BATCH, seed=7))
        count = sum(int(b.mask.sum()) for b in first)
        assert sum(int(b.mask.sum()) for b in shuffled) == count


def test_train_stream_is_a_function_of_the_seed(task: Task) -> None:
    a = next(task.batches(Split.TRAIN, BATCH, seed=5))
    b = next(make_task(task.spec).batches(Split.TRAIN, BATCH, seed=5))
    c = next(task.batches(Split.TRAIN, BATCH, seed=6))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert torch.equal(a.mask, b.mask)
    assert not (a.inputs.shape == c.inputs.shape and torch.equal(a.inputs, c.inputs))


def test_loss_is_differentiable_and_metric_counts(task: Task) -> None:
    torch.manual_seed(0)
    batch = next(task.batches(Split.TRAIN, BATCH, seed=0))
    B, T = batch.mask.shape
    outputs = torch.randn(B, T, task.n_out, requires_grad=True)
    loss = task.loss(outputs, batch)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert outputs.grad is not None and outputs.grad.abs().sum() > 0
    # Unscored positions get no gradient: the mask is what counts.
    if batch.targets.shape[:2] == (B, T):
        assert outputs.grad[~batch.mask].abs().sum() == 0
    total, count = task.metric(outputs.detach(), batch)
    assert count > 0 and isinstance(total, float)
    if task.higher_is_better:
        assert 0 <= total <= count


def test_spec_round_trips_through_json_and_pickle(task: Task) -> None:
    doc = json.loads(json.dumps(task.spec.to_dict()))
    again = make_task(TaskSpec.from_dict(doc))
    assert again.spec == task.spec
    assert (again.n_in, again.n_out, again.causal) == (task.n_in, task.n_out, task.causal)
    list(task.batches(Split.VALID, BATCH))  # fill the caches, which pickles must leave behind
    blob = pickle.dumps(task)
    assert len(blob) < 10_000
    restored = pickle.loads(blob)
    a, b = next(task.batches(Split.VALID, BATCH)), next(restored.batches(Split.VALID, BATCH))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_evaluate_runs_a_built_model_over_a_split(task: Task, llama_graph) -> None:
    torch.manual_seed(0)
    model = build_model(llama_graph, task.context(d_model=128, causal=True))
    model.train()
    value = evaluate(model, task, Split.VALID, batch_size=16)
    assert model.training, "evaluate restores the training mode"
    assert value == pytest.approx(evaluate(model, task, Split.VALID, batch_size=5))
    if task.higher_is_better:
        assert 0.0 <= value <= 1.0
    else:
        assert 0.0 < value < 50.0


def test_the_readout_a_task_declares_is_the_shape_of_its_targets(task: Task) -> None:
    """What the exported docstring says of the output is what the loss reads: a label per
    sequence, a class per position, or a frame per position."""
    batch = next(task.batches(Split.VALID, BATCH))
    B, T = batch.mask.shape
    expected = {
        Readout.LAST_POSITION: ((B,), torch.int64),
        Readout.EVERY_POSITION: ((B, T), torch.int64),
        Readout.NEXT_FRAME: ((B, T, task.n_out), torch.float32),
        Readout.SEQUENCE_AT_LAST: ((B, T), torch.int64),
    }
    assert task.readout is not None, f"{task.name} does not say how it reads the output"
    shape, dtype = expected[task.readout]
    assert tuple(batch.targets.shape) == shape and batch.targets.dtype == dtype
