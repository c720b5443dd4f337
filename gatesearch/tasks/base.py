"""The Task interface: what a trial trains on and how it is scored.

A task owns its data splits, the model's input/output ends (`context(d_model)` gives the
`Context` the builder needs), a differentiable training loss and a metric that can be summed
over a split batch by batch. Models map `Batch.inputs` to outputs (B, T, n_out); the task
decides which positions count (`Batch.mask`) and what the targets are.

Tasks are cheap to construct, hold no open files, and pickle to their parameters: data read
or generated on first use lives in attributes named `_cache*`, which are dropped on pickling
and rebuilt on the worker. A campaign stores a task as a `TaskSpec` (name + params, JSON).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.budget import Budget, BudgetUnit
from gatesearch.errors import GatesearchError
from gatesearch.registry import Context, InputKind


class TaskError(GatesearchError, ValueError):
    """A task that cannot be built or read: bad params or bad data. The message is one line
    naming the file (or task) and the field, fit to show a user as is."""


class Split(Enum):
    TRAIN = "train"
    VALID = "valid"
    TEST = "test"


class Readout(Enum):
    """Where in the model's output (B, T, n_out) the task reads its predictions: what a user
    of an exported model needs to know to use it the way it was scored."""

    EVERY_POSITION = "every_position"  # class logits at each position; the mask picks those scored
    LAST_POSITION = "last_position"  # one label a sequence: the logits at its last real position
    NEXT_FRAME = "next_frame"  # one Bernoulli logit per dimension of the next frame
    # The whole sequence decoded from one position (MAD's compression): the logits at the
    # last position, read as (T − 1) blocks of n_out / (T − 1) class logits, block t for token
    # t: targets (B, T) are the tokens, the mask marks the one position read.
    SEQUENCE_AT_LAST = "sequence_at_last"


@dataclass
class Batch:
    """One batch of a task.

    inputs: token ids (B, T) int64, or features (B, T, n_in) float32.
    targets: per task — (B, T) int64 class ids, (B, T, n_out) float32 frames, or (B,) labels.
    mask: (B, T) bool, the positions that count; padding and unscored positions are False.
    real: how many of the B·T input positions hold data rather than padding; None when all
    do. Set by tasks that pad (the file tasks): the mask cannot say it, since it also leaves
    out real positions that are not scored (MQAR's non-queries).
    lengths: (B,) int64, the real length of each sequence, for a model that may read the whole
    sequence (classify): handed to the model so its non-causal mixers ignore the padding. None
    for causal tasks, whose models never read the padding after a real position.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    real: int | None = None
    lengths: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.inputs.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            self.mask.to(device, non_blocking=True),
            self.real,
            None if self.lengths is None else self.lengths.to(device, non_blocking=True),
        )

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def tokens(self) -> int:
        """Real positions fed to the model, padding not counted (what a token budget counts):
        on padded, variable-length data a budget counted in padded positions would train on
        about half the frames it was planned for."""
        if self.real is not None:
            return self.real
        return int(self.inputs.shape[0] * self.inputs.shape[1])


@dataclass(frozen=True)
class EpochSize:
    """One pass of a task's training sampler over its data: every training sequence once
    (a window of it under `max_len`), feeding `positions` real positions to the model."""

    sequences: int
    positions: int

    def epochs(self, budget: Budget, batch_size: int) -> float | None:
        """Epochs one training of `budget` makes at `batch_size`; None for a seconds budget,
        whose reach depends on each model's speed."""
        if budget.unit is BudgetUnit.TOKENS:
            return budget.amount / max(1, self.positions)
        if budget.unit is BudgetUnit.STEPS:
            return budget.amount * batch_size / max(1, self.sequences)
        return None


@dataclass(frozen=True)
class TaskSpec:
    """A task as a campaign stores it: a name (built-in, `module:function` or entry point) and
    its parameters. JSON round trip via `to_dict` / `from_dict`."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TaskSpec:
        unknown = set(doc) - {"name", "params"}
        if unknown:
            raise TaskError(f"task spec: unknown key(s) {', '.join(sorted(unknown))}")
        if not isinstance(doc.get("name"), str):
            raise TaskError("task spec: `name` must be a string")
        params = doc.get("params", {})
        if not isinstance(params, dict):
            raise TaskError("task spec: `params` must be a table of parameters")
        return cls(doc["name"], dict(params))


class Task(ABC):
    """A sequence task. Subclasses set the attributes below in `__init__` (plain values) and
    implement `batches`, `loss` and `metric`.

    Constructor keyword arguments are the task's params; each is kept as an attribute of the
    same name so `spec` can reproduce the task.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    causal: bool  # True: a model may only look back (LM-style tasks); False: whole sequence
    input_kind: InputKind
    n_in: int  # vocabulary size (TOKENS) or feature width (CONTINUOUS)
    n_out: int  # width of the model's output at each position
    seq_len: int  # the longest T a batch has (for FLOPs per token and memory estimates)
    metric_name: str  # e.g. "accuracy", "loss", "nll"
    higher_is_better: bool
    # How the loss reads the output; None for a task that does not say (a user's own).
    readout: ClassVar[Readout | None] = None

    # ------------------------------------------------------------------ the three abstract methods

    @abstractmethod
    def batches(self, split: Split, batch_size: int, seed: int | None = None) -> Iterator[Batch]:
        """Batches of `split`, on the CPU.

        TRAIN: an endless stream, a deterministic function of `seed` (None means 0); every batch
        holds `batch_size` sequences.
        VALID / TEST: one pass over a fixed set that does not depend on `seed` — every trial is
        scored on the same examples. Fixed order when `seed` is None, shuffled by `seed`
        otherwise (for samplers of validation batches, e.g. hyperparameter steps). The last
        batch may be smaller.
        """

    @abstractmethod
    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Differentiable scalar training loss: the mean over counted positions (or sequences)."""

    @abstractmethod
    def metric(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        """(sum, count) of the task's metric on this batch; a split's metric is Σsum / Σcount."""

    # ------------------------------------------------------------------ provided

    def train_epoch(self) -> EpochSize | None:
        """The size of one epoch of the training data; None for a task without epochs (data
        generated afresh, or windows drawn anywhere in a text)."""
        return None

    def context(self, d_model: int, causal: bool | None = None) -> Context:
        """The build context of a model of width `d_model` for this task."""
        return Context(
            d_model=d_model,
            causal=self.causal if causal is None else causal,
            input_kind=self.input_kind,
            n_in=self.n_in,
            n_out=self.n_out,
        )

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        sig = inspect.signature(cls.__init__)
        return tuple(
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        )

    @property
    def spec(self) -> TaskSpec:
        """The spec that rebuilds this task (all params, defaults included)."""
        given = self.__dict__.get("_spec")
        if given is not None:
            return given
        return TaskSpec(self.name, {p: getattr(self, p) for p in self.param_names()})

    def __getstate__(self) -> dict[str, Any]:
        # Data caches are rebuilt where the task is used; pickles carry params only.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_cache")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec.params.items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------- helpers for tasks


def seed_for(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints and names, stable across runs and machines."""
    import hashlib

    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def masked_cross_entropy_sum(outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, int]:
    """Σ cross-entropy over counted positions of outputs (B, T, n_out) vs targets (B, T) int64,
    and the number of those positions."""
    logits = outputs[batch.mask]  # (N, n_out)
    targets = batch.targets[batch.mask]  # (N,)
    total = F.cross_entropy(logits.float(), targets, reduction="sum")
    return total, int(targets.numel())


def masked_accuracy(outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
    """(correct, counted) of argmax(outputs) against integer targets at counted positions."""
    hit = outputs.argmax(-1)[batch.mask] == batch.targets[batch.mask]
    return float(hit.sum()), float(hit.numel())


def check_int(task: str, key: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` as an int in [low, high]; TaskError naming the task and param otherwise."""
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise TaskError(f"task {task}: param {key} must be an integer {bound}, got {value!r}")
    return value


def check_float(task: str, key: str, value: Any, low: float, high: float) -> float:
    """`value` as a float in [low, high]; TaskError naming the task and param otherwise."""
    if type(value) not in (int, float) or not low <= value <= high:
        raise TaskError(
            f"task {task}: param {key} must be a number in [{low}, {high}], got {value!r}"
        )
    return float(value)


def check_choice(task: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise TaskError(
            f"task {task}: param {key} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value


def model_inputs(batch: Batch, param: torch.Tensor | None) -> torch.Tensor:
    """What a model reads from `batch`: token ids as they are, features in the dtype of the
    model's weights (`param`, one of them; None, for a model without any: as they are)."""
    x = batch.inputs
    return x.to(param.dtype) if x.is_floating_point() and param is not None else x


def run_model(model: nn.Module, x: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The model's outputs on `x` (what it reads of `batch`), given the batch's real lengths
    when it carries them."""
    if batch.lengths is None:
        return model(x)
    return model(x, lengths=batch.lengths)


def split_scores(
    model: nn.Module, task: Task, split: Split = Split.VALID, batch_size: int = 64
) -> tuple[float, float]:
    """(loss, metric) of `model` over a whole split in one pass (eval mode, no gradients): the
    task's training loss with each batch weighted by its counted positions, and the task's
    metric. One pass, not two: scoring a trial's validation split is a real share of a short
    proxy.

    Runs on the device of the model's parameters (the CPU for a model without any); the
    model's training mode is restored.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    total, weight = 0.0, 0.0
    m_total, m_count = 0.0, 0.0
    try:
        with torch.no_grad():
            for batch in task.batches(split, batch_size):
                batch = batch.to(device)
                n = float(batch.mask.sum()) or float(batch.size)
                out = run_model(model, model_inputs(batch, param), batch)
                total += float(task.loss(out, batch)) * n
                weight += n
                s, c = task.metric(out, batch)
                m_total += s
                m_count += c
    finally:
        model.train(was_training)
    if m_count == 0:
        raise TaskError(f"task {task.name}: the {split.value} split has nothing to score")
    return total / weight, m_total / m_count


def evaluate(
    model: nn.Module, task: Task, split: Split = Split.VALID, batch_size: int = 64
) -> float:
    """The task's metric of `model` over a whole split (see `split_scores`)."""
    return split_scores(model, task, split, batch_size)[1]
