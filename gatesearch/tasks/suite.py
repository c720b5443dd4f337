"""Suites: a named list of task specs with weights, scored as one task (docs/tasks.md, "Suites").

A suite lives in a TOML file; `suites/` ships MAD's (`suites/mad.toml`)::

    name = "mad"                      # optional: the file's stem
    description = "..."               # optional

    [[member]]
    task = "in_context_recall"        # a task name, as `--task` takes one
    params = {vocab = 16, length = 32}
    weight = 1.0                      # optional: 1
    name = "icr"                      # optional: the task's name

`--task suites/mad.toml` (any path ending in `.toml`) reads a file; `--task mad` finds a
shipped suite by name when no task is called that. A campaign stores the suite resolved — its
members written out in the run's config as the `suite` task's params — so a resume, or a
worker on another machine, never reads the file again.

Every problem with a file is a `SuiteError`: one line naming the file and the line of what is
wrong (tomllib's for a syntax error; the offending member's key, or its `[[member]]` header,
for the rest).
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatesearch.budget import Budget, BudgetUnit
from gatesearch.shipped import shipped_dir
from gatesearch.tasks.base import Readout, Task, TaskError, TaskSpec
from gatesearch.tasks.registry import builtin_tasks, make_task, resolve_factory

SUITES_DIR = shipped_dir("suites")
SUITE_TASK = "suite"  # the task name a campaign's config stores a suite under
MEMBER_PREFIX = "member:"  # `--objectives member:compression`: one member's score

# A member's name is an objective's (`member:NAME`, in a comma-separated list) and a column
# head: no commas, spaces or colons.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOP_KEYS = ("name", "description", "member")
_MEMBER_KEYS = ("task", "params", "weight", "name")
_HEADER = re.compile(r"^\s*\[\[\s*member\s*\]\]")


class SuiteError(TaskError):
    """A suite file (or a stored suite) that cannot be used; one line naming the file and
    the line of what is wrong."""


@dataclass(frozen=True)
class SuiteMember:
    """One task of a suite: its name in the suite (what `member:NAME` and the tables call it),
    its spec, and how much its score counts."""

    name: str
    spec: TaskSpec
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.spec.name,
            "params": dict(self.spec.params),
            "weight": self.weight,
        }


@dataclass(frozen=True)
class Suite:
    """A suite, checked: at least one member, names unique, weights > 0, every member's task
    built once (params and data files checked)."""

    name: str
    members: tuple[SuiteMember, ...]
    source: str  # the file it was read from, as given

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    @property
    def total_weight(self) -> float:
        return sum(m.weight for m in self.members)

    def combine(self, values: Mapping[str, float]) -> float:
        """The members' weighted mean of `values` (one per member name): a trial's score from
        its members' normalised scores, its loss from their losses over chance."""
        return sum(m.weight * values[m.name] for m in self.members) / self.total_weight

    def to_spec(self) -> TaskSpec:
        """The `suite` task spec a campaign stores: everything needed to rebuild the suite,
        the file not read again."""
        return TaskSpec(
            SUITE_TASK,
            {
                "suite": self.name,
                "file": self.source,
                "members": [m.to_dict() for m in self.members],
            },
        )

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> Suite:
        """The suite a stored `suite` spec holds, checked as a file is (every member's task
        built); SuiteError (one line) when it is malformed."""
        suite = cls.from_spec_unchecked(spec)
        return _checked(
            suite.name,
            list(suite.members),
            suite.source,
            lambda _i, _key, what: SuiteError(f"task {SUITE_TASK} {suite.name}: {what}"),
        )

    @classmethod
    def from_spec_unchecked(cls, spec: TaskSpec) -> Suite:
        """The suite a stored spec holds, its shape checked but no member's task built."""
        where = f"task {SUITE_TASK}"
        params = dict(spec.params)
        if "members" not in params:
            raise SuiteError(f"{where}: give a suite file, e.g. --task suites/mad.toml")
        unknown = sorted(set(params) - {"suite", "file", "members"})
        if unknown:
            raise SuiteError(f"{where}: unknown param {', '.join(unknown)}")
        name, source, members = params.get("suite"), params.get("file", ""), params["members"]
        if not isinstance(name, str) or not isinstance(source, str):
            raise SuiteError(f"{where}: params suite and file must be strings")
        if not isinstance(members, list):
            raise SuiteError(f"{where}: param members must be a list of member tables")
        built = []
        for i, doc in enumerate(members):
            if not isinstance(doc, dict) or set(doc) != {"name", "task", "params", "weight"}:
                raise SuiteError(
                    f"{where}: member {i + 1} must hold exactly name, task, params and weight"
                )
            built.append(_member(doc, lambda _key, what: SuiteError(f"{where} {name}: {what}")))
        return cls(name, tuple(built), source)


# ------------------------------------------------------------------------------- finding


def suite_path(task: str) -> Path | None:
    """The suite file a `--task` value names, or None when it names a task: a path ending in
    `.toml`, or the name of a shipped suite (`mad`) when no task is called that — built-in
    tasks and `module:function` names come first, so a suite never hides a task."""
    if task.endswith(".toml"):
        return Path(task)
    if ":" in task or task in builtin_tasks() or not _NAME.match(task):
        return None
    shipped = SUITES_DIR / f"{task}.toml"
    if not shipped.is_file():
        return None
    try:  # an entry point of that name is a task, and wins
        resolve_factory(task)
    except TaskError:
        return shipped
    return None


def shipped_suites() -> list[str]:
    """The names of the suites that ship with gatesearch."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


# ------------------------------------------------------------------------------- parsing


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; SuiteError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(f"suite {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"suite {path}: cannot read: {exc}") from None
    return parse_suite(text, str(path), default_name=path.stem)


def parse_suite(text: str, source: str, default_name: str = "suite") -> Suite:
    """A suite from the text of its file; `source` names the file in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(_syntax_error(source, exc)) from None
    lines = _Lines(text, source)
    for key in doc:
        if key not in _TOP_KEYS:
            raise lines.error(None, key, f"unknown key {key!r} (known: {', '.join(_TOP_KEYS)})")
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise lines.error(
            None, "name", f"name {name!r}: use letters, digits, '.', '_' and '-' (no spaces)"
        )
    if not isinstance(doc.get("description", ""), str):
        raise lines.error(None, "description", "description must be a string")
    members = doc.get("member", [])
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise lines.error(None, "member", "members are [[member]] tables")
    built = []
    for i, table in enumerate(members):
        for key in table:
            if key not in _MEMBER_KEYS:
                raise lines.error(
                    i, key, f"unknown key {key!r} in a member (known: {', '.join(_MEMBER_KEYS)})"
                )
        built.append(_member(table, functools.partial(lines.error, i)))
    return _checked(name, built, source, lines.error)


# Makers of the exception to raise: for a member's `key`; for member i's `key` (None: the
# top level). A file's name its line, a stored spec's only the suite.
MemberError = Callable[[str, str], SuiteError]
SuiteErrorAt = Callable[[int | None, str, str], SuiteError]


def _member(table: dict[str, Any], error: MemberError) -> SuiteMember:
    """One member from its table; `error(key, what)` makes the exception to raise."""
    task = table.get("task")
    if not isinstance(task, str) or not task:
        raise error("task", 'a member needs `task = "<name>"`, e.g. task = "mqar"')
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise error("params", f"member {task}: params must be a table, e.g. {{vocab = 16}}")
    name = table.get("name", task)
    if not isinstance(name, str) or not _NAME.match(name):
        raise error(
            "name", f"member name {name!r}: use letters, digits, '.', '_' and '-' (no spaces)"
        )
    weight = table.get("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight <= 0
    ):
        raise error("weight", f"member {name}: weight must be a number > 0, got {weight!r}")
    if task == SUITE_TASK or suite_path(task) is not None:
        raise error("task", f"member {name}: a suite's members are tasks, not suites")
    return SuiteMember(name, TaskSpec(task, dict(params)), float(weight))


def _checked(name: str, members: list[SuiteMember], source: str, error: SuiteErrorAt) -> Suite:
    """The suite, once its members are unique and each one's task builds; `error(i, key,
    what)` makes the exception to raise for member i."""
    if not members:
        raise error(None, "member", f"suite {name} has no members: add a [[member]] table")
    seen: dict[str, int] = {}
    for i, m in enumerate(members):
        if m.name in seen:
            raise error(
                i,
                "name",
                f"member {m.name!r} is named twice (members {seen[m.name] + 1} and {i + 1}): "
                'give one `name = "..."`',
            )
        seen[m.name] = i
    for i, m in enumerate(members):
        try:
            resolve_factory(m.spec.name)
        except TaskError as exc:
            raise error(i, "task", f"member {m.name}: {exc}") from None
        try:
            make_task(m.spec)  # params and data files checked now, not in the first trial
        except TaskError as exc:
            raise error(i, "params", f"member {m.name}: {exc}") from None
    return Suite(name, tuple(members), source)


def _syntax_error(source: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message as `FILE:LINE: not valid TOML: what (column C)`."""
    text = str(exc)
    found = re.search(r"\(at line (\d+), column (\d+)\)", text)
    if found is None:
        return f"{source}: not valid TOML: {text}"
    what = text[: found.start()].strip()
    return f"{source}:{found.group(1)}: not valid TOML: {what} (column {found.group(2)})"


class _Lines:
    """Where in a suite file's text a key is: the line to name in an error."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source
        self.headers = [n for n, line in enumerate(self.lines) if _HEADER.match(line)]

    def find(self, member: int | None, key: str) -> int:
        """The 1-based line of `key` in member `member` (its `[[member]]` header when the key
        is not written there), or at the top level (member None; line 1 when not found)."""
        key_re = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*(=|\.)""")
        if member is None:
            first = self.headers[0] if self.headers else len(self.lines)
            table_re = re.compile(rf"^\s*\[\[?\s*{re.escape(key)}\s*\]")
            for n, line in enumerate(self.lines):
                if (n < first and key_re.match(line)) or table_re.match(line):
                    return n + 1
            return 1
        if member >= len(self.headers):  # an inline array of members: its `member =` line
            return self.find(None, "member")
        start = self.headers[member]
        end = self.headers[member + 1] if member + 1 < len(self.headers) else len(self.lines)
        for n in range(start + 1, end):
            if key_re.match(self.lines[n]):
                return n + 1
        return start + 1

    def error(self, member: int | None, key: str, what: str) -> SuiteError:
        return SuiteError(f"{self.source}:{self.find(member, key)}: {what}")


# ------------------------------------------------------------------------------- scoring


def chance_loss(task: Task) -> float:
    """The loss (nats) of a model that knows nothing: a uniform guess over the task's classes
    (one Bernoulli coin per dimension for next-frame tasks). The baseline a loss-type metric
    and a member's loss are normalised against."""
    if task.readout is Readout.NEXT_FRAME:
        return task.n_out * math.log(2.0)
    classes = task.n_out
    if task.readout is Readout.SEQUENCE_AT_LAST:  # (T − 1) blocks of class logits
        classes = task.n_out // max(1, task.seq_len - 1)
    return math.log(max(2, classes))


def member_score(task: Task, metric: float) -> float:
    """A member's metric on [0, 1], higher better: an accuracy as it is; a loss-type metric
    (lower is better, in nats) as 1 − metric / chance_loss, so 0 is no better than a uniform
    guess and 1 a perfect model. Clipped to [0, 1]."""
    value = metric if task.higher_is_better else 1.0 - metric / chance_loss(task)
    return min(1.0, max(0.0, value))


def member_budget(budget: Budget, members: int) -> Budget:
    """Each member's share of a trial's budget: an equal one, whatever the weights. Weights
    say how much a member's score counts, not how hard it is to learn; a member given less
    training for a lower weight would score lower for want of training, counting its weight
    twice. Steps and tokens are rounded down to whole ones; SuiteError when a share is none."""
    if budget.unit is BudgetUnit.SECONDS:
        return Budget(budget.amount / members, budget.unit)
    share = math.floor(budget.amount / members)
    if share < 1:
        raise SuiteError(
            f"budget {budget} is split equally among the suite's {members} members: give at "
            f"least {members}{budget.unit.value}"
        )
    return Budget(float(share), budget.unit)


def member_objective(name: str) -> str:
    """The objective of one member's score: `member:NAME`."""
    return MEMBER_PREFIX + name


def objective_member(objective: str) -> str | None:
    """The member an objective names (`member:NAME`), or None for another objective."""
    return objective[len(MEMBER_PREFIX) :] if objective.startswith(MEMBER_PREFIX) else None


def suite_member_docs(spec: TaskSpec) -> list[dict[str, Any]]:
    """The members of a stored suite spec as its config holds them (name, task, params,
    weight); [] for any other task. Read without building the tasks (a report reads a run
    whose data files may have moved); a spec too malformed to read gives [] too, and
    `Suite.from_spec` says why where it matters."""
    if spec.name != SUITE_TASK:
        return []
    try:
        return [m.to_dict() for m in Suite.from_spec_unchecked(spec).members]
    except SuiteError:
        return []


def suite_members(spec: TaskSpec) -> tuple[str, ...]:
    """The member names of a stored suite spec, in order; () for any other task."""
    return tuple(m["name"] for m in suite_member_docs(spec))


def one_task_only(what: str, spec: TaskSpec) -> str:
    """Why `what` (a command, a folder) cannot take a suite: the line its error shows."""
    return (
        f"{what}: {suite_text(spec)} trains one model per member, each with its task's ends "
        "(embedding, head); this needs one task and does not take a suite (run a campaign on "
        "one member's task for a model to keep)"
    )


def suite_text(spec: TaskSpec, names: Sequence[str] | None = None) -> str:
    """A suite as a line shows it: `suite mad (6 members: in_context_recall, ...)`."""
    names = suite_members(spec) if names is None else names
    return f"suite {spec.params.get('suite', '?')} ({len(names)} members: {', '.join(names)})"


__all__ = [
    "MEMBER_PREFIX",
    "SUITES_DIR",
    "SUITE_TASK",
    "Suite",
    "SuiteError",
    "SuiteMember",
    "chance_loss",
    "load_suite",
    "member_budget",
    "member_objective",
    "member_score",
    "objective_member",
    "one_task_only",
    "parse_suite",
    "shipped_suites",
    "suite_member_docs",
    "suite_members",
    "suite_path",
    "suite_text",
]
