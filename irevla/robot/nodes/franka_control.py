"""franka_control node: action commands -> safety filter -> backend (sim, franka_ros2, multipanda).

Subscribes ``topics.action`` (sensor_msgs/JointState, see irevla.robot.conversions for the convention) and
``topics.target_pose`` (PoseStamped, absolute target, gripper unchanged). Every command goes through
`irevla.robot.control.ControlCore` (safety filter, stale-command watchdog, homing) and the resulting target to the
backend. Publishes the filtered target (``topics.commanded_pose``), the measured EE pose (``topics.ee_pose``), the
proprio vector (``topics.robot_state``, JointState named `irevla.spec.REAL_ROBOT_PROPRIO`) and a JSON status
(``topics.control_status``). Services (std_srvs/Trigger): ``topics.reset_service`` (move home / sim reset) and
``topics.recover_service`` (error recovery) -- what the RL loop calls between episodes.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from irevla.calibration.errors import CalibrationError
from irevla.config import ConfigError
from irevla.robot.backends import make_backend
from irevla.robot.config import FrankaControlConfig
from irevla.robot.control import ControlCore, RobotState
from irevla.robot.conversions import (
    ConversionError,
    command_from_joint_state,
    pose_to_arrays,
    pose_to_message,
    proprio_to_joint_state,
    stamp_to_seconds,
)
from irevla.robot.ros_edge import COMMAND_QOS, STATE_QOS, declare_config, run_nodes, wall_time
from irevla.robot.safety import Command, PoseTarget, SafetyFilter
from irevla.rotations import proprio_from_pose


class FrankaControlNode(Node):
    def __init__(self, config: FrankaControlConfig | None = None, **node_kwargs) -> None:
        super().__init__("franka_control", **node_kwargs)
        self.config = config = declare_config(self, FrankaControlConfig, config)
        try:
            safety = SafetyFilter.from_config(config.safety)
        except CalibrationError as exc:
            raise ConfigError(f"franka_control: safety.workspace_file: {exc}") from None
        self.core = ControlCore(config, safety)
        self.lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._last_state_publish = 0.0
        self._last_mode = self.core.mode
        topics = config.topics
        self.commanded_publisher = self.create_publisher(PoseStamped, topics.commanded_pose, STATE_QOS)
        self.ee_publisher = self.create_publisher(PoseStamped, topics.ee_pose, STATE_QOS)
        self.state_publisher = self.create_publisher(JointState, topics.robot_state, STATE_QOS)
        self.status_publisher = self.create_publisher(String, topics.control_status, STATE_QOS)
        self.backend = make_backend(self, config, self._on_state)
        self.create_subscription(JointState, topics.action, self._on_action, COMMAND_QOS)
        self.create_subscription(PoseStamped, topics.target_pose, self._on_target_pose, COMMAND_QOS)
        ticks = MutuallyExclusiveCallbackGroup()
        self.create_timer(1.0 / config.control.tick_hz, self._tick, callback_group=ticks)
        self.create_timer(1.0 / config.control.status_hz, self._publish_status, callback_group=ticks)
        services = ReentrantCallbackGroup()
        self.create_service(Trigger, topics.reset_service, self._on_reset, callback_group=services)
        self.create_service(Trigger, topics.recover_service, self._on_recover, callback_group=services)
        box = f"{safety.box_min.round(3).tolist()} .. {safety.box_max.round(3).tolist()}"
        self.get_logger().info(f"franka_control up: backend {config.control.backend}, workspace box {box} m, "
                               f"watchdog {config.watchdog.command_timeout:.2f} s, actions on {topics.action}")

    # ------------------------------------------------------------------------------------------------ inputs
    def _on_state(self, state: RobotState) -> None:
        with self.lock:
            self.core.on_state(state)
            mode_changed = self._mode_changed()
        now = time.monotonic()
        if now - self._last_state_publish >= 1.0 / self.config.control.state_publish_hz:
            self._last_state_publish = now
            frame = self.config.control.base_frame
            width = state.gripper_width if np.isfinite(state.gripper_width) else 0.0
            self.state_publisher.publish(proprio_to_joint_state(proprio_from_pose(state.pose, width), state.stamp,
                                                                frame))
            self.ee_publisher.publish(pose_to_message(state.pose, state.stamp, frame))
        if mode_changed:
            self._publish_status()

    def _on_action(self, message: JointState) -> None:
        try:
            command = command_from_joint_state(message, self.config.control.default_action_frame)
        except ConversionError as exc:
            self._log_events([f"rejected: {exc}"])
            return
        self._handle(command)

    def _on_target_pose(self, message: PoseStamped) -> None:
        position, orientation = pose_to_arrays(message)
        with self.lock:
            gripper = self.core.target.gripper if self.core.target is not None else 0.0
        self._handle(Command("pose", np.concatenate([position, orientation, [gripper]]),
                             stamp=stamp_to_seconds(message.header.stamp)))

    def _handle(self, command: Command) -> None:
        with self.lock:
            target, result = self.core.on_command(command)
            mode_changed = self._mode_changed()
            events = list(result.events) if result is not None else [self.core.recent_events[-1]]
        if target is not None:
            self._send(target)
        if events:
            self._log_events(events)
        if mode_changed:
            self._publish_status()

    def _tick(self) -> None:
        with self.lock:
            target = self.core.tick()
            mode_changed = self._mode_changed()
            events = list(self.core.recent_events)[-1:] if mode_changed else []
        if target is not None:
            self._send(target)
        if mode_changed:
            self._log_events(events, always=True)
            self._publish_status()

    def _send(self, target: PoseTarget) -> None:
        self.backend.send_target(target)
        self.commanded_publisher.publish(pose_to_message(target.pose, wall_time(), self.config.control.base_frame))

    # ------------------------------------------------------------------------------------------------ services
    def _wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        finished = threading.Event()
        outcome = {"success": False, "message": "timed out"}

        def done(success: bool, message: str) -> None:
            outcome.update(success=success, message=message)
            finished.set()

        if self.backend.handles_reset():
            with self.lock:
                self.core.begin_external_reset()
            self.backend.request_reset(done)
            finished.wait(15.0)
            with self.lock:
                self.core.finish_reset(outcome["success"], f"backend reset: {outcome['message']}")
        else:
            self.backend.request_reset(lambda success, message: None)  # opens the gripper
            with self.lock:
                problem = self.core.start_homing()
            if problem is None:
                deadline = time.monotonic() + self.config.control.homing_timeout + 1.0
                while time.monotonic() < deadline:
                    with self.lock:
                        if self.core.homing_done:
                            break
                    time.sleep(0.02)
                with self.lock:
                    outcome.update(success=self.core.mode == "idle", message=self.core.recent_events[-1])
            else:
                outcome.update(success=False, message=f"cannot home: {problem}")
        self._publish_status()
        response.success, response.message = bool(outcome["success"]), str(outcome["message"])
        self.get_logger().info(f"reset_to_home: {'ok' if response.success else 'FAILED'}: {response.message}")
        return response

    def _on_recover(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        finished = threading.Event()
        outcome = {"success": False, "message": "error recovery timed out"}

        def done(success: bool, message: str) -> None:
            outcome.update(success=success, message=message)
            finished.set()

        self.backend.request_recovery(done)
        finished.wait(15.0)
        with self.lock:
            self.core.recovered(outcome["success"], f"recovery: {outcome['message']}")
        self._publish_status()
        response.success, response.message = bool(outcome["success"]), str(outcome["message"])
        return response

    # -------------------------------------------------------------------------------------------------- output
    def _mode_changed(self) -> bool:
        changed = self.core.mode != self._last_mode
        self._last_mode = self.core.mode
        return changed

    def _publish_status(self) -> None:
        with self.lock:
            status = self.core.status()
        status["backend"] = self.config.control.backend
        backend_status = getattr(self.backend, "status", None)
        if backend_status is not None:
            status.update(backend_status())  # e.g. the gripper's last problem
        status["stamp"] = wall_time()
        self.status_publisher.publish(String(data=json.dumps(status)))

    def _log_events(self, events: list[str], always: bool = False) -> None:
        """Log every kind of safety event at most once a second (a policy pushing against the box would flood)."""
        now = time.monotonic()
        for event in events:
            kind = event.split(":", 1)[0]
            if always or now - self._last_logged.get(kind, 0.0) >= 1.0:
                self._last_logged[kind] = now
                # rclpy wants one severity per call site, hence two calls
                if kind in ("rejected", "refused", "fault"):
                    self.get_logger().warning(event)
                else:
                    self.get_logger().info(event)

    def close(self) -> None:
        self.backend.close()


def main(args=None) -> int:
    return run_nodes(lambda: [FrankaControlNode()], args)


if __name__ == "__main__":
    sys.exit(main())
