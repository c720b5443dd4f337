"""MAD's synthetic tasks generate what their docstrings say, and a solver that follows each
task's rule scores 1.0 through the task's own metric."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from gatesearch.tasks import (
    Batch,
    Compression,
    FuzzyRecall,
    InContextRecall,
    Memorization,
    NoisyRecall,
    Split,
    Task,
    TaskError,
    make_task,
)
from gatesearch.tasks.synthetic import SyntheticTask

N = 256  # sequences per fixed set: enough for chance levels within the tolerances below
NAMES = ["in_context_recall", "noisy_recall", "fuzzy_recall", "memorization", "compression"]


def small(name: str, **params: object) -> SyntheticTask:
    task = make_task(name, n_valid=N, n_test=N, **params)
    assert isinstance(task, SyntheticTask)
    return task


def score(task: Task, outputs: torch.Tensor, batch: Batch) -> float:
    hit, count = task.metric(outputs, batch)
    return hit / count


# ---------------------------------------------------------------------- solvers by the rule


def recall_solver(
    inputs: torch.Tensor, n_out: int, kind: Callable[[int], str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot predictions (B, T, n_out) of a reader that parses each sequence causally into
    key motifs and value motifs (`kind` tells "key", "value" or "other" for a token) and, once
    a key has been seen with its value, predicts that value's tokens after the key recurs;
    and (B, T) where it made a prediction."""
    B, T = inputs.shape
    out = torch.zeros(B, T, n_out)
    made = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        seen: dict[tuple[int, ...], tuple[int, ...]] = {}
        key: list[int] = []
        value: list[int] = []
        for t, tok in enumerate(inputs[b].tolist()):
            k = kind(tok)
            if k != "value" and (value or k == "other"):  # a pair ends
                if key and value:
                    seen.setdefault(tuple(key), tuple(value))
                key, value = [], []
            if k == "key":
                key.append(tok)
            elif k == "value":
                value.append(tok)
            known = seen.get(tuple(key))
            if key and known is not None and len(value) < len(known):
                out[b, t, known[len(value)]] = 1.0
                made[b, t] = True
    return out, made


def recall_kinds(task: Task) -> Callable[[int], str]:
    if isinstance(task, FuzzyRecall):
        K, top = (task.vocab - 1) // 2, task.vocab - 1
    else:
        assert isinstance(task, InContextRecall)
        top = task.vocab - task.noise_vocab
        K = top // 2

    def kind(tok: int) -> str:
        return "key" if tok < K else "value" if tok < top else "other"

    return kind


def solve(task: Task, batch: Batch) -> torch.Tensor:
    """The task's own rule applied to the inputs, as model outputs (B, T, n_out)."""
    B, T = batch.inputs.shape
    if isinstance(task, (InContextRecall, FuzzyRecall)):
        return recall_solver(batch.inputs, task.n_out, recall_kinds(task))[0]
    out = torch.zeros(B, T, task.n_out)
    if isinstance(task, Memorization):
        values = task.kv_map()[batch.inputs[:, 0::2]]  # (B, T/2): the key before each insert
        out[:, 1::2].scatter_(2, values.unsqueeze(2), 1.0)
        return out
    assert isinstance(task, Compression)
    blocks = out[:, -1].view(B, T - 1, task.vocab)  # (B, T − 1, V), a view into `out`
    blocks.scatter_(2, batch.inputs[:, :-1].unsqueeze(2), 1.0)
    return out


# ---------------------------------------------------------------------- every task


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_token_range(name: str) -> None:
    task = small(name)
    for batch in (task.fixed_set(Split.VALID), next(task.batches(Split.TRAIN, 16))):
        B, T = batch.inputs.shape
        assert T == task.seq_len
        assert batch.inputs.dtype == batch.targets.dtype == torch.int64
        assert batch.targets.shape == batch.mask.shape == (B, T)
        assert batch.mask.dtype == torch.bool and batch.mask.any(dim=1).all()
        assert 0 <= int(batch.inputs.min()) and int(batch.inputs.max()) < task.n_in
        assert 0 <= int(batch.targets.min()) and int(batch.targets.max()) < task.n_in


@pytest.mark.parametrize("name", NAMES)
def test_sets_are_a_function_of_the_seed(name: str) -> None:
    a, b, c = small(name), small(name), small(name, data_seed=1)
    for split in (Split.VALID, Split.TEST):
        x, y, z = a.fixed_set(split), b.fixed_set(split), c.fixed_set(split)
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
        assert torch.equal(x.mask, y.mask)
        assert not torch.equal(x.inputs, z.inputs)
    assert not torch.equal(a.fixed_set(Split.VALID).inputs, a.fixed_set(Split.TEST).inputs)
    t0, t0_again, t1 = (next(a.batches(Split.TRAIN, 8, seed=s)) for s in (0, 0, 1))
    assert torch.equal(t0.inputs, t0_again.inputs) and not torch.equal(t0.inputs, t1.inputs)


@pytest.mark.parametrize("name", NAMES)
def test_the_rule_scores_one_and_a_constant_scores_chance(name: str) -> None:
    task = small(name)
    batch = task.fixed_set(Split.VALID)
    assert score(task, solve(task, batch), batch) == 1.0
    # Chance: the share of scored targets equal to one fixed answer (a value token, or a
    # data token), which the task draws uniformly.
    chance = {
        "in_context_recall": 1 / 8,
        "noisy_recall": 1 / 8,
        "fuzzy_recall": 1 / 8,
        "memorization": 1 / 127,
        "compression": 1 / 15,
    }[name]
    answer = int(batch.targets[batch.mask][0]) if name != "compression" else 0
    constant = torch.zeros(batch.inputs.shape[0], task.seq_len, task.n_out)
    if isinstance(task, Compression):
        constant[:, -1].view(-1, task.length - 1, task.vocab)[:, :, answer] = 1.0
    else:
        constant[:, :, answer] = 1.0
    assert score(task, constant, batch) == pytest.approx(chance, abs=0.4 * chance)


# ---------------------------------------------------------------------- scored positions


@pytest.mark.parametrize("name", ["in_context_recall", "noisy_recall"])
def test_recall_scores_the_keys_seen_before_and_the_last(name: str) -> None:
    task = small(name)
    b = task.fixed_set(Split.VALID)
    assert task.seq_len == task.length - 1
    _, answerable = recall_solver(b.inputs, task.n_out, recall_kinds(task))
    assert torch.equal(b.mask, answerable), "scored exactly where a recurring key stands"
    assert not b.mask[:, 1::2].any(), "values are never scored: the key before them is"
    assert b.mask[:, -1].all(), "the last slot repeats a key"
    K = (task.vocab - task.noise_vocab) // 2
    assert (b.inputs[b.mask] < K).all() and (b.targets[b.mask] >= K).all()


def test_noisy_recall_noise_share() -> None:
    task = NoisyRecall(n_valid=N)
    b = task.fixed_set(Split.VALID)
    noise = b.inputs[:, 0::2] >= task.vocab - task.noise_vocab  # (N, P): first of each slot
    assert noise[:, :-1].float().mean().item() == pytest.approx(task.frac_noise, abs=0.02)
    assert not noise[:, -1].any()
    assert InContextRecall(n_valid=8).fixed_set(Split.VALID).inputs.max() < 16


def test_fuzzy_recall_scores_the_values_of_recurring_keys() -> None:
    task = FuzzyRecall(n_valid=N)
    b = task.fixed_set(Split.VALID)
    _, answerable = recall_solver(b.inputs, task.n_out, recall_kinds(task))
    assert torch.equal(b.mask, answerable)
    assert b.mask[:, -1].all(), "the final probe's value is scored"
    # Validation keys are all key_size tokens long; training keys vary from 1 token up.
    kinds = recall_kinds(task)

    def key_lengths(inputs: torch.Tensor) -> set[int]:
        runs: set[int] = set()
        for row in inputs.tolist():
            run = 0
            for tok in [*row, task.vocab - 1]:
                if kinds(tok) == "key":
                    run += 1
                elif run:
                    runs.add(run)
                    run = 0
        return runs

    assert key_lengths(b.inputs) == {task.key_size}
    train = next(task.batches(Split.TRAIN, 64))
    assert key_lengths(train.inputs) == set(range(1, task.key_size + 1))


def test_memorization_map_is_fixed_and_scored_at_the_inserts() -> None:
    task = Memorization(n_valid=N)
    b = task.fixed_set(Split.VALID)
    assert (b.inputs[:, 1::2] == task.vocab - 1).all() and b.mask[:, 1::2].all()
    assert not b.mask[:, 0::2].any()
    kv = task.kv_map()
    assert len(set(kv.tolist())) == kv.numel() == 127, "distinct values, one a key"
    assert torch.equal(kv, Memorization().kv_map()), "the same map in every instance"
    assert not torch.equal(kv, Memorization(data_seed=1).kv_map())


def test_compression_reads_only_the_last_position() -> None:
    task = Compression(n_valid=N)
    b = task.fixed_set(Split.VALID)
    assert task.n_out == 31 * 16
    assert (b.inputs[:, -1] == 15).all() and (b.inputs[:, :-1] < 15).all()
    assert b.mask[:, -1].all() and not b.mask[:, :-1].any(), "the one position read"
    assert torch.equal(b.targets, b.inputs)
    out = solve(task, b)
    out[:, :-1] = torch.randn(out[:, :-1].shape)  # the other positions do not count
    assert score(task, out, b) == 1.0
    assert float(task.loss(out, b)) < float(task.loss(torch.zeros_like(out), b))


# ---------------------------------------------------------------------- bad params


@pytest.mark.parametrize(
    "name,params,says",
    [
        ("in_context_recall", {"length": 127}, "even"),
        ("in_context_recall", {"vocab": 1}, "vocab"),
        ("in_context_recall", {"noise_vocab": 15}, "noise_vocab"),
        ("in_context_recall", {"frac_noise": 1.0}, "frac_noise"),
        ("in_context_recall", {"frac_noise": 0.2}, "noise_vocab"),
        ("noisy_recall", {"frac_noise": -0.1}, "frac_noise"),
        ("fuzzy_recall", {"key_size": 8}, "key_size"),
        ("fuzzy_recall", {"value_size": 0}, "value_size"),
        ("fuzzy_recall", {"length": 23}, "length"),
        ("memorization", {"length": 31}, "even"),
        ("memorization", {"vocab": 2}, "vocab"),
        ("compression", {"length": 1}, "length"),
        ("compression", {"vocab": "16"}, "vocab"),
    ],
)
def test_bad_params_are_one_line_errors(name: str, params: dict[str, object], says: str) -> None:
    with pytest.raises(TaskError, match=says) as info:
        make_task(name, **params)
    assert "\n" not in str(info.value) and name in str(info.value)
