"""vla_policy node: camera images + robot state -> the VLA -> action commands at the control rate.

In the style of crane_x7_vla's node: parameters declared with defaults, latest-value caches for every sensor, the
model loaded on a background thread (the executor keeps spinning, subscriptions keep filling the caches), inference
on a timer at ``control_hz`` in its own callback group (a MultiThreadedExecutor runs subscriptions meanwhile).

Each tick builds an `irevla.spec.Observation` from the newest image of every camera the policy uses and the newest
robot state; if any of them is older than ``max_observation_age`` the tick is skipped (franka_control's watchdog
then holds the arm) -- a policy must never act on a frozen camera. The action is published on ``topics.action``
(sensor_msgs/JointState, irevla.robot.conversions' convention) stamped with the observation's time (its oldest
image), with ``meta/policy_version``. ``topics.policy_info`` (latched JSON) says which policy runs.

Modes: ``deploy`` (this). ``rl_actor`` needs the RL learner's transport (the loop issue); see
`irevla.robot.rl_actor` for the seam it will plug into.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from irevla.config import ConfigError
from irevla.robot.config import VLAPolicyConfig
from irevla.robot.conversions import (
    ConversionError,
    action_to_joint_state,
    image_to_rgb,
    proprio_from_joint_state,
    stamp_to_seconds,
)
from irevla.robot.policy_runner import PolicyRunner
from irevla.robot.ros_edge import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, declare_config, run_nodes, wall_time


class LatestValue:
    """The newest (stamp, value) of a topic; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stamp: float | None = None
        self.value = None

    def put(self, stamp: float, value) -> None:
        with self._lock:
            self.stamp, self.value = stamp, value

    def get(self):
        with self._lock:
            return self.stamp, self.value


class VLAPolicyNode(Node):
    def __init__(self, config: VLAPolicyConfig | None = None, runner: PolicyRunner | None = None,
                 **node_kwargs) -> None:
        super().__init__("vla_policy", **node_kwargs)
        self.config = config = declare_config(self, VLAPolicyConfig, config)
        if config.mode == "rl_actor":
            raise ConfigError("vla_policy: mode rl_actor needs the RL learner transport, which does not exist yet "
                              "(see irevla/robot/rl_actor.py for the interface it plugs into); use mode: deploy")
        self.runner: PolicyRunner | None = runner
        self.load_error: str | None = None
        self.images = {camera: LatestValue() for camera in config.cameras.names}
        self.state = LatestValue()
        self.steps = 0
        self.skipped: dict[str, int] = {}
        self.inference_seconds: deque[float] = deque(maxlen=1000)
        self.image_to_action_seconds: deque[float] = deque(maxlen=1000)
        self.tick_times: deque[float] = deque(maxlen=1000)  # monotonic start of every control tick (jitter)
        self._receive_times = {camera: 0.0 for camera in config.cameras.names}
        for camera, topic in config.cameras.topic_of().items():
            self.create_subscription(Image, topic, lambda message, camera=camera: self._on_image(camera, message),
                                     SENSOR_QOS)
        self.create_subscription(JointState, config.topics.robot_state, self._on_state, SENSOR_QOS)
        self.action_publisher = self.create_publisher(JointState, config.topics.action, COMMAND_QOS)
        self.info_publisher = self.create_publisher(String, config.topics.policy_info, LATCHED_QOS)
        self.create_timer(1.0 / config.control_hz, self._step, callback_group=MutuallyExclusiveCallbackGroup())
        if runner is None:
            threading.Thread(target=self._load, name="vla_policy_load", daemon=True).start()
        else:
            self._announce()

    # ----------------------------------------------------------------------------------------------- loading
    def _load(self) -> None:
        begin = time.monotonic()
        try:
            self.runner = PolicyRunner.load(self.config.policy, self.config.cameras.names)
        except Exception as exc:  # noqa: BLE001 -- reported, the node stays up so its state is visible
            self.load_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"could not load the policy: {self.load_error}")
            return
        self.get_logger().info(f"policy loaded in {time.monotonic() - begin:.1f} s: {self.runner.source}")
        self._announce()

    def _announce(self) -> None:
        assert self.runner is not None
        info = self.runner.info() | {"mode": self.config.mode, "instruction": self.config.instruction,
                                     "control_hz": self.config.control_hz}
        self.info_publisher.publish(String(data=json.dumps(info)))

    # ------------------------------------------------------------------------------------------------ caches
    def _on_image(self, camera: str, message: Image) -> None:
        try:
            image = image_to_rgb(message)
        except ConversionError as exc:
            self.get_logger().warning(f"camera {camera}: {exc}", throttle_duration_sec=5.0)
            return
        self._receive_times[camera] = time.monotonic()
        self.images[camera].put(stamp_to_seconds(message.header.stamp), image)

    def _on_state(self, message: JointState) -> None:
        try:
            self.state.put(stamp_to_seconds(message.header.stamp), proprio_from_joint_state(message))
        except ConversionError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.get_logger().warning(f"step skipped: {reason}", throttle_duration_sec=2.0)

    # -------------------------------------------------------------------------------------------------- step
    def _step(self) -> None:
        self.tick_times.append(time.monotonic())
        runner = self.runner
        if runner is None:
            return
        now = wall_time()
        max_age = self.config.max_observation_age
        images, stamps = {}, []
        for camera in runner.cameras:
            stamp, image = self.images[camera].get()
            if image is None or now - stamp > max_age:
                self._skip(f"no image from {camera} younger than {max_age:.2f} s")
                return
            images[camera], stamps = image, stamps + [stamp]
        state_stamp, proprio = self.state.get()
        if proprio is None or now - state_stamp > max_age:
            self._skip(f"no robot state younger than {max_age:.2f} s")
            return
        observed_at = min(stamps)
        observation = runner.observation(images, proprio, self.config.instruction, observed_at)
        begin = time.perf_counter()
        try:
            action = runner.act(observation)
        except Exception as exc:  # noqa: BLE001 -- a NaN from the network must stop the arm, not the node
            self._skip(f"policy failed: {exc}")
            return
        self.inference_seconds.append(time.perf_counter() - begin)
        self.action_publisher.publish(action_to_joint_state(action, runner.action_spec.names, observed_at,
                                                            runner.action_spec.frame, policy_version=runner.version))
        newest_image = max(self._receive_times[c] for c in runner.cameras)
        self.image_to_action_seconds.append(time.monotonic() - newest_image)
        self.steps += 1

    def latency_summary(self) -> dict:
        def percentiles(values) -> dict:
            array = np.asarray(values, dtype=float) * 1000.0
            return {"p50_ms": float(np.percentile(array, 50)), "p99_ms": float(np.percentile(array, 99)),
                    "n": int(array.size)} if array.size else {"n": 0}

        return {"inference": percentiles(self.inference_seconds),
                "image_to_action": percentiles(self.image_to_action_seconds)}


def main(args=None) -> int:
    return run_nodes(lambda: [VLAPolicyNode()], args)


if __name__ == "__main__":
    sys.exit(main())
