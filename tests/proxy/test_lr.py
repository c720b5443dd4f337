"""The learning-rate helpers that need no training."""

from __future__ import annotations

from gatesearch.proxy.lr import peak_lr


def test_peak_lr_reads_the_trajectory_and_ignores_what_is_not_a_rate():
    hypers = {"dropout_mixer": 0.1, "lr": 0.002}
    trajectory = [{"lr": 0.003}, {"lr": 0.004}, {"lr": float("nan")}, {"lr": True}, {"x": 1}]
    assert peak_lr(hypers, trajectory) == 0.004
    assert peak_lr(hypers, None) == 0.002
    assert peak_lr({"dropout_mixer": 0.1}, "not a list") is None
    assert peak_lr({"lr": -1.0}, [{"lr": 0.0}]) is None
