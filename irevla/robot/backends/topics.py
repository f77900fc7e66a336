"""Pose-topic backends: `SimBackend` and `FrankaRos2Backend` (plus the shared franka_gripper action client).

Both read the EE pose as PoseStamped with sensor-data QoS (franka_ros2 publishes ``~/current_pose`` best effort
since v2.4 / v3.3; a best-effort subscription also matches a reliable publisher) and the finger joint states, and
publish the target pose (PoseStamped, or Float64MultiArray ``[x y z R00 .. R22]``) reliably with depth 1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import Trigger

from irevla.robot.config import FrankaControlConfig, GripperActionsConfig
from irevla.robot.control import RobotState
from irevla.robot.conversions import (
    gripper_width_from_joint_state,
    pose_from_message,
    pose_to_float64_array,
    pose_to_message,
    stamp_to_seconds,
)
from irevla.robot.ros_edge import COMMAND_QOS, SENSOR_QOS, STREAM_EVENTS, wall_time
from irevla.robot.safety import PoseTarget
from irevla.rotations import Pose, PoseError

Done = Callable[[bool, str], None]


def require_franka_msgs(what: str) -> Any:
    """Import franka_msgs (built in the robot's ROS 2 workspace; not on PyPI) or explain how to get it."""
    try:
        import franka_msgs
        import franka_msgs.action  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"{what} needs franka_msgs ({exc}). It is built with franka_ros2 / multipanda_ros2: source that "
            f"workspace (source ~/franka_ros2_ws/install/setup.bash) before starting franka_control, or disable the "
            f"gripper (franka_ros2.gripper.enabled: false)") from None
    return franka_msgs


class PoseTargetPublisher:
    def __init__(self, node, topic: str, target_type: str, frame_id: str) -> None:
        self.target_type, self.frame_id = target_type, frame_id
        message_type = PoseStamped if target_type == "PoseStamped" else Float64MultiArray
        self.publisher = node.create_publisher(message_type, topic, COMMAND_QOS)

    def publish(self, pose: Pose) -> None:
        if self.target_type == "PoseStamped":
            self.publisher.publish(pose_to_message(pose, wall_time(), self.frame_id))
        else:
            self.publisher.publish(Float64MultiArray(data=pose_to_float64_array(pose)))


class StateAssembler:
    """Combines the latest EE pose and gripper width into a `RobotState` and forwards it."""

    def __init__(self, on_state: Callable[[RobotState], None], logger) -> None:
        self.on_state, self.logger = on_state, logger
        self.gripper_width = float("nan")
        self.state: RobotState | None = None
        self._lock = threading.Lock()

    def pose(self, pose: Pose, stamp: float, joint_positions: tuple[float, ...] = (),
             errors: tuple[str, ...] = ()) -> None:
        state = RobotState(pose=pose, gripper_width=self.gripper_width, stamp=stamp, received=time.monotonic(),
                           joint_positions=joint_positions, errors=errors)
        with self._lock:
            self.state = state
        self.on_state(state)

    def pose_message(self, message: PoseStamped) -> None:
        try:
            pose = pose_from_message(message)
        except PoseError as exc:
            self.logger.warning(f"ignored robot pose: {exc}", throttle_duration_sec=2.0)
            return
        self.pose(pose, stamp_to_seconds(message.header.stamp))

    def fingers(self, message: JointState) -> None:
        self.gripper_width = gripper_width_from_joint_state(message)

    def latest(self) -> RobotState | None:
        with self._lock:
            return self.state


class GripperActions:
    """franka_gripper through franka_msgs actions: Grasp above ``close_threshold``, Move to open below
    ``open_threshold`` (hysteresis: a command hovering at 0.5 does not chatter); Homing on request.

    A gripper that is not there (no action server: franka_gripper not running, another namespace), a goal it rejects
    and a grasp or move that fails are reported: logged (throttled) and kept in `status()`, which franka_control
    puts in its status topic. A command that could not be sent leaves the open/closed state as it was, so the next
    command tries again."""

    def __init__(self, node, config: GripperActionsConfig) -> None:
        from rclpy.action import ActionClient

        franka_msgs = require_franka_msgs("the franka gripper")
        action = franka_msgs.action
        self.config, self.node = config, node
        self.Grasp, self.Move, self.Homing = action.Grasp, action.Move, action.Homing
        self.grasp = ActionClient(node, action.Grasp, f"{config.namespace}/grasp")
        self.move = ActionClient(node, action.Move, f"{config.namespace}/move")
        self.homing = ActionClient(node, action.Homing, f"{config.namespace}/homing")
        self.closed: bool | None = None
        self.problem: str | None = None
        self.problems = 0
        self.done = 0
        self._lock = threading.Lock()

    def command(self, value: float) -> None:
        config = self.config
        if value >= config.close_threshold and self.closed is not True:
            goal = self.Grasp.Goal()
            goal.width, goal.speed, goal.force = 0.0, config.speed, config.force
            goal.epsilon.inner = goal.epsilon.outer = config.epsilon
            if self._send(self.grasp, goal, "grasp"):
                self.closed = True
        elif value <= config.open_threshold and self.closed is not False:
            goal = self.Move.Goal()
            goal.width, goal.speed = config.max_width, config.speed
            if self._send(self.move, goal, "move"):
                self.closed = False

    def home(self) -> bool:
        """Homing (the fingers find their range); False (and reported) when the action is not available."""
        if self._send(self.homing, self.Homing.Goal(), "homing"):
            self.closed = False
            return True
        return False

    def status(self) -> dict:
        with self._lock:
            return {"closed": self.closed, "problem": self.problem, "problems": self.problems, "done": self.done}

    def _report(self, message: str) -> None:
        with self._lock:
            self.problem, self.problems = message, self.problems + 1
        self.node.get_logger().warning(message, throttle_duration_sec=2.0)

    def _send(self, client, goal, what: str) -> bool:
        name = f"{self.config.namespace}/{what}"
        if not client.server_is_ready():
            self._report(f"gripper: action {name} is not available (is franka_gripper running? `ros2 action list`); "
                         f"the next gripper command tries again")
            return False
        client.send_goal_async(goal).add_done_callback(lambda future: self._accepted(future, name))
        return True

    def _accepted(self, future, name: str) -> None:
        try:
            handle = future.result()
        except Exception as exc:  # noqa: BLE001 - a callback must not take the executor down
            self._report(f"gripper: {name} goal failed to send: {exc}")
            self.closed = None
            return
        if handle is None or not handle.accepted:
            self._report(f"gripper: {name} goal rejected by franka_gripper")
            self.closed = None  # unknown: the next command is sent whatever it is
            return
        handle.get_result_async().add_done_callback(lambda result: self._finished(result, name))

    def _finished(self, future, name: str) -> None:
        try:
            result = future.result().result
        except Exception as exc:  # noqa: BLE001
            self._report(f"gripper: {name} gave no result: {exc}")
            return
        if not getattr(result, "success", True):
            self._report(f"gripper: {name} failed: {getattr(result, 'error', '') or 'no reason given'}")
            return
        with self._lock:
            self.done += 1


# ------------------------------------------------------------------------------------------------------- sim
class SimBackend:
    name = "sim"

    def __init__(self, node, config: FrankaControlConfig, on_state: Callable[[RobotState], None]) -> None:
        sim = config.sim
        self.node = node
        self.state = StateAssembler(on_state, node.get_logger())
        self.target = PoseTargetPublisher(node, sim.target_topic, "PoseStamped", config.control.base_frame)
        self.gripper = node.create_publisher(Float64, sim.gripper_command_topic, COMMAND_QOS)
        node.create_subscription(PoseStamped, sim.current_pose_topic, self.state.pose_message, SENSOR_QOS,
                                 event_callbacks=STREAM_EVENTS)
        node.create_subscription(JointState, sim.gripper_joint_states_topic, self.state.fingers, SENSOR_QOS,
                                 event_callbacks=STREAM_EVENTS)
        self.reset_client = node.create_client(Trigger, sim.reset_service)
        self.reset_service = sim.reset_service

    def latest_state(self) -> RobotState | None:
        return self.state.latest()

    def send_target(self, target: PoseTarget) -> None:
        self.target.publish(target.pose)
        self.gripper.publish(Float64(data=float(target.gripper)))

    def handles_reset(self) -> bool:
        return True

    def request_reset(self, done: Done) -> None:
        if not self.reset_client.service_is_ready():
            done(False, f"sim reset service {self.reset_service} is not available (is sim_robot running?)")
            return
        future = self.reset_client.call_async(Trigger.Request())
        future.add_done_callback(lambda f: done(bool(f.result() and f.result().success),
                                                f.result().message if f.result() else str(f.exception())))

    def request_recovery(self, done: Done) -> None:
        done(True, "the simulated robot has no error state to recover from")

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------ franka_ros2
class FrankaRos2Backend:
    name = "franka_ros2"

    def __init__(self, node, config: FrankaControlConfig, on_state: Callable[[RobotState], None]) -> None:
        settings = config.franka_ros2
        self.node, self.settings = node, settings
        self.state = StateAssembler(on_state, node.get_logger())
        self.target = PoseTargetPublisher(node, settings.target_topic, settings.target_type,
                                          config.control.base_frame)
        node.create_subscription(PoseStamped, settings.current_pose_topic, self.state.pose_message, SENSOR_QOS,
                                 event_callbacks=STREAM_EVENTS)
        node.create_subscription(JointState, settings.gripper_joint_states_topic, self.state.fingers, SENSOR_QOS,
                                 event_callbacks=STREAM_EVENTS)
        self.gripper = GripperActions(node, settings.gripper) if settings.gripper.enabled else None
        self._recovery_client = None

    def latest_state(self) -> RobotState | None:
        return self.state.latest()

    def send_target(self, target: PoseTarget) -> None:
        self.target.publish(target.pose)
        if self.gripper is not None:
            self.gripper.command(target.gripper)

    def handles_reset(self) -> bool:
        return False  # franka_control streams a homing motion through the impedance controller

    def request_reset(self, done: Done) -> None:
        if self.gripper is not None:
            self.gripper.command(0.0)
        done(True, "gripper opening")

    def status(self) -> dict:
        return {} if self.gripper is None else {"gripper": self.gripper.status()}

    def request_recovery(self, done: Done) -> None:
        try:
            franka_msgs = require_franka_msgs("error recovery")
        except RuntimeError as exc:
            done(False, str(exc))
            return
        if not hasattr(franka_msgs.action, "ErrorRecovery"):  # franka_ros2's humble-era franka_msgs has none
            done(False, f"this franka_msgs ({Path(franka_msgs.__file__).parent}) has no ErrorRecovery action "
                        f"(franka_ros2 added it after the humble branch): clear the error in Desk or with the "
                        f"robot's user stop, or build a newer franka_ros2")
            return
        from rclpy.action import ActionClient

        if self._recovery_client is None:
            self._recovery_client = ActionClient(self.node, franka_msgs.action.ErrorRecovery,
                                                 self.settings.error_recovery_action)
        if not self._recovery_client.server_is_ready():
            done(False, f"error recovery action {self.settings.error_recovery_action} is not available")
            return
        future = self._recovery_client.send_goal_async(franka_msgs.action.ErrorRecovery.Goal())

        def accepted(goal_future) -> None:
            handle = goal_future.result()
            if handle is None or not handle.accepted:
                done(False, "error recovery goal rejected")
                return
            handle.get_result_async().add_done_callback(
                lambda result: done(True, "error recovery done; if controllers were deactivated, reactivate them "
                                          "(docs/robot.md)"))

        future.add_done_callback(accepted)

    def close(self) -> None:
        pass
