"""What a campaign searches when the user names no space: the task's own default."""

from __future__ import annotations

from pathlib import Path

import pytest
from classifydata import write_classify_npz

from gatesearch.arch.space import DEFAULT_SPACE, SPACES_DIR
from gatesearch.runs.request import CampaignError, RunRequest, prepare_run


def test_classify_searches_the_noncausal_space_by_default(tmp_path: Path) -> None:
    data = str(write_classify_npz(tmp_path / "cls.npz"))
    config, space, _ = prepare_run(RunRequest(task="classify", task_params={"path": data}))
    assert space == SPACES_DIR / "gated_classify.space" and config.space == str(space)
    assert config.causal is False  # derivations are expanded for a model that reads it all


def test_other_tasks_keep_the_default_space_and_a_given_space_wins(tmp_path: Path) -> None:
    for req in (RunRequest(), RunRequest(task="mqar")):
        config, space, _ = prepare_run(req)
        assert space == DEFAULT_SPACE and config.causal is True
    data = str(write_classify_npz(tmp_path / "cls.npz"))
    given = SPACES_DIR / "recurrent_cells.space"
    req = RunRequest(task="classify", task_params={"path": data}, space=given)
    config, space, _ = prepare_run(req)
    assert space == given and config.causal is False  # `task any` admits non-causal models


def test_the_decode_state_is_an_objective_of_causal_campaigns_only(tmp_path: Path) -> None:
    config, _, _ = prepare_run(RunRequest(task="mqar", objectives="metric,state"))
    assert config.objectives == ("metric", "state")
    data = str(write_classify_npz(tmp_path / "cls.npz"))
    req = RunRequest(task="classify", task_params={"path": data}, objectives="accuracy,state")
    with pytest.raises(CampaignError, match="not causal"):
        prepare_run(req)
