"""multipanda_ros2 backend (Panda/FER robots, libfranka 0.9.2).

State: ``franka_msgs/FrankaState`` (multipanda's flat arrays; ``o_t_ee`` is libfranka's column-major 4x4, ``q`` the
joints, ``robot_mode`` REFLEX = 4 / USER_STOPPED = 5 are reported as errors). Target: multipanda's Cartesian
impedance controllers -- ``custom_cartesian_impedance_controller`` takes a PoseStamped on
``/cartesian_impedance/equilibrium_pose``; ``cartesian_impedance_controller`` a Float64MultiArray
``[x y z R00 R01 .. R22]`` on ``/cartesian_impedance/pose_desired``. Gripper: franka_gripper actions in the
``/panda_gripper`` namespace. Error recovery: the ``franka_msgs/srv/ErrorRecovery`` service.
franka_msgs (multipanda's) is imported when this backend is built, never elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

from sensor_msgs.msg import JointState

from irevla.robot.backends.topics import Done, GripperActions, PoseTargetPublisher, StateAssembler, require_franka_msgs
from irevla.robot.config import FrankaControlConfig
from irevla.robot.control import RobotState
from irevla.robot.conversions import ConversionError, column_major_matrix_to_pose, stamp_to_seconds
from irevla.robot.ros_edge import SENSOR_QOS, STREAM_EVENTS
from irevla.robot.safety import PoseTarget
from irevla.rotations import PoseError

ROBOT_MODE_ERRORS = {4: "reflex (a collision or limit violation stopped the robot)",
                     5: "user stopped (the external activation device is pressed)"}


class MultipandaBackend:
    name = "multipanda"

    def __init__(self, node, config: FrankaControlConfig, on_state: Callable[[RobotState], None]) -> None:
        settings = config.multipanda
        self.node, self.settings = node, settings
        franka_msgs = require_franka_msgs("the multipanda backend")
        from franka_msgs.msg import FrankaState
        from franka_msgs.srv import ErrorRecovery

        self.ErrorRecovery = ErrorRecovery
        self.state = StateAssembler(on_state, node.get_logger())
        self.target = PoseTargetPublisher(node, settings.target_topic, settings.target_type,
                                          config.control.base_frame)
        node.create_subscription(FrankaState, settings.franka_state_topic, self._on_franka_state, SENSOR_QOS,
                                 event_callbacks=STREAM_EVENTS)
        node.create_subscription(JointState, settings.gripper_joint_states_topic, self.state.fingers, SENSOR_QOS,
                                 event_callbacks=STREAM_EVENTS)
        self.gripper = GripperActions(node, settings.gripper) if settings.gripper.enabled else None
        self.recovery = node.create_client(ErrorRecovery, settings.error_recovery_service)
        del franka_msgs

    def _on_franka_state(self, message) -> None:
        try:
            pose = column_major_matrix_to_pose(message.o_t_ee, name=f"{self.settings.franka_state_topic}.o_t_ee")
        except (ConversionError, PoseError) as exc:
            self.node.get_logger().warning(f"ignored FrankaState: {exc}", throttle_duration_sec=2.0)
            return
        mode = int(getattr(message, "robot_mode", 0))
        errors = (ROBOT_MODE_ERRORS[mode],) if mode in ROBOT_MODE_ERRORS else ()
        self.state.pose(pose, stamp_to_seconds(message.header.stamp), tuple(float(q) for q in message.q), errors)

    def latest_state(self) -> RobotState | None:
        return self.state.latest()

    def status(self) -> dict:
        return {} if self.gripper is None else {"gripper": self.gripper.status()}

    def send_target(self, target: PoseTarget) -> None:
        self.target.publish(target.pose)
        if self.gripper is not None:
            self.gripper.command(target.gripper)

    def handles_reset(self) -> bool:
        return False

    def request_reset(self, done: Done) -> None:
        if self.gripper is not None:
            self.gripper.command(0.0)
        done(True, "gripper opening")

    def request_recovery(self, done: Done) -> None:
        if not self.recovery.service_is_ready():
            done(False, f"error recovery service {self.settings.error_recovery_service} is not available")
            return
        future = self.recovery.call_async(self.ErrorRecovery.Request())

        def finished(f) -> None:
            result = f.result()
            done(bool(result and result.success), (result.error if result and result.error else "recovered")
                 if result else str(f.exception()))

        future.add_done_callback(finished)

    def close(self) -> None:
        pass
