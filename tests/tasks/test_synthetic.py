"""The synthetic tasks generate what their docstrings say."""

from __future__ import annotations

import re

import pytest
import torch

from gatesearch.tasks import MQAR, FlipFlop, Parity, SelectiveCopy, Split, TaskError, make_task

N = 256  # sequences per structural check


def full(task, split=Split.VALID):
    return task.fixed_set(split)


@pytest.mark.parametrize(
    "vocab,length,pairs",
    [(256, 64, 4), (32, 24, 6), (16, 16, 1)],
    ids=["V256-T64-P4", "V32-T24-P6", "V16-T16-P1"],
)
def test_mqar_structure(vocab: int, length: int, pairs: int) -> None:
    task = MQAR(vocab=vocab, length=length, pairs=pairs, n_valid=N)
    b = full(task)
    half = vocab // 2
    keys, values = b.inputs[:, 0 : 2 * pairs : 2], b.inputs[:, 1 : 2 * pairs : 2]  # (N, P)
    assert ((1 <= keys) & (keys < half)).all(), "keys from the lower half (0 is not a key)"
    assert ((half <= values) & (values < vocab)).all(), "values from the upper half"
    for row in (keys, values):
        assert (row.sort(dim=1).values.diff(dim=1) > 0).all(), "distinct within a sequence"
    assert (b.mask.sum(dim=1) == pairs).all(), "each key queried once"
    assert not b.mask[:, : 2 * pairs].any(), "queries come after the pairs"
    q_pos = b.mask.nonzero()[:, 1].reshape(N, pairs)
    assert ((q_pos - 2 * pairs) % 2 == 0).all()
    query_keys = b.inputs.gather(1, q_pos)  # (N, P)
    answers = b.targets.gather(1, q_pos)
    # The target at a query is the value paired with the queried key.
    paired = {(i, int(k)): int(v) for i in range(N) for k, v in zip(keys[i], values[i])}
    for i in range(N):
        assert sorted(query_keys[i].tolist()) == sorted(keys[i].tolist())
        for k, v in zip(query_keys[i], answers[i]):
            assert paired[(i, int(k))] == int(v)
    assert (b.targets[~b.mask] == 0).all()


def test_mqar_gaps_follow_a_power_law() -> None:
    # With alpha = 0.1 the first slot after the pairs is by far the most likely query position.
    task = MQAR(n_valid=2000)
    b = full(task)
    first_slot = b.mask[:, 2 * task.pairs].float().mean()
    last_slot = b.mask[:, task.length - 2].float().mean()
    assert first_slot > 3 * last_slot


def test_mqar_valid_test_and_train_differ() -> None:
    task = MQAR(n_valid=64, n_test=64)
    valid, test = full(task, Split.VALID), full(task, Split.TEST)
    train = next(task.batches(Split.TRAIN, 64, seed=0))
    assert not torch.equal(valid.inputs, test.inputs)
    assert not torch.equal(valid.inputs, train.inputs)
    other = MQAR(n_valid=64, data_seed=1)
    assert not torch.equal(valid.inputs, full(other).inputs), "data_seed picks the data"


def test_selective_copy_targets_are_the_data_tokens_in_order() -> None:
    task = SelectiveCopy(vocab=8, length=30, n_tokens=5, n_valid=N)
    b = full(task)
    region = task.length - task.n_tokens
    assert (b.inputs[:, region:] == task.MARKER).all()
    assert b.mask[:, region:].all() and not b.mask[:, :region].any()
    for i in range(N):
        head = b.inputs[i, :region]
        data = head[head != task.BLANK]
        assert data.tolist() == b.targets[i, region:].tolist()
        assert ((data >= task.FIRST_DATA) & (data < task.n_in)).all()


@pytest.mark.parametrize("score", ["all", "last"])
def test_parity_targets_are_prefix_parities(score: str) -> None:
    b = full(Parity(length=10, score=score, n_valid=N))
    assert torch.equal(b.targets, b.inputs.cumsum(1) % 2)
    expected = b.mask.sum(1) == (10 if score == "all" else 1)
    assert expected.all() and b.mask[:, -1].all()


def test_flip_flop_reads_return_the_last_written_bit() -> None:
    task = FlipFlop(length=40, p_write=0.2, p_read=0.3, n_valid=N)
    b = full(task)
    assert (b.inputs[:, 0] == task.WRITE).all()
    assert b.mask.any(dim=1).float().mean() > 0.9
    for i in range(N):
        last = None
        for t in range(0, task.length, 2):
            instr, bit = int(b.inputs[i, t]), int(b.inputs[i, t + 1])
            if instr == task.WRITE:
                last = bit
            assert bool(b.mask[i, t]) == (instr == task.READ)
            if instr == task.READ:
                assert bit == last == int(b.targets[i, t])
        assert not b.mask[i, 1::2].any(), "only instruction positions are scored"


def test_a_perfect_model_scores_one_and_a_blind_one_less() -> None:
    task = MQAR(vocab=32, length=24, pairs=3, n_valid=64)
    b = full(task)
    perfect = torch.nn.functional.one_hot(b.targets, task.n_out).float() * 30  # (B, T, V)
    assert task.metric(perfect, b) == (float(b.mask.sum()), float(b.mask.sum()))
    assert float(task.loss(perfect, b)) < 1e-3
    correct, count = task.metric(torch.zeros_like(perfect), b)
    assert correct < count


@pytest.mark.parametrize(
    "name,params,key",
    [
        ("mqar", {"pairs": 200}, "pairs"),
        ("mqar", {"length": 12, "pairs": 4}, "length"),
        ("mqar", {"vocab": 2.5}, "vocab"),
        ("mqar", {"alpha": 0}, "alpha"),
        ("selective_copy", {"n_tokens": 40, "length": 64}, "n_tokens"),
        ("parity", {"score": "middle"}, "score"),
        ("flip_flop", {"length": 15}, "length"),
        ("flip_flop", {"p_write": 0.7, "p_read": 0.5}, "p_write + p_read"),
        ("flip_flop", {"n_valid": 0}, "n_valid"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(f"{k}{x}" for k, x in v.items()),
)
def test_bad_params_name_the_param(name: str, params: dict, key: str) -> None:
    with pytest.raises(TaskError, match=rf"task {name}: .*{re.escape(key)}"):
        make_task(name, **params)
