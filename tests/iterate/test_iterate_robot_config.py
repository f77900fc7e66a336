"""`irevla iterate` with ``family: robot``: the config rules at load time and the env settings each task gets (no ROS;
the run on the robot itself is tests/robot/test_iterate_robot_ros.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from irevla.config import ConfigError, load_config
from irevla.iterate.config import IterateConfig
from irevla.iterate.envs import robot_env_config
from irevla.iterate.loop import stage_names

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "iterate_robot.yaml"


def _robot_config(**changes) -> dict:
    config = {"run_dir": "runs/x", "family": "robot", "init": "runs/sft/policy",
              "robot": {"cameras": {"names": ["front", "wrist"],
                                    "image_topics": ["/camera/front/color/image_raw", "/camera/wrist/color/image_raw"]}},
              "expert_tasks": [{"task": "pick-cube"}], "rl_tasks": [{"task": "pick-cube-left",
                                                                      "instruction": "pick up the cube on the left"}]}
    config.update(changes)
    return {key: value for key, value in config.items() if value is not None}


def _load(tmp_path: Path, data: dict) -> IterateConfig:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, IterateConfig)


def test_the_example_config_loads_and_needs_no_ros():
    # In a fresh interpreter: loading the robot run's config and deriving its env settings must not import rclpy.
    code = ("import sys\n"
            "from irevla.config import load_config\n"
            "from irevla.iterate.envs import robot_env_config\n"
            "from irevla.iterate.config import IterateConfig\n"
            f"config = load_config({str(EXAMPLE)!r}, IterateConfig)\n"
            "env = robot_env_config(config, config.rl_tasks[0], cameras=['wrist'], image_size=64,"
            " max_episode_steps=None)\n"
            "assert 'rclpy' not in sys.modules, 'rclpy imported'\n"
            "print(config.family, config.eval.parallel_envs, env.task, env.max_episode_steps)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["robot", "1", "pick-cube-left", "100"]
    config = load_config(EXAMPLE, IterateConfig)
    assert stage_names(config) == ["sft", "eval-0", "rl-1", "stage2-1", "eval-1"]  # no demos stage on the robot


@pytest.mark.parametrize("changes, message", [
    ({"demos": {"tasks": ["pick-cube"], "episodes": 2}}, r"demos: scripted experts exist only in simulation"),
    ({"init": None}, r"expert_data: family robot needs expert_data \(teleop demos"),
    ({"eval": {"parallel_envs": 4}}, r"eval.parallel_envs: the robot is one arm, so 1"),
    ({"eval": {"workers": 2}}, r"eval.workers: the robot is one arm, evaluated in the loop's process, so 1"),
    ({"eval": {"workers": "auto"}}, r"eval.workers: the robot is one arm"),
    ({"unseen_tasks": [{"task": "pick-cube", "variation": "color:red"}]}, r"unseen_tasks\[0\].variation: variations"),
    ({"robot": None}, r"robot: family robot needs a robot section"),
    ({"family": "metaworld"}, r"robot: the robot section is only for family: robot"),
])
def test_robot_rules_are_config_errors_naming_the_key(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=r"run.yaml: .*" + message):
        _load(tmp_path, _robot_config(**changes))


def test_simulated_tasks_take_no_instruction_and_robot_keys_are_validated(tmp_path):
    data = {"family": "metaworld", "init": "x", "expert_tasks": [{"task": "reach-v3"}],
            "rl_tasks": [{"task": "reach-v3", "instruction": "reach"}]}
    with pytest.raises(ConfigError, match=r"rl_tasks\[0\].instruction: only for family: robot"):
        _load(tmp_path, data)
    with pytest.raises(ConfigError, match=r"robot.max_episode_steps: Input should be greater than 0"):
        _load(tmp_path, _robot_config(robot={"max_episode_steps": 0}))
    with pytest.raises(ConfigError, match=r"robot.succes_topic: unknown key"):
        _load(tmp_path, _robot_config(robot={"succes_topic": "/x"}))


def test_parallel_envs_and_workers_default_to_one_on_the_robot_and_stay_ten_and_auto_in_simulation(tmp_path):
    for evaluation in (None, {"episodes": 3}, {"parallel_envs": 1}, {"workers": 1}):
        loaded = _load(tmp_path, _robot_config(eval=evaluation)).eval
        assert (loaded.parallel_envs, loaded.workers) == (1, 1)
    simulated = {"family": "metaworld", "init": "x", "expert_tasks": [{"task": "reach-v3"}],
                 "rl_tasks": [{"task": "reach-v3"}]}
    loaded = _load(tmp_path, simulated).eval
    assert (loaded.parallel_envs, loaded.workers) == (10, "auto")


def test_each_task_gets_its_name_instruction_and_the_policys_cameras(tmp_path):
    config = _load(tmp_path, _robot_config(robot={
        "instruction": "pick up the cube", "max_episode_steps": 80, "success_topic": "/irevla/episode/success",
        "cameras": {"names": ["front", "wrist"],
                    "image_topics": ["/camera/front/color/image_raw", "/camera/wrist/color/image_raw"]}}))
    rl = robot_env_config(config, config.rl_tasks[0], cameras=["wrist"], image_size=32, max_episode_steps=7)
    assert (rl.task, rl.instruction, rl.max_episode_steps) == ("pick-cube-left", "pick up the cube on the left", 7)
    assert rl.image_size == (32, 32) and rl.success_topic == "/irevla/episode/success"
    assert rl.cameras.names == ("wrist",) and rl.cameras.image_topics == ("/camera/wrist/color/image_raw",)
    expert = robot_env_config(config, config.expert_group[0], cameras=["front", "wrist"], image_size=64,
                              max_episode_steps=None)
    assert (expert.task, expert.instruction, expert.max_episode_steps) == ("pick-cube", "pick up the cube", 80)
    with pytest.raises(ConfigError, match=r"robot.cameras.names: the policy reads cameras \['side'\]"):
        robot_env_config(config, config.rl_tasks[0], cameras=["side"], image_size=32, max_episode_steps=None)
