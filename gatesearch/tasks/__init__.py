"""Tasks: data splits, the model's input/output ends, loss and metric (see `base.Task`).

`make_task(TaskSpec("mqar", {"pairs": 8}))` builds a task from the spec a campaign stores;
names are built-ins (`available_tasks()`), `module:function`, or `gatesearch.tasks` entry points.
"""

from gatesearch.tasks.base import (
    Batch,
    EpochSize,
    Readout,
    Split,
    Task,
    TaskError,
    TaskSpec,
    evaluate,
    model_inputs,
    run_model,
    split_scores,
)
from gatesearch.tasks.files import ClassifyTask, FramesTask, TokensTask
from gatesearch.tasks.mad import (
    Compression,
    FuzzyRecall,
    InContextRecall,
    Memorization,
    NoisyRecall,
)
from gatesearch.tasks.registry import available_tasks, make_task, resolve_factory, task_label
from gatesearch.tasks.synthetic import MQAR, FlipFlop, Parity, SelectiveCopy
from gatesearch.tasks.text import CharLM

__all__ = [
    "MQAR",
    "Batch",
    "CharLM",
    "ClassifyTask",
    "Compression",
    "EpochSize",
    "FlipFlop",
    "FramesTask",
    "FuzzyRecall",
    "InContextRecall",
    "Memorization",
    "NoisyRecall",
    "Parity",
    "Readout",
    "SelectiveCopy",
    "Split",
    "Task",
    "TaskError",
    "TaskSpec",
    "TokensTask",
    "available_tasks",
    "evaluate",
    "make_task",
    "model_inputs",
    "resolve_factory",
    "run_model",
    "split_scores",
    "task_label",
]
