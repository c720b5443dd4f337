"""Multi-fidelity schedules: rung arithmetic and ASHA's promotions, against worked examples."""

from __future__ import annotations

import pytest

from gatesearch.budget import parse_budget
from gatesearch.runs.schedule import (
    Ladder,
    Schedule,
    ScheduleError,
    ScheduleKind,
    order_of,
)

ASHA = ScheduleKind.ASHA


def amounts(rungs: tuple) -> list[str]:
    return [str(b) for b in rungs]


@pytest.mark.parametrize(
    ("budget", "min_budget", "eta", "expected"),
    [
        ("900steps", None, 3, ["100steps", "300steps", "900steps"]),  # the default: budget/η²
        ("100steps", None, 3, ["12steps", "34steps", "100steps"]),  # whole steps, rounded up
        ("100steps", "10steps", 3, ["10steps", "30steps", "100steps"]),  # not 90 beside 100
        ("100steps", "25steps", 2, ["25steps", "50steps", "100steps"]),
        ("60s", "20s", 3, ["20s", "60s"]),
        ("1e6tokens", "1e6tokens", 3, ["1000000tokens"]),  # min = budget: one rung
    ],
)
def test_rungs_are_min_budget_times_powers_of_eta_up_to_the_budget(
    budget: str, min_budget: str | None, eta: int, expected: list[str]
) -> None:
    low = parse_budget(min_budget) if min_budget else None
    schedule = Schedule(ASHA, low, eta)
    assert amounts(schedule.rungs(parse_budget(budget))) == expected


def test_none_has_one_rung_and_hyperband_drops_the_lowest_rungs_per_bracket() -> None:
    budget = parse_budget("900steps")
    assert amounts(Schedule().rungs(budget)) == ["900steps"]
    brackets = Schedule(ScheduleKind.HYPERBAND).brackets(budget)
    assert [amounts(b) for b in brackets] == [
        ["100steps", "300steps", "900steps"],
        ["300steps", "900steps"],
        ["900steps"],
    ]
    assert [amounts(b) for b in Schedule(ASHA).brackets(budget)] == [
        ["100steps", "300steps", "900steps"]
    ]


@pytest.mark.parametrize(
    ("min_budget", "eta", "needle"),
    [("1000steps", 3, "above the budget"), ("10s", 3, "in the budget's unit"), (None, 1, "eta")],
)
def test_impossible_schedules_are_refused(min_budget: str | None, eta: int, needle: str) -> None:
    low = parse_budget(min_budget) if min_budget else None
    with pytest.raises(ScheduleError, match=needle):
        Schedule(ASHA, low, eta).rungs(parse_budget("900steps"))


def test_promotions_follow_asha_on_a_worked_example() -> None:
    """η = 3, rungs 1, 3, 9 steps; values minimised. Worked by hand from ASHA's rule: promote
    the best not-yet-promoted trial among the top ⌊n/η⌋ of the highest rung that has one."""
    ladder = Ladder(Schedule(ASHA, parse_budget("1steps")).rungs(parse_budget("9steps")), 3)
    for trial, value in [(0, 5.0), (1, 3.0), (2, 4.0)]:
        ladder.report(trial, 0, [value])
    assert ladder.top(0) == [1]  # ⌊3/3⌋ = 1
    assert ladder.next_promotion() == (1, 1)
    ladder.report(1, 1, [2.5])
    assert ladder.next_promotion() is None  # rung 1 has 1 trial (top 0); 1 already promoted
    for trial, value in [(3, 1.0), (4, 6.0), (5, 7.0)]:
        ladder.report(trial, 0, [value])
    assert ladder.top(0) == [3, 1]  # ⌊6/3⌋ = 2
    assert ladder.next_promotion() == (3, 1)
    ladder.report(3, 1, [2.0])
    assert ladder.next_promotion() is None  # rung 1: ⌊2/3⌋ = 0
    for trial, value in [(6, 0.5), (7, 8.0), (8, 9.0)]:
        ladder.report(trial, 0, [value])
    assert ladder.next_promotion() == (6, 1)  # top 3 of rung 0: 6, 3, 1
    ladder.report(6, 1, [1.5])
    assert ladder.next_promotion() == (6, 2)  # rung 1's top ⌊3/3⌋ = [6]: the highest rung first
    ladder.report(6, 2, [1.0])
    assert ladder.next_promotion() is None
    # 9 trials in all: rung 0 keeps ⌊9/3⌋ = 3 promotable places, all taken by promoted trials.
    assert not any(ladder.promotable_ever(t, 0, 9) for t in range(9))
    # With 30 trials to come, the 4th best at rung 0 (trial 2) may still rise to ⌊30/3⌋ = 10.
    assert ladder.promotable_ever(2, 0, 30)
    # The worst of 9 (rank 8) with 24 in all: ⌊24/3⌋ = 8 places, ranks 0-7; never.
    assert not ladder.promotable_ever(8, 0, 24) and ladder.promotable_ever(8, 0, 27)
    ladder.drop(6)
    assert 6 not in ladder.reached[0] and 6 not in ladder.reached[2]


def test_several_objectives_rank_by_pareto_level_then_in_order() -> None:
    # Minimised (loss, params): 0 and 1 are on the front, 2 is dominated by 0, 3 by all.
    values = {0: (1.0, 5.0), 1: (2.0, 1.0), 2: (1.5, 6.0), 3: (3.0, 7.0)}
    assert order_of(values) == [0, 1, 2, 3]
    ladder = Ladder(Schedule(ASHA, parse_budget("1steps")).rungs(parse_budget("9steps")), 3)
    for trial, v in values.items():
        ladder.report(trial, 0, v)
    assert ladder.next_promotion() == (0, 1)
