"""The robot as a gymnasium env over the ROS 2 topics, speaking the irevla contract (like the simulated envs).

`RobotEnv` talks to franka_control (actions in, robot state out, the reset service) and to the cameras, so the
same code that evaluates or trains a policy in simulation runs on the robot -- or on sim_robot, which serves the
same topics. Observation: ``{"images": {camera: uint8 HxWx3}, "proprio": float32[7], "instruction", "time"}`` with
`irevla.spec.REAL_ROBOT_PROPRIO`; action: the 7-D end-effector delta (`irevla.robot.policy_runner.robot_action_spec`,
base frame); reward 1.0 on success (``success_topic``), which also terminates; truncation after
``max_episode_steps``. `step` keeps the control rate: it publishes the action, waits for the rest of the period
and returns the freshest observation. Safety is franka_control's: the env never talks to a controller directly.

The env spins its own rclpy node on a background thread (``rclpy.init()`` is called if nobody did). Registered as
``irevla/Robot-v0`` (``gymnasium.make("irevla/Robot-v0", config=RobotEnvConfig(...))``). `irevla iterate` with
``family: robot`` builds it through `irevla.iterate.envs` for stage 1 and evaluation.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from irevla.errors import UserError
from irevla.robot.config import RobotEnvConfig
from irevla.robot.policy_runner import robot_action_spec
from irevla.sim.base import ContractEnv, check_instruction, observation_space
from irevla.spec import REAL_ROBOT_PROPRIO, ObservationSpec, TaskSpec


class RobotEnvError(UserError, RuntimeError):
    """The robot side did not answer (no observation, reset failed); the message names the topic or service."""


def resize_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    rows = (np.arange(height) * image.shape[0] / height).astype(int)
    cols = (np.arange(width) * image.shape[1] / width).astype(int)
    return np.ascontiguousarray(image[rows][:, cols])


class RobotEnv(ContractEnv):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: RobotEnvConfig | None = None, node: Any = None) -> None:
        import gymnasium as gym
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger

        from irevla.robot.ros_edge import COMMAND_QOS, SENSOR_QOS, STREAM_EVENTS

        self.config = config = config or RobotEnvConfig()
        self.action_spec = robot_action_spec()
        cameras = {name: tuple(config.image_size) for name in config.cameras.names}
        observation_spec = ObservationSpec(cameras, REAL_ROBOT_PROPRIO)
        self.task_spec = TaskSpec(name=config.task, family="robot", instruction=check_instruction(config.instruction),
                                  action_spec=self.action_spec, observation_spec=observation_spec,
                                  max_episode_steps=config.max_episode_steps, control_hz=config.control_hz)
        self.observation_space = observation_space(observation_spec)
        self.action_space = gym.spaces.Box(self.action_spec.low_array, self.action_spec.high_array, dtype=np.float32)

        self._owns_context = not rclpy.ok()
        if self._owns_context:
            rclpy.init()
        self._owns_node = node is None
        self.node = node or rclpy.create_node("irevla_robot_env")
        self._lock = threading.Lock()
        self._images: dict[str, tuple[float, np.ndarray]] = {}
        self._state: tuple[float, np.ndarray] | None = None
        self._success = False
        self._status: str = ""
        from irevla.robot.conversions import image_to_rgb, proprio_from_joint_state, stamp_to_seconds

        self._image_to_rgb, self._stamp = image_to_rgb, stamp_to_seconds
        for camera, topic in config.cameras.topic_of().items():
            self.node.create_subscription(Image, topic, lambda m, c=camera: self._on_image(c, m), SENSOR_QOS,
                                          event_callbacks=STREAM_EVENTS)
        self.node.create_subscription(
            JointState, config.topics.robot_state,
            lambda m: self._set("_state", (stamp_to_seconds(m.header.stamp), proprio_from_joint_state(m))),
            SENSOR_QOS, event_callbacks=STREAM_EVENTS)
        self.node.create_subscription(Bool, config.success_topic, lambda m: self._set("_success", bool(m.data)),
                                      SENSOR_QOS, event_callbacks=STREAM_EVENTS)
        self.node.create_subscription(String, config.topics.control_status, lambda m: self._set("_status", m.data),
                                      SENSOR_QOS)
        self._publisher = self.node.create_publisher(JointState, config.topics.action, COMMAND_QOS)
        self._reset_client = self.node.create_client(Trigger, config.topics.reset_service)
        self._Trigger = Trigger
        self._executor = None
        if self._owns_node:
            self._executor = SingleThreadedExecutor()
            self._executor.add_node(self.node)
            self._spinner = threading.Thread(target=self._executor.spin, name="robot_env_spin", daemon=True)
            self._spinner.start()
        self._steps = 0
        self._next_step_time = 0.0
        self._last_observation_time = 0.0

    # ------------------------------------------------------------------------------------------------ caches
    def _set(self, name: str, value: Any) -> None:
        with self._lock:
            setattr(self, name, value)

    def _on_image(self, camera: str, message: Any) -> None:
        image = resize_nearest(self._image_to_rgb(message), tuple(self.config.image_size))
        with self._lock:
            self._images[camera] = (self._stamp(message.header.stamp), image)

    def _observation(self, newer_than: float) -> dict[str, Any]:
        """The freshest observation whose parts are all stamped after `newer_than` (waits up to the timeout)."""
        deadline = time.monotonic() + self.config.observation_timeout
        while True:
            with self._lock:
                images = dict(self._images)
                state = self._state
            fresh = state is not None and state[0] > newer_than and all(
                camera in images and images[camera][0] > newer_than for camera in self.config.cameras.names)
            if fresh:
                stamp = min([state[0], *(images[c][0] for c in self.config.cameras.names)])
                return self._make_obs({c: images[c][1] for c in self.config.cameras.names}, state[1], stamp)
            if time.monotonic() > deadline:
                missing = [c for c in self.config.cameras.names if c not in images or images[c][0] <= newer_than]
                if state is None or state[0] <= newer_than:
                    missing.append(self.config.topics.robot_state)
                raise RobotEnvError(f"no fresh observation within {self.config.observation_timeout:.1f} s from "
                                    f"{missing} (are the camera and franka_control nodes running?)")
            time.sleep(0.005)

    # --------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Home the arm (franka_control's reset service) and return the first observation taken after it.

        `seed` seeds only gymnasium's ``np_random`` (nothing here draws from it): a seed cannot place a real object,
        so on the robot an episode's seed labels it and does not reproduce its start. The start is the home pose and
        whatever scene a person (or sim_robot's own randomisation) set up.
        """
        super().reset(seed=seed)
        if not self._reset_client.wait_for_service(timeout_sec=self.config.reset_timeout):
            raise RobotEnvError(f"reset service {self.config.topics.reset_service} is not available "
                                f"(is franka_control running?)")
        done = threading.Event()
        future = self._reset_client.call_async(self._Trigger.Request())
        future.add_done_callback(lambda f: done.set())
        if not done.wait(self.config.reset_timeout) or future.result() is None:
            raise RobotEnvError(f"{self.config.topics.reset_service} did not answer within "
                                f"{self.config.reset_timeout:.0f} s")
        response = future.result()
        if not response.success:
            raise RobotEnvError(f"reset failed: {response.message}")
        with self._lock:
            self._success = False
        self._steps = 0
        observation = self._observation(newer_than=time.time())
        self._next_step_time = time.monotonic() + 1.0 / self.config.control_hz
        return observation, {"success": False}

    def step(self, action):
        from irevla.robot.conversions import action_to_joint_state

        values = self.action_spec.clip(np.asarray(action).reshape(-1))  # NaN/inf raise ContractError here
        sent = time.time()
        self._publisher.publish(action_to_joint_state(values, self.action_spec.names, sent, self.action_spec.frame))
        delay = self._next_step_time - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_step_time = max(self._next_step_time + 1.0 / self.config.control_hz, time.monotonic())
        observation = self._observation(newer_than=sent)
        self._steps += 1
        with self._lock:
            success = self._success
        truncated = self._steps >= self.config.max_episode_steps and not success
        return observation, float(success), success, truncated, {"success": success}

    def render(self):
        with self._lock:
            first = self._images.get(self.config.cameras.names[0])
        return None if first is None else first[1]

    def close(self) -> None:
        import rclpy

        if self._executor is not None:
            self._executor.shutdown(timeout_sec=1.0)
            self._executor = None
        if self._owns_node and self.node is not None:
            self.node.destroy_node()
            self.node = None
        if self._owns_context and rclpy.ok():
            rclpy.shutdown()


def register() -> None:
    import gymnasium as gym

    if "irevla/Robot-v0" not in gym.registry:
        gym.register("irevla/Robot-v0", entry_point="irevla.robot.env:RobotEnv")


register()
