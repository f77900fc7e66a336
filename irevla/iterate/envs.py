"""The env of one task of an `irevla iterate` run: a simulated family's, or the robot's.

Stage 1, the final rollouts and every evaluation build their env here, so the loop has no per-family branches.
Simulated families go through `irevla.sim.registry`; ``family: robot`` builds `irevla.robot.env.RobotEnv` over the
ROS 2 topics (the real arm, or sim_robot + franka_control serving the same topics), imported only then, so a
simulated run never imports rclpy.

On the robot, the task's name and instruction come from the run's task lists (``robot.instruction`` when a task has
none), the env's cameras are the policy's (each must be in ``robot.cameras.names``, which says its topic), images are
resized to the policy's size, and a stage's ``max_episode_steps`` overrides ``robot.max_episode_steps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from irevla.config import ConfigError
from irevla.iterate.config import IterateConfig, TaskRef
from irevla.robot.config import CamerasConfig, RobotEnvConfig


def robot_env_config(config: IterateConfig, ref: TaskRef, *, cameras: Sequence[str], image_size: int,
                     max_episode_steps: int | None) -> RobotEnvConfig:
    """The `RobotEnvConfig` of task `ref` for a policy reading `cameras` at `image_size` (no ROS needed)."""
    robot = config.robot
    if robot is None:
        raise ConfigError("robot: family robot needs a robot section")
    topics = robot.cameras.topic_of()
    missing = [camera for camera in cameras if camera not in topics]
    if missing:
        raise ConfigError(f"robot.cameras.names: the policy reads cameras {list(cameras)}, but {missing} "
                          f"{'is' if len(missing) == 1 else 'are'} not among {list(robot.cameras.names)} (add "
                          f"{'it' if len(missing) == 1 else 'them'} with {'its' if len(missing) == 1 else 'their'} "
                          f"image topic)")
    update: dict[str, Any] = {
        "task": ref.task, "instruction": ref.instruction if ref.instruction is not None else robot.instruction,
        "image_size": (image_size, image_size),
        "cameras": CamerasConfig(names=tuple(cameras), image_topics=tuple(topics[c] for c in cameras))}
    if max_episode_steps is not None:
        update["max_episode_steps"] = max_episode_steps
    # Validate the result like a loaded config (model_copy alone would not check the instruction or the time limit).
    return RobotEnvConfig.model_validate({**robot.model_dump(), **update})


def make_task_env(config: IterateConfig, ref: TaskRef, *, cameras: Sequence[str], image_size: int,
                  max_episode_steps: int | None):
    """A contract env (reset(seed=...), step, task_spec, close; ``info["success"]``) for task `ref` of the run."""
    if config.family == "robot":
        from irevla.robot.env import RobotEnv  # rclpy: only a robot run imports it

        return RobotEnv(robot_env_config(config, ref, cameras=cameras, image_size=image_size,
                                         max_episode_steps=max_episode_steps))
    from irevla.sim.registry import make_env_by_name

    return make_env_by_name(config.family, ref.task, cameras=cameras, image_size=image_size,
                            max_episode_steps=max_episode_steps, variation=ref.variation,
                            variation_seed=ref.variation_seed)
