"""Trial evaluation: `evaluate(graph, task, budget, seed) -> metrics`.

Two built-in tasks until the proxy trainer and the task library arrive:

- `null`: no training. A deterministic pseudo-metric from the architecture hash, returned at
  once (for overhead benchmarks and fast tests). With a seconds budget it sleeps that long
  first, which stands in for training time when testing interruption and timeouts.
- `recall`: multi-query associative recall, a small causal token task. Each sequence lists
  `pairs` key-value pairs, then `queries` of those keys each followed by its value; the loss is
  the cross-entropy of predicting each queried value from its key (the positions that need
  memory). Plain AdamW training for the budget, then the loss on a held-out batch.

Every metric is a float; `loss` is what campaigns minimise by default. A trial that diverges
raises `TrialFailure` with the step it happened at.
"""

from __future__ import annotations

import hashlib
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import networkx as nx

from gatesearch.budget import Budget
from gatesearch.graph import arch_hash


class TrialFailure(RuntimeError):
    """An evaluation that ran but produced no usable result (divergence, non-finite loss)."""


class UnknownTaskError(ValueError):
    """A task name that no built-in task answers to."""


# Metrics a campaign may name as objectives, all minimised.
OBJECTIVES: dict[str, str] = {
    "loss": "validation loss",
    "params": "parameter count",
    "flops": "forward FLOPs per token",
    "latency": "forward milliseconds per sequence",
}


class Task(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    needs_torch: ClassVar[bool] = True  # the trial sets torch's thread count when true
    default_budget: ClassVar[str] = "10s"

    @abstractmethod
    def evaluate(self, graph: nx.DiGraph, budget: Budget, seed: int) -> dict[str, float]: ...


class NullTask(Task):
    name = "null"
    description = "no training: a pseudo-metric from the architecture hash (benchmarks, tests)"
    needs_torch = False
    default_budget = "1steps"  # at once; a seconds budget makes it sleep that long

    def evaluate(self, graph: nx.DiGraph, budget: Budget, seed: int) -> dict[str, float]:
        if budget.seconds is not None:
            time.sleep(budget.seconds)
        digest = hashlib.sha256(arch_hash(graph).encode()).digest()
        unit = [int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in (0, 4, 8, 12)]
        return {
            "loss": 1.0 + unit[0],
            "params": float(int(1e4 + 1e6 * unit[1])),
            "flops": float(int(2e4 + 2e6 * unit[2])),
            "latency": 1.0 + 10.0 * unit[3],
        }


class FaultyNullTask(NullTask):
    """The null task with faults, for testing failure handling: by architecture hash, one in
    four raises, one in eight reports a NaN loss."""

    name = "null-faulty"
    description = "null, but some architectures raise or give NaN (failure-handling tests)"

    def evaluate(self, graph: nx.DiGraph, budget: Budget, seed: int) -> dict[str, float]:
        metrics = super().evaluate(graph, budget, seed)
        bucket = int(arch_hash(graph)[-2:], 16) % 8
        if bucket < 2:
            raise RuntimeError(f"injected fault for {arch_hash(graph)}")
        if bucket == 2:
            metrics["loss"] = math.nan
        return metrics


@dataclass(frozen=True)
class _RecallShape:
    keys: int = 16  # key tokens 0..keys-1, value tokens keys..2*keys-1
    pairs: int = 8
    queries: int = 8
    batch: int = 32
    val_batch: int = 256
    lr: float = 3e-3

    @property
    def vocab(self) -> int:
        return 2 * self.keys

    @property
    def seq_len(self) -> int:
        return 2 * (self.pairs + self.queries)


class RecallTask(Task):
    name = "recall"
    description = "multi-query associative recall: short causal sequences, cross-entropy"
    shape = _RecallShape()

    def batch(self, gen: Any, n: int) -> tuple[Any, Any]:
        """Sequences (n, T) and targets (n, T) with -100 where no prediction is scored."""
        import torch

        s = self.shape
        # Distinct keys per sequence, so each query has one answer.
        keys = torch.argsort(torch.rand(n, s.keys, generator=gen), dim=1)[:, : s.pairs]  # (n, P)
        values = torch.randint(s.keys, s.vocab, (n, s.pairs), generator=gen)  # (n, P)
        pick = torch.randint(0, s.pairs, (n, s.queries), generator=gen)  # (n, Q)
        qkeys, qvalues = keys.gather(1, pick), values.gather(1, pick)  # (n, Q)
        context = torch.stack([keys, values], dim=2).reshape(n, 2 * s.pairs)  # (n, 2P)
        asked = torch.stack([qkeys, qvalues], dim=2).reshape(n, 2 * s.queries)  # (n, 2Q)
        x = torch.cat([context, asked], dim=1)  # (n, T)
        y = torch.full_like(x, -100)
        # The value after each queried key is predicted at that key's position.
        y[:, 2 * s.pairs :: 2] = qvalues
        return x, y

    def evaluate(self, graph: nx.DiGraph, budget: Budget, seed: int) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        from gatesearch.build import aux_losses, build_model, count_params, flops_per_token
        from gatesearch.space import graph_context

        s = self.shape
        torch.manual_seed(seed)
        ctx = graph_context(graph, n_in=s.vocab, n_out=s.vocab)
        model = build_model(graph, ctx)
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.01)
        gen = torch.Generator().manual_seed(seed)
        max_steps = budget.steps(tokens_per_step=s.batch * s.seq_len)
        deadline = None if budget.seconds is None else time.perf_counter() + budget.seconds
        start = time.perf_counter()
        step = 0
        model.train()
        while (max_steps is None or step < max_steps) and (
            deadline is None or time.perf_counter() < deadline
        ):
            x, y = self.batch(gen, s.batch)
            logits = model(x)  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, s.vocab), y.reshape(-1), ignore_index=-100)
            total = loss + sum(aux_losses(model).values(), torch.zeros(()))
            if not torch.isfinite(total):
                raise TrialFailure(f"non-finite training loss at step {step}")
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
        train_seconds = time.perf_counter() - start
        # A fixed held-out stream, the same for every trial of a campaign seed.
        x, y = self.batch(torch.Generator().manual_seed(2**31 - 1), s.val_batch)
        model.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            logits = model(x)
            latency = (time.perf_counter() - t0) * 1e3 / s.val_batch
            val = F.cross_entropy(logits.reshape(-1, s.vocab), y.reshape(-1), ignore_index=-100)
            scored = y != -100
            acc = (logits.argmax(-1)[scored] == y[scored]).float().mean()
        return {
            "loss": float(val),
            "accuracy": float(acc),
            "params": float(count_params(model)),
            "flops": float(flops_per_token(model, ctx, seq_len=s.seq_len)),
            "latency": latency,
            "steps": float(step),
            "tokens": float(step * s.batch * s.seq_len),
            "train_seconds": train_seconds,
        }


TASKS: dict[str, Task] = {t.name: t for t in (NullTask(), FaultyNullTask(), RecallTask())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}: choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name]


def evaluate(graph: nx.DiGraph, task: str, budget: Budget, seed: int) -> dict[str, float]:
    """Train and score `graph` on `task` within `budget`; metrics as floats.

    Raises TrialFailure when the trial diverges; any other exception is a failed trial too.
    """
    metrics = get_task(task).evaluate(graph, budget, seed)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise TrialFailure(f"non-finite {', '.join(bad)}")
    return metrics
