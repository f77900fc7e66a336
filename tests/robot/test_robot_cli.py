"""`irevla robot` commands that need no DDS: params, export-bag, and clear errors for bad --set values."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from irevla.robot.cli import main
from irevla.robot.config import FrankaControlConfig


def test_params_prints_a_loadable_parameter_file(capsys):
    assert main(["params", "franka_control"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    parameters = data["/**"]["ros__parameters"]
    assert FrankaControlConfig.model_validate(parameters) == FrankaControlConfig()


def test_bad_set_is_a_one_line_error(capsys):
    assert main(["up", "--sim", "--set", "nonsense"]) == 2
    assert "NODE:KEY=VALUE" in capsys.readouterr().err


def test_export_bag_writes_mcap(tmp_path, capsys):
    pytest.importorskip("rosbags")
    from irevla.data import EpisodeStore
    from irevla.data.episode import Episode
    from irevla.robot.policy_runner import robot_action_spec
    from irevla.spec import REAL_ROBOT_PROPRIO, ObservationSpec, TaskSpec

    task = TaskSpec(name="pick-cube", family="robot", instruction="pick up the cube", action_spec=robot_action_spec(),
                    observation_spec=ObservationSpec({"wrist": (8, 8)}, REAL_ROBOT_PROPRIO), max_episode_steps=10)
    episode = Episode(images={"wrist": np.zeros((3, 8, 8, 3), np.uint8)}, proprio=np.zeros((3, 7), np.float32),
                      actions=np.zeros((2, 7), np.float32), rewards=np.zeros(2, np.float32), success=False,
                      instruction="pick up the cube", task=task, source="teleop",
                      timestamps=np.array([1.0, 1.1, 1.2]))
    path = EpisodeStore(tmp_path / "episodes").write(episode)
    assert main(["export-bag", str(path), str(tmp_path / "bag")]) == 0
    assert "MCAP" in capsys.readouterr().out and list((tmp_path / "bag").glob("*.mcap"))
