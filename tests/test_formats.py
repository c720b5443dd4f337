"""The one way every table writes counts, scores, objective heads and shared ranks."""

from __future__ import annotations

import math

import pytest

from gatesearch.formats import (
    MISSING,
    count,
    metric,
    objective_header,
    rank_text,
    score,
    whole,
)
from gatesearch.runs.ranking import joint_ranks


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (512, "512"),
        (512.5, "512.5"),
        (1000, "1.00k"),
        (100_420, "100.4k"),
        (12_345, "12.35k"),
        (2_512_000, "2.51M"),
        (999_960, "1.00M"),  # not "1000.0k"
        (1.2e9, "1.20G"),
        (-100_420, "-100.4k"),
    ],
)
def test_counts_read_with_a_unit_prefix_never_in_scientific_notation(value, text):
    assert count(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.53125, "0.5312"), (1.23456, "1.235"), (12_345.0, "12.35k"), (7, "7")],
)
def test_scores_have_four_significant_digits(value, text):
    assert score(value) == text


@pytest.mark.parametrize("value", [None, math.nan, math.inf, True, "0.5", [1.0]])
def test_what_is_not_a_finite_number_is_shown_missing(value):
    assert count(value) == score(value) == whole(value) == MISSING


def test_a_metric_is_written_by_what_it_measures():
    assert metric("params", 100_420) == "100.4k" and metric("flops", 2_512_000) == "2.51M"
    assert metric("metric", 0.53125) == "0.5312" and metric("loss", 1_000) == "1000"
    assert whole(2_000) == "2,000"
    assert metric("state", 135_200) == "135.2kB" and metric("state", 512) == "512B"
    assert metric("state", None) == MISSING  # a model that is not causal has none


def test_objective_heads_name_the_metric_and_the_better_direction():
    assert objective_header("metric", "accuracy", True) == "accuracy ↑"
    assert objective_header("metric", "loss", False) == "metric (loss) ↓"
    assert objective_header("params", "accuracy", False) == "params ↓"
    assert objective_header("metric", "metric", False) == "metric ↓"


def test_tied_scores_share_the_rank_of_the_first_and_are_marked():
    keys = [(0.9,), (0.8,), (0.8,), (0.7,), (0.6,), (0.6,), (0.6,)]
    joint = joint_ranks(keys)
    assert joint == [(1, False), (2, True), (2, True), (4, False), (5, True), (5, True), (5, True)]
    texts = [rank_text(k, j, t) for k, (j, t) in enumerate(joint, start=1)]
    assert texts == ["1", "=2", "=2", "4", "=5", "=5", "=5"]


def test_a_score_just_under_ten_thousand_is_not_written_in_scientific_notation():
    # `.4g` writes 9999.7 as 1e+04: the count form takes over there.
    assert "e+" not in score(9999.7) and score(9999.4) == "9999"
