"""Training in stints: a proxy run stopped at one rung of a multi-fidelity schedule and
continued, later and perhaps on another machine, exactly where it stopped.

A stint trains the same schedule as an uninterrupted run (progress, warm-ups, annealing and
learning-rate schedules are measured against the whole budget, the top rung) up to its `stop`.
What the next stint needs is saved in a folder: every tensor (the model's weights with its STN
layers, both optimisers' moments, the hyperparameters and their spread, the hypergradient's
last update, the random generators) in `state.safetensors`, everything else (counts, curves,
the learning rate, which batches were drawn) in `state.json`. Neither is pickle: a run folder
is never unpickled. The data streams are not saved: they are seeded, so the next stint draws
them again and skips what was used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gatesearch.atomic import AtomicFolder
from gatesearch.budget import Budget
from gatesearch.errors import GatesearchError

STATE_FORMAT = 1
TENSORS = "state.safetensors"
META = "state.json"


class StintStateError(GatesearchError):
    """A saved stint state that cannot be continued: missing, unreadable or another run's."""


@dataclass(frozen=True)
class Stint:
    """One stint of a proxy run: train up to `stop` (within the run's budget, same unit),
    starting from the state saved in `resume` (from the beginning without one), and save the
    state reached in `save` when given."""

    stop: Budget
    resume: Path | None = None
    save: Path | None = None


def save_state(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the state whole (a folder renamed into place, replacing an older one)."""
    # Clones: safetensors refuses tensors that share storage (tied weights, views).
    plain = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    with AtomicFolder(Path(folder), replace=True) as tmp:
        save_file(plain, str(tmp / TENSORS))
        (tmp / META).write_text(json.dumps({"format": STATE_FORMAT, **meta}) + "\n")


def load_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON of a saved state; StintStateError when it cannot be read."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
        tensors = load_file(str(folder / TENSORS))
    except FileNotFoundError:
        raise StintStateError(f"{folder}: no saved stint state") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise StintStateError(f"{folder}: unreadable stint state ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise StintStateError(f"{folder}: not a stint state of format {STATE_FORMAT}")
    return tensors, meta


def optimizer_state(
    opt: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """An optimiser's per-parameter tensors, named `prefix.<index>.<key>`, and its parameter
    groups as JSON (their `params` are indices)."""
    doc = opt.state_dict()
    tensors = {
        f"{prefix}.{index}.{key}": value
        for index, per_param in doc["state"].items()
        for key, value in per_param.items()
        if isinstance(value, torch.Tensor)
    }
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
        for group in doc["param_groups"]
    ]
    return tensors, groups


def load_optimizer(
    opt: torch.optim.Optimizer,
    prefix: str,
    tensors: dict[str, torch.Tensor],
    groups: list[dict[str, Any]],
) -> None:
    """Restore what `optimizer_state` saved; StintStateError when a tensor's shape does not
    fit its parameter."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    head = f"{prefix}."
    for name, value in tensors.items():
        if not name.startswith(head):
            continue
        index_text, key = name[len(head) :].split(".", 1)
        index = int(index_text)
        if not 0 <= index < len(params):
            raise StintStateError(f"{name}: no parameter {index} in the optimiser")
        if key != "step" and value.shape != params[index].shape:
            raise StintStateError(
                f"{name}: shape {tuple(value.shape)}, the parameter's {tuple(params[index].shape)}"
            )
        state.setdefault(index, {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})
