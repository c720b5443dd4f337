"""Suites: the shipped file, every kind of bad file as one line naming its line, the budget
split, the score's normalisation, and a suite trial trained for real (in process, tiny)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from stackgraph import stack_graph
from suitefiles import COPY_WEIGHT, TWO_MEMBERS

from gatesearch.budget import parse_budget
from gatesearch.evaluate import SuiteEvaluator, evaluate, resolve_task
from gatesearch.tasks import CharLM, TaskSpec, make_task
from gatesearch.tasks.suite import (
    SUITES_DIR,
    Suite,
    SuiteError,
    chance_loss,
    load_suite,
    member_budget,
    member_score,
    shipped_suites,
    suite_path,
)

MAD_TASKS = (
    "in_context_recall",
    "fuzzy_recall",
    "noisy_recall",
    "selective_copy",
    "compression",
    "memorization",
)


def test_the_shipped_mad_suite_loads_with_mads_six_tasks_weighted_alike() -> None:
    suite = load_suite(SUITES_DIR / "mad.toml")
    assert suite.name == "mad" and "mad" in shipped_suites()
    assert suite.member_names == MAD_TASKS
    assert {m.weight for m in suite.members} == {1.0}
    # Named without a path, as --task takes it; a task's own name is never a suite.
    assert suite_path("mad") == SUITES_DIR / "mad.toml"
    assert suite_path("mqar") is None and suite_path("pkg.mod:fn") is None
    # What a campaign stores rebuilds the same suite, the file not read again.
    assert Suite.from_spec(suite.to_spec()) == suite


def test_a_suite_resolves_by_path_and_by_name_to_one_evaluator() -> None:
    by_name = resolve_task("mad")
    by_path = resolve_task(str(SUITES_DIR / "mad.toml"))
    assert isinstance(by_name, SuiteEvaluator) and isinstance(by_path, SuiteEvaluator)
    assert by_name.member_names == by_path.member_names == MAD_TASKS
    assert by_name.metric_name == "score" and by_name.higher_is_better and by_name.causal
    stored = resolve_task(by_path.spec)  # a resume's and a worker's way in
    assert isinstance(stored, SuiteEvaluator) and stored.spec == by_path.spec
    with pytest.raises(SuiteError, match=r"task params \(vocab\) do not apply to a suite"):
        resolve_task(TaskSpec("mad", {"vocab": 3}))


GOOD_MEMBER = '[[member]]\ntask = "mqar"\nparams = { vocab = 16, length = 16, pairs = 2 }\n'

# (id, the file after `GOOD_MEMBER`'s 3 lines, the line named, a fragment of the message)
BAD_FILES = [
    ("syntax", 'name = "x"\n' + GOOD_MEMBER + "weight = \n", 5, "not valid TOML"),
    ("unknown-task", GOOD_MEMBER + '[[member]]\nname = "b"\ntask = "nope"\n', 6, "'nope'"),
    (
        "bad-param",
        GOOD_MEMBER + '[[member]]\nname = "b"\ntask = "mqar"\nparams = { vocab = 1 }\n',
        7,
        "param vocab must be an integer",
    ),
    (
        "unknown-param",
        GOOD_MEMBER + '[[member]]\nname = "b"\ntask = "mqar"\n\nparams = { bogus = 1 }\n',
        8,
        "unknown param bogus",
    ),
    ("negative-weight", GOOD_MEMBER + "weight = -1\n", 4, "weight must be a number > 0"),
    ("zero-weight", GOOD_MEMBER + "weight = 0\n", 4, "weight must be a number > 0"),
    ("text-weight", GOOD_MEMBER + 'weight = "2"\n', 4, "weight must be a number > 0"),
    ("nan-weight", GOOD_MEMBER + "weight = nan\n", 4, "weight must be a number > 0"),
    # The second member of the same task, unnamed: its header is the line.
    ("duplicate", GOOD_MEMBER + "\n" + GOOD_MEMBER, 5, "'mqar' is named twice"),
    ("empty", '# nothing yet\nname = "x"\n', 1, "has no members"),
    ("unknown-key", 'name = "x"\nmembers = 3\n' + GOOD_MEMBER, 2, "unknown key 'members'"),
    ("unknown-member-key", GOOD_MEMBER + "wieght = 2\n", 4, "unknown key 'wieght'"),
    ("bad-name", GOOD_MEMBER + 'name = "a b"\n', 4, "member name 'a b'"),
    ("suite-in-suite", '[[member]]\ntask = "mad"\n', 2, "members are tasks, not suites"),
    ("no-task", "[[member]]\nweight = 2\n", 1, "a member needs `task"),
]


@pytest.mark.parametrize(
    ("text", "line", "fragment"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES]
)
def test_a_bad_suite_file_is_one_line_naming_the_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message


def test_a_missing_suite_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such file"):
        resolve_task(str(tmp_path / "absent.toml"))


def test_the_budget_is_split_equally_in_whole_steps() -> None:
    assert str(member_budget(parse_budget("4steps"), 2)) == "2steps"
    assert str(member_budget(parse_budget("5steps"), 2)) == "2steps"  # rounded down
    assert str(member_budget(parse_budget("1e3tokens"), 6)) == "166tokens"
    assert str(member_budget(parse_budget("3s"), 2)) == "1.5s"
    with pytest.raises(SuiteError, match="give at least 6steps"):
        member_budget(parse_budget("5steps"), 6)


def test_scores_are_accuracy_as_is_and_losses_against_a_uniform_guess() -> None:
    recall = make_task("in_context_recall", length=16, n_valid=8, n_test=8)
    assert member_score(recall, 0.25) == 0.25
    lm = CharLM()  # nats per character, lower better
    chance = chance_loss(lm)
    assert chance == pytest.approx(math.log(lm.n_out))
    assert member_score(lm, chance) == 0.0
    assert member_score(lm, chance / 4) == pytest.approx(0.75)
    assert member_score(lm, 2 * chance) == 0.0  # worse than guessing: clipped
    # Compression's logits are (T − 1) blocks of `vocab` classes: chance is ln(vocab).
    compression = make_task("compression", vocab=16, length=8, n_valid=8, n_test=8)
    assert chance_loss(compression) == pytest.approx(math.log(16))


def test_a_suite_trial_trains_each_member_and_weighs_their_scores(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text(TWO_MEMBERS)
    evaluator = resolve_task(str(path), {"self_tuning": False, "batch_size": 4})
    graph = stack_graph(16, [("gru", {})])
    metrics = evaluate(graph, evaluator, parse_budget("6steps"), seed=0)
    members = metrics["members"]
    assert list(members) == ["in_context_recall", "copy"]
    assert all(m["steps"] == 3 for m in members.values())  # an equal share each
    assert metrics["steps"] == 6
    recall, copy = members["in_context_recall"], members["copy"]
    # The head follows each task: selective_copy's 6 output ids against recall's 8.
    assert recall["params"] != copy["params"]
    assert metrics["params"] == max(recall["params"], copy["params"])
    assert metrics["metric"] == pytest.approx(
        (recall["score"] + COPY_WEIGHT * copy["score"]) / (1 + COPY_WEIGHT)
    )
    assert metrics["loss"] == pytest.approx(
        (recall["loss"] / recall["chance_loss"] + COPY_WEIGHT * copy["loss"] / copy["chance_loss"])
        / (1 + COPY_WEIGHT)
    )
    assert metrics["member:copy"] == copy["score"] == copy["metric"]
    assert metrics["metric_name"] == "score" and recall["metric_name"] == "accuracy"
