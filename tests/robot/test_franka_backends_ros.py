"""franka_control's franka_ros2 backend against a stand-in for the arm's controller (the hardware side), over DDS:
best-effort pose state in, PoseStamped / Float64MultiArray targets out, homing through the impedance controller.
franka_msgs is not installable here: the gripper / multipanda paths must fail with a message that says so."""

from __future__ import annotations

import time

import numpy as np
import pytest
from netns import run_isolated


def test_franka_ros2_backend_with_a_stand_in_controller():
    output = run_isolated(franka_ros2_body, timeout=90)
    assert "homing done" in output


def franka_ros2_body() -> None:
    import threading

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger

    from irevla.robot.config import FrankaControlConfig
    from irevla.robot.conversions import action_to_joint_state, pose_from_message, pose_to_message
    from irevla.robot.nodes.franka_control import FrankaControlNode
    from irevla.robot.ros_edge import STREAM_EVENTS
    from irevla.rotations import Pose

    class StandInController(Node):
        """Publishes like franka_robot_state_broadcaster (best effort) and follows the target like a stiff
        impedance controller would (first order, 10 ms time constant)."""

        def __init__(self) -> None:
            super().__init__("stand_in_cartesian_impedance_controller")
            self.pose = Pose([0.55, 0.1, 0.25], [1.0, 0.0, 0.0, 0.0])
            self.target: Pose | None = None
            self.targets = 0
            self.lock = threading.Lock()
            self.pose_publisher = self.create_publisher(PoseStamped, "/franka_robot_state_broadcaster/current_pose",
                                                        qos_profile_sensor_data)
            self.fingers = self.create_publisher(JointState, "/franka_gripper/joint_states", qos_profile_sensor_data)
            # a 50 Hz stream: without QoS-event handlers, which would make the shared executor spin (see ros_edge)
            self.create_subscription(PoseStamped, "/cartesian_impedance_controller/target_pose", self.on_target, 1,
                                     event_callbacks=STREAM_EVENTS)
            self.create_timer(0.01, self.tick)

        def on_target(self, message):
            with self.lock:
                self.target, self.targets = pose_from_message(message), self.targets + 1

        def tick(self):
            with self.lock:
                if self.target is not None:
                    self.pose = Pose(self.pose.position + 0.6 * (self.target.position - self.pose.position),
                                     self.target.orientation)
                pose = self.pose
            self.pose_publisher.publish(pose_to_message(pose, time.time(), "fr3_link0"))
            self.fingers.publish(JointState(name=["fr3_finger_joint1", "fr3_finger_joint2"], position=[0.04, 0.04]))

    rclpy.init()
    config = FrankaControlConfig.model_validate({
        "control": {"backend": "franka_ros2", "base_frame": "fr3_link0", "homing_speed": 0.3},
        "franka_ros2": {"gripper": {"enabled": False}}})
    controller = StandInController()
    control = FrankaControlNode(config)
    probe = Probe()
    probe.watch(JointState, "/irevla/robot/state")
    actions = probe.create_publisher(JointState, "/irevla/action", 1)
    executor = spin_in_background([controller, control, probe])
    try:
        probe.wait_for(lambda: probe.get("/irevla/robot/state"), 15, "the robot state from best-effort topics")
        # +2 cm steps at 10 Hz until the arm is 5 cm up (a loaded machine may drop or delay a few; 5 s at most).
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not (controller.target is not None
                                                   and controller.target.position[2] > 0.3):
            actions.publish(action_to_joint_state([0.0, 0.0, 0.02, 0, 0, 0, 0], ("dx", "dy", "dz", "drx", "dry",
                                                                                  "drz", "gripper"), time.time()))
            time.sleep(0.1)
        assert controller.targets > 0, "no target reached the controller"
        assert 0.3 < controller.target.position[2] <= 0.6, controller.target  # moved up, inside the box
        response = probe.call(Trigger, "/irevla/control/reset_to_home", timeout=30)
        assert response.success, response.message
        print(response.message)
        distance, _ = controller.pose.distance_to(Pose([0.45, 0.0, 0.35], [1, 0, 0, 0]))
        assert distance < 0.006, controller.pose
        # Without franka_msgs, or with the humble-era one (.ros2, built from ../shared) that has no ErrorRecovery
        # action, recovery is refused with the reason, and the node keeps serving.
        response = probe.call(Trigger, "/irevla/control/recover")
        assert response.success is False and ("franka_msgs" in response.message), response.message
        print(response.message)
        assert probe.call(Trigger, "/irevla/control/reset_to_home", timeout=30).success
    finally:
        executor.shutdown(timeout_sec=1.0)
        rclpy.shutdown()


def test_backends_that_need_franka_msgs_explain_how_to_get_it():
    pytest.importorskip("rclpy")
    try:
        import franka_msgs  # noqa: F401
        pytest.skip("franka_msgs is installed here")
    except ImportError:
        pass
    from irevla.robot.backends.topics import require_franka_msgs

    with pytest.raises(RuntimeError, match="franka_msgs.*source that workspace"):
        require_franka_msgs("the franka gripper")


def test_float_array_target_layout_matches_multipandas_controller():
    from irevla.robot.conversions import pose_to_float64_array
    from irevla.rotations import Pose

    values = pose_to_float64_array(Pose([0.4, 0.1, 0.3], [1.0, 0.0, 0.0, 0.0]))
    # cartesian_impedance_controller reads position from data[0:3] and R(i, j) from data[3 + 3 i + j]
    assert values[:3] == [0.4, 0.1, 0.3]
    assert np.allclose(np.reshape(values[3:], (3, 3)), np.diag([1.0, -1.0, -1.0]))
