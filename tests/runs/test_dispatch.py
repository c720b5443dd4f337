"""The dispatcher on a real local Ray: results, failures with the task's own reason, timeouts
counted from the start, progress, and cancellation when its block is left by an exception."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ray import cloudpickle as ray_cloudpickle

from gatesearch.runs.config import TrialResources
from gatesearch.runs.dispatch import Dispatcher, EventKind, call_streamed

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

# Ray's workers cannot import this test module: its task functions travel by value.
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x: int) -> int:
    return x * x


def explode(x: int) -> int:
    raise ValueError(f"bad input {x}\nsecond line")


def counting(n: int) -> Iterator[dict[str, Any]]:
    yield {"started": True}
    for i in range(n):
        yield {"progress": i}
    yield {"result": n}


def sleeper(seconds: float) -> Iterator[dict[str, Any]]:
    yield {"started": True}
    time.sleep(seconds)
    yield {"result": seconds}


def drain(dispatch: Dispatcher[Any], limit: float = 60.0) -> list[Any]:
    events, end = [], time.monotonic() + limit
    while len(dispatch) and time.monotonic() < end:
        events += dispatch.poll(timeout=0.5)
    assert not len(dispatch), "tasks still pending"
    return events


def test_results_failures_and_progress_arrive_under_their_keys():
    dispatch = Dispatcher[str](TrialResources(retries=0), workers=2)
    dispatch.submit("a", call_streamed, square, 7)
    dispatch.submit("b", call_streamed, explode, 3)
    dispatch.submit("c", counting, 3)
    events = drain(dispatch)
    done = {e.key: e for e in events if e.kind.done}
    assert done["a"].kind is EventKind.RESULT and done["a"].value == 49
    assert done["b"].kind is EventKind.FAILED and done["b"].value == "ValueError: second line"
    assert [e.value for e in events if e.key == "c" and e.kind is EventKind.PROGRESS] == [0, 1, 2]
    assert done["c"].value == 3
    assert {e.key for e in events if e.kind is EventKind.STARTED} == {"a", "b", "c"}


def test_a_task_past_its_timeout_is_cancelled_and_reported():
    dispatch = Dispatcher[str](TrialResources(timeout=1.0, retries=0), workers=2)
    dispatch.submit("slow", sleeper, 30.0)
    dispatch.submit("quick", sleeper, 0.1)
    t = time.monotonic()
    done = {e.key: e for e in drain(dispatch) if e.kind.done}
    assert time.monotonic() - t < 15
    assert done["quick"].kind is EventKind.RESULT
    assert done["slow"].kind is EventKind.TIMED_OUT
    assert done["slow"].value == "timeout: no result 1s after it started"


def test_leaving_the_block_by_an_exception_cancels_what_is_pending():
    dispatch = Dispatcher[int](TrialResources(retries=0), workers=2)
    with pytest.raises(KeyboardInterrupt), dispatch:
        for i in range(3):
            dispatch.submit(i, sleeper, 30.0)
        dispatch.poll(timeout=0.5)
        raise KeyboardInterrupt
    assert len(dispatch) == 0
    # The cancelled sleepers held both CPUs for 30 s: a new task runs at once only if they
    # are gone.
    after = Dispatcher[str](TrialResources(retries=0), workers=2)
    after.submit("next", sleeper, 0.1)
    t = time.monotonic()
    assert [e.kind for e in drain(after, limit=20.0) if e.kind.done] == [EventKind.RESULT]
    assert time.monotonic() - t < 20
