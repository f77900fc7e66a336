"""franka_control's franka_ros2 backend against a stand-in for the arm's controller (the hardware side), over DDS:
best-effort pose state in, PoseStamped / Float64MultiArray targets out, homing through the impedance controller.
The gripper path with the real franka_msgs (built from ../shared by make ros2-launch) against a stand-in for
franka_gripper's action servers: grasp / move / homing goals as franka_gripper receives them, an absent gripper and a
failed grasp reported in franka_control's status. Without franka_msgs the gripper / multipanda paths must fail with a
message that says so."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
from netns import run_isolated


def test_franka_ros2_backend_with_a_stand_in_controller():
    output = run_isolated(franka_ros2_body, timeout=90)
    assert "homing done" in output


def stand_in_controller():
    """A stand-in for the arm's side of franka_ros2 (no arm here): franka_robot_state_broadcaster's pose and the
    gripper's joint states, and a Cartesian impedance controller that follows the target."""
    import threading

    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    from irevla.robot.conversions import pose_from_message, pose_to_message
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

    return StandInController()


def franka_ros2_body() -> None:
    import rclpy
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger

    from irevla.robot.config import FrankaControlConfig
    from irevla.robot.conversions import action_to_joint_state
    from irevla.robot.nodes.franka_control import FrankaControlNode
    from irevla.rotations import Pose

    rclpy.init()
    config = FrankaControlConfig.model_validate({
        "control": {"backend": "franka_ros2", "base_frame": "fr3_link0", "homing_speed": 0.3},
        "franka_ros2": {"gripper": {"enabled": False}}})
    controller = stand_in_controller()
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


def test_franka_gripper_actions_with_the_real_franka_msgs():
    if importlib.util.find_spec("franka_msgs") is None:
        pytest.skip("franka_msgs is not built here: make ros2-launch SHARED=../shared, then . .ros2/env.sh "
                    "(on the robot PC: source the franka_ros2 workspace)")
    output = run_isolated(franka_gripper_body, timeout=120)
    print(output[-3000:])
    assert "absent: gripper: action /franka_gripper/grasp is not available" in output
    assert "failed: gripper: /franka_gripper/grasp failed: object not grasped (width outside epsilon)" in output
    assert "gripper goals: grasp, move, grasp" in output


def franka_gripper_body() -> None:
    import json

    import rclpy
    from franka_msgs.action import Grasp, Homing, Move
    from rclpy.action import ActionServer
    from rclpy.node import Node
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from irevla.robot.config import FrankaControlConfig
    from irevla.robot.conversions import action_to_joint_state
    from irevla.robot.nodes.franka_control import FrankaControlNode

    class StandInGripper(Node):
        """franka_gripper's three action servers with the real franka_msgs types (the gripper itself is what cannot
        exist here): records every goal; a grasp fails while `fail_grasp` is set, as a grasp outside epsilon does."""

        def __init__(self) -> None:
            super().__init__("stand_in_franka_gripper")
            self.goals: list[tuple[str, dict]] = []
            self.fail_grasp = False
            for name, kind in (("grasp", Grasp), ("move", Move), ("homing", Homing)):
                ActionServer(self, kind, f"/franka_gripper/{name}", self._execute(name, kind))

        def _execute(self, name, kind):
            def execute(handle):
                goal = handle.request
                fields = {field: getattr(goal, field) for field in ("width", "speed", "force") if hasattr(goal, field)}
                if name == "grasp":
                    fields["epsilon"] = (goal.epsilon.inner, goal.epsilon.outer)
                self.goals.append((name, fields))
                result = kind.Result()
                if name == "grasp" and self.fail_grasp:
                    handle.abort()
                    result.success, result.error = False, "object not grasped (width outside epsilon)"
                    return result
                handle.succeed()
                result.success = True
                return result
            return execute

    rclpy.init()
    config = FrankaControlConfig.model_validate({
        "control": {"backend": "franka_ros2", "base_frame": "fr3_link0", "homing_speed": 0.3, "status_hz": 20.0}})
    controller = stand_in_controller()
    control = FrankaControlNode(config)
    probe = Probe()
    probe.watch(JointState, "/irevla/robot/state")
    probe.watch(String, "/irevla/control/status")
    actions = probe.create_publisher(JointState, "/irevla/action", 1)
    executor = spin_in_background([controller, control, probe], threads=3)
    names = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")

    def send(gripper: float) -> None:
        actions.publish(action_to_joint_state([0.0, 0.0, 0.0, 0, 0, 0, gripper], names, time.time()))

    def gripper_status() -> dict:
        status = probe.get("/irevla/control/status")
        return json.loads(status.data).get("gripper", {}) if status is not None else {}

    gripper = None
    try:
        probe.wait_for(lambda: probe.get("/irevla/robot/state"), 15, "the robot state")
        # ---- no franka_gripper yet: reported in the status, and the close is not taken as done
        probe.wait_for(lambda: (send(1.0), "not available" in (gripper_status().get("problem") or ""))[1], 10,
                       "the absent gripper reported", period=0.1)
        assert gripper_status()["closed"] is None, gripper_status()
        print("absent:", gripper_status()["problem"])

        # ---- franka_gripper comes up: the same close command now grasps, with the configured goal
        gripper = StandInGripper()
        executor.add_node(gripper)
        probe.wait_for(lambda: (send(1.0), any(name == "grasp" for name, _ in gripper.goals))[1], 15,
                       "the grasp goal at the gripper", period=0.1)
        name, goal = next(g for g in gripper.goals if g[0] == "grasp")
        settings = config.franka_ros2.gripper
        assert goal["width"] == 0.0 and goal["force"] == settings.force and goal["speed"] == settings.speed
        assert goal["epsilon"] == (settings.epsilon, settings.epsilon)
        for _ in range(5):  # hysteresis: 0.5 is neither open nor close, repeated closes are not resent
            send(0.5)
            send(1.0)
            time.sleep(0.05)
        probe.wait_for(lambda: gripper_status().get("done", 0) >= 1, 10, "the grasp result")
        assert [g[0] for g in gripper.goals] == ["grasp"], gripper.goals

        # ---- open: a move to the configured width
        probe.wait_for(lambda: (send(0.0), any(g[0] == "move" for g in gripper.goals))[1], 10, "the move goal",
                       period=0.1)
        move = next(g[1] for g in gripper.goals if g[0] == "move")
        assert move["width"] == settings.max_width and move["speed"] == settings.speed

        # ---- a grasp that fails is reported with franka_gripper's error
        gripper.fail_grasp = True
        probe.wait_for(lambda: (send(1.0), "object not grasped" in (gripper_status().get("problem") or ""))[1], 10,
                       "the failed grasp reported", period=0.1)
        print("failed:", gripper_status()["problem"])
        print("gripper goals:", ", ".join(name for name, _ in gripper.goals))
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
