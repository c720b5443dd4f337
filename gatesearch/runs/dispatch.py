"""The one place where work goes to Ray: start or connect, per-task resources, timeouts,
retries, failure reasons and cancellation. Campaigns, `retrain` and `fidelity` all submit
through a `Dispatcher`, so a fix here (Ctrl-C, a GPU, a timeout) reaches every command.

A task is a generator function run as a Ray streaming task. It yields dicts, in order:
`{"started": True}` when a worker begins it (a timeout counts from there, not from submission:
on a busy cluster a task may queue for minutes), any number of `{"progress": value}`, and last
`{"result": value}`. `streamed(fn)` is that protocol around a plain function.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from gatesearch.atomic import WRITE_GUARD
from gatesearch.errors import GatesearchError
from gatesearch.runs.config import TrialResources

K = TypeVar("K")  # the caller's key of a task (not hashed)


class DispatchError(GatesearchError):
    """Ray could not be started or reached (one line)."""


class ClusterLost(DispatchError):
    """The Ray cluster's head stopped answering mid-run (what is stored is intact)."""

    # Measured: after the line, a normal exit spent ~25 s in Ray's teardown, waiting on the
    # lost cluster, and then crashed (SIGSEGV).
    exit_at_once = True


# How the watch on a cluster's head decides it is gone: no TCP connection to its GCS at
# CHECK_EVERY_S intervals, MISSES times in a row. Left to itself, Ray ends the driver after its
# own 60 s reconnection timeout with its internal log lines and exit status 1.
CHECK_EVERY_S = 2.0
MISSES = 3
# Seconds the watch gives the driver's loop (which polls at least once a second) to leave by
# itself before it ends the process: the loop can be stuck in a call to the lost cluster.
GRACE_S = 10.0
LOST_EXIT = 2  # as the CLI's own exit on ClusterLost


class ClusterWatch:
    """A daemon thread that notices a cluster's head is gone long before Ray's own timeout.

    `lost` is set once the head has not answered MISSES checks in a row; the dispatcher then
    raises ClusterLost at its next poll. If the loop does not get there within GRACE_S (it is
    blocked in Ray), the thread prints `message` and ends the process itself, holding
    WRITE_GUARD so that no journal record is cut in half: resume then finds the run as a
    SIGKILL would leave it, which it is built to continue.
    """

    def __init__(self, host: str, port: int, message: str) -> None:
        self.host, self.port, self.message = host, port, message
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cluster-watch", daemon=True)
        self._thread.start()

    def answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=CHECK_EVERY_S):
                return True
        except OSError:
            return False

    def _loop(self) -> None:
        misses = 0
        while not self._stop.wait(CHECK_EVERY_S):
            misses = 0 if self.answers() else misses + 1
            if misses < MISSES:
                continue
            self.lost.set()
            if self._stop.wait(GRACE_S):
                return  # the driver left by itself
            with WRITE_GUARD:
                sys.stderr.write(f"error: {self.message}\n")
                sys.stderr.flush()
                os._exit(LOST_EXIT)

    def stop(self) -> None:
        self._stop.set()


def gcs_endpoint(address_info: dict[str, Any]) -> tuple[str, int] | None:
    """(host, port) of the cluster's GCS from `ray.init`'s address info, if it says."""
    host, sep, port = str(address_info.get("gcs_address") or "").rpartition(":")
    host = host.strip("[]")  # an IPv6 address is written [::1]:port
    return (host, int(port)) if sep and host and port.isdigit() else None


def ensure_ray(address: str | None, num_cpus: int) -> dict[str, Any] | None:
    """Connect to `address` or start a local Ray; Ray's address info when this call started
    or connected it, None when Ray was already initialised in this process."""
    import ray

    if ray.is_initialized():
        return None
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.ERROR,
        "log_to_driver": False,
    }
    try:
        if address:
            context = ray.init(address=address, **kwargs)
        else:
            # "local" always starts a private instance: without it Ray would join whatever
            # RAY_ADDRESS or a `ray start` on this machine points at, with our num_cpus refused.
            context = ray.init(address="local", num_cpus=num_cpus, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local instance"
        raise DispatchError(f"cannot start Ray ({where}): {str(exc).splitlines()[0]}") from None
    # A RayContext; Ray's client mode (ray://) returns another kind, without it.
    return dict(getattr(context, "address_info", None) or {})


def failure_reason(exc: BaseException) -> str:
    """One line for a task's failure: the exception raised inside the task, not Ray's wrapper."""
    import ray

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[-1] if text else ''}".strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def call_streamed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """The task protocol around a plain function: started, then its return value."""
    yield {"started": True}
    yield {"result": fn(*args, **kwargs)}


class EventKind(Enum):
    STARTED = "started"  # a worker began the task
    PROGRESS = "progress"  # the task reported something on its way
    RESULT = "result"  # the task's value; the task is done
    FAILED = "failed"  # it raised (value: the reason); done
    TIMED_OUT = "timed out"  # cancelled after the timeout (value: the reason); done

    @property
    def done(self) -> bool:
        return self in (EventKind.RESULT, EventKind.FAILED, EventKind.TIMED_OUT)


@dataclass(frozen=True)
class Event(Generic[K]):
    key: K
    kind: EventKind
    value: Any = None


@dataclass
class _Task(Generic[K]):
    key: K
    started: float | None = None  # monotonic time of its "started"; None: not yet


class Dispatcher(Generic[K]):
    """Tasks on Ray, each under the caller's key. Use as a context manager: leaving it by an
    exception (Ctrl-C included) cancels whatever is still pending, so nothing keeps training on
    the cluster for a driver that is gone."""

    def __init__(
        self,
        resources: TrialResources,
        workers: int,
        address: str | None = None,
        on_lost: str = "rerun the command once the cluster is back",
    ) -> None:
        """`on_lost`: what the user should do if the cluster (`address`) is lost, for the
        one line that says so."""
        self.cpus = int(resources.cpus)
        info = ensure_ray(address, workers * self.cpus)
        self.watch: ClusterWatch | None = None
        endpoint = gcs_endpoint(info) if address and info else None
        if endpoint is not None:  # a cluster of someone else's: its head may go away
            self.lost_message = (
                f"lost the Ray cluster at {address} (its head has not answered for at least "
                f"{CHECK_EVERY_S * MISSES:g} s); everything stored so far is intact: {on_lost}"
            )
            self.watch = ClusterWatch(*endpoint, self.lost_message)
        self.options: dict[str, Any] = {"num_cpus": self.cpus, "max_retries": resources.retries}
        if resources.gpus:
            self.options["num_gpus"] = float(resources.gpus)
        self.timeout = float(resources.timeout)  # 0: none
        self._pending: dict[Any, _Task[K]] = {}
        self._remotes: dict[Callable[..., Any], Any] = {}

    def __enter__(self) -> Dispatcher[K]:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.cancel()
        self.close()

    def close(self) -> None:
        """Stop watching the cluster: what follows (tables, messages) needs no cluster."""
        if self.watch is not None:
            self.watch.stop()

    @property
    def lost(self) -> bool:
        return self.watch is not None and self.watch.lost.is_set()

    def _check_lost(self) -> None:
        if self.lost:
            self.close()
            raise ClusterLost(self.lost_message)

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, key: K, task: Callable[..., Iterator[dict[str, Any]]], *args: Any) -> None:
        """Start `task(*args)` (a generator function of the protocol above) under `key`."""
        import ray

        remote = self._remotes.get(task)
        if remote is None:
            remote = self._remotes[task] = ray.remote(task).options(**self.options)
        self._pending[remote.remote(*args)] = _Task(key)

    def poll(self, timeout: float = 1.0) -> list[Event[K]]:
        """Wait up to `timeout` seconds (less when a task's deadline comes first) for the next
        event; returns those that arrived and the tasks that ran past the timeout."""
        import ray

        self._check_lost()
        now = time.monotonic()
        if self.timeout:
            started = [t.started for t in self._pending.values() if t.started is not None]
            nearest = min((s + self.timeout for s in started), default=now + timeout)
            timeout = max(0.0, min(timeout, nearest - now))
        events: list[Event[K]] = []
        ready: list[Any] = []  # ObjectRefGenerators: Ray's stubs type them as ObjectRefs
        if self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        self._check_lost()  # a wait on a lost cluster returns nothing: not an idle spell
        for gen in ready:
            task = self._pending[gen]
            try:
                message = ray.get(next(gen))
            except StopIteration:  # the task ended without a result: a bug of ours
                events.append(Event(task.key, EventKind.FAILED, "the task returned no result"))
            except Exception as exc:
                events.append(Event(task.key, EventKind.FAILED, failure_reason(exc)))
            else:
                ((name, value),) = message.items()
                kind = EventKind(name)
                if kind is EventKind.STARTED:
                    task.started = time.monotonic()
                events.append(Event(task.key, kind, value))
                if not kind.done:
                    continue
            del self._pending[gen]
        if self.timeout:
            now = time.monotonic()
            for gen, task in list(self._pending.items()):
                if task.started is not None and now - task.started > self.timeout:
                    ray.cancel(gen, force=True)
                    del self._pending[gen]
                    reason = f"timeout: no result {self.timeout:g}s after it started"
                    events.append(Event(task.key, EventKind.TIMED_OUT, reason))
        return events

    def cancel(self) -> list[K]:
        """Cancel every pending task; returns their keys."""
        import ray

        keys = []
        for gen, task in self._pending.items():
            if not self.lost:  # a call to a lost cluster blocks until Ray gives up on it
                ray.cancel(gen, force=True)
            keys.append(task.key)
        self._pending.clear()
        return keys
