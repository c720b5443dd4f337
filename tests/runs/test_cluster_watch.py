"""The watch on a cluster's head, without Ray: a port nobody answers on stands for a head that
died. When the driver's loop does not leave by itself (stuck in a call to the lost cluster),
the watch ends the process with one line — but never while a journal append is under way."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from gatesearch.runs.dispatch import ClusterWatch

STUCK_DRIVER = """
import time
from gatesearch.atomic import WRITE_GUARD
from gatesearch.runs import dispatch

dispatch.CHECK_EVERY_S, dispatch.GRACE_S = 0.1, 0.3
with WRITE_GUARD:  # a journal append under way while the head is found lost
    watch = dispatch.ClusterWatch("127.0.0.1", {port}, "lost the cluster; resume it")
    time.sleep(2.0)  # well past 3 misses and the grace
    print("append complete", flush=True)
time.sleep(60)  # the driver's loop, stuck in a call to the lost cluster
print("still running", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stuck_driver_is_ended_with_one_line_after_the_append_under_way():
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", STUCK_DRIVER.format(port=free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - t0
    assert done.returncode == 2, done  # as the CLI exits on a lost cluster
    assert done.stdout == "append complete\n"  # the append finished; the stuck wait did not
    assert done.stderr == "error: lost the cluster; resume it\n"
    assert took < 30


def test_a_head_that_answers_is_not_lost():
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        watch = ClusterWatch("127.0.0.1", head.getsockname()[1], "unused")
        try:
            assert watch.answers()
            time.sleep(0.2)
            assert not watch.lost.is_set()
        finally:
            watch.stop()
