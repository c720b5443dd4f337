"""Finding tasks: built-in names, `module:function`, and `gatesearch.tasks` entry points."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from gatesearch.tasks import MQAR, Split, TaskError, TaskSpec, available_tasks, make_task

PLUGIN = textwrap.dedent(
    '''
    """A user's task module."""
    from gatesearch.tasks import MQAR

    def small_recall(pairs: int = 2, length: int = 16):
        return MQAR(vocab=32, length=length, pairs=pairs, n_valid=8, n_test=8)

    def anything(**params):
        return MQAR(**params)

    def not_a_task():
        return 42

    NOT_CALLABLE = 3
    '''
)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "user_tasks_mod.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtin_names_and_params() -> None:
    task = make_task(TaskSpec("mqar", {"pairs": 8, "length": 128}))
    assert isinstance(task, MQAR) and task.pairs == 8 and task.length == 128
    assert task.spec.params["vocab"] == 256, "the spec records defaults too"
    assert make_task("mqar", pairs=8, length=128).spec == task.spec


def test_module_function_tasks_keep_their_spec(plugin_dir: Path) -> None:
    spec = TaskSpec("user_tasks_mod:small_recall", {"pairs": 3})
    task = make_task(spec)
    assert task.pairs == 3 and task.length == 16
    assert task.spec == spec, "the spec leads back to the factory, not to mqar"
    restored = pickle.loads(pickle.dumps(task))
    assert restored.spec == spec
    assert next(restored.batches(Split.VALID, 4)).inputs.shape == (4, 16)
    # A factory taking **params gets them unchecked; the task checks them itself.
    assert make_task("user_tasks_mod:anything", pairs=5).pairs == 5


@pytest.mark.parametrize(
    "name,params,message",
    [
        (
            "user_tasks_mod:small_recall",
            {"pears": 3},
            r"unknown param pears \(accepted: pairs, length\)",
        ),
        ("user_tasks_mod:anything", {"pears": 3}, r"unexpected keyword argument 'pears'"),
        ("user_tasks_mod:not_a_task", {}, r"returned int, not a Task"),
        ("user_tasks_mod:NOT_CALLABLE", {}, r"has no callable NOT_CALLABLE"),
        ("user_tasks_mod:missing", {}, r"has no callable missing"),
        ("no_such_module_xyz:make", {}, r"cannot import module no_such_module_xyz"),
        ("mqarr", {}, r"unknown task 'mqarr': choose one of .*mqar.*module:function"),
    ],
    ids=[
        "unknown-param",
        "kwargs-factory-rejects",
        "not-a-task",
        "not-callable",
        "missing-attr",
        "no-module",
        "unknown-name",
    ],
)
def test_lookup_errors_say_what_was_wrong(
    plugin_dir: Path, name: str, params: dict, message: str
) -> None:
    with pytest.raises(TaskError, match=message):
        make_task(name, **params)


def test_entry_point_tasks(plugin_dir: Path) -> None:
    # A minimal installed distribution on sys.path, declaring one task entry point.
    dist = plugin_dir / "user_tasks_dist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-tasks-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[gatesearch.tasks]\nsmall_recall = user_tasks_mod:small_recall\nbroken = user_tasks_mod:gone\n"
    )
    assert "small_recall" in available_tasks()
    task = make_task("small_recall", pairs=2)
    assert task.pairs == 2 and task.spec == TaskSpec("small_recall", {"pairs": 2})
    with pytest.raises(
        TaskError, match=r"task broken: entry point user_tasks_mod:gone failed to load"
    ):
        make_task("broken")


def test_spec_json_rejects_unknown_keys() -> None:
    assert TaskSpec.from_dict({"name": "parity"}) == TaskSpec("parity", {})
    with pytest.raises(TaskError, match="unknown key"):
        TaskSpec.from_dict({"name": "parity", "param": {}})
    with pytest.raises(TaskError, match="params"):
        TaskSpec.from_dict({"name": "parity", "params": [1]})


def test_a_task_label_names_the_params_that_differ_from_the_defaults():
    from gatesearch.runs.request import DEFAULT_TASK
    from gatesearch.tasks import task_label

    assert task_label(TaskSpec("mqar", {})) == "mqar"
    full = make_task(TaskSpec("mqar", {})).spec  # every param spelled out, all defaults
    assert task_label(full) == "mqar"
    small = make_task(DEFAULT_TASK).spec
    assert task_label(small) == "mqar(vocab=64, length=32, n_valid=256, n_test=256)"
    assert task_label(TaskSpec("my.module:task", {"n": 3})) == "my.module:task(n=3)"
