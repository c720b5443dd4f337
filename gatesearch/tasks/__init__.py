"""Tasks: data splits, the model's input/output ends, loss and metric (see `base.Task`)."""

from gatesearch.tasks.base import Batch, Split, Task, TaskError, TaskSpec, evaluate

__all__ = ["Batch", "Split", "Task", "TaskError", "TaskSpec", "evaluate"]
