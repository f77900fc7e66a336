"""sim_robot node: the MuJoCo Panda pick-cube simulation (`irevla.sim.panda`, kept in real time by
`irevla.robot.sim_runner`) behind franka_ros2-style topics.

Publishes (best effort, like franka_ros2 >= v2.4): the EE pose (PoseStamped) on ``current_pose_topic``, the arm's
joint states on ``joint_states_topic``, the fingers' joint states on ``gripper_joint_states_topic``, the task's
success (std_msgs/Bool) on ``success_topic``; and, like a camera node, sensor_msgs/Image (rgb8) + CameraInfo per
camera on ``image_topic_pattern`` / ``camera_info_topic_pattern``. Subscribes the target pose (PoseStamped) on
``target_topic`` and the gripper command (std_msgs/Float64, 0 open ... 1 closed) on ``gripper_command_topic``.
Service ``reset_service`` (std_srvs/Trigger): arm to home, gripper open, cube to a new random place.
"""

from __future__ import annotations

import sys

from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger

from irevla.robot.config import SimRobotConfig
from irevla.robot.conversions import (
    camera_info_message,
    numpy_to_image,
    pose_from_message,
    pose_to_message,
    seconds_to_stamp,
)
from irevla.robot.ros_edge import COMMAND_QOS, SENSOR_QOS, STREAM_EVENTS, declare_config, run_nodes
from irevla.robot.sim_runner import SimRunner
from irevla.rotations import PoseError
from irevla.sim.panda import SimState, camera_intrinsics

ARM_JOINT_NAMES = [f"panda_joint{i}" for i in range(1, 8)]
FINGER_JOINT_NAMES = ["panda_finger_joint1", "panda_finger_joint2"]


class SimRobotNode(Node):
    def __init__(self, config: SimRobotConfig | None = None, render: bool = True, **node_kwargs) -> None:
        super().__init__("sim_robot", **node_kwargs)
        self.config = config = declare_config(self, SimRobotConfig, config)
        self.pose_publisher = self.create_publisher(PoseStamped, config.current_pose_topic, SENSOR_QOS)
        self.joint_publisher = self.create_publisher(JointState, config.joint_states_topic, SENSOR_QOS)
        self.finger_publisher = self.create_publisher(JointState, config.gripper_joint_states_topic, SENSOR_QOS)
        self.success_publisher = self.create_publisher(Bool, config.success_topic, SENSOR_QOS)
        self.image_publishers = {c: self.create_publisher(Image, config.image_topic_pattern.format(camera=c),
                                                          SENSOR_QOS) for c in config.cameras}
        self.info_publishers = {c: self.create_publisher(CameraInfo, config.camera_info_topic_pattern.format(camera=c),
                                                         SENSOR_QOS) for c in config.cameras}
        # franka_control re-sends both at its tick rate (50 Hz): streams (ros_edge.STREAM_EVENTS says why)
        self.create_subscription(PoseStamped, config.target_topic, self._on_target, COMMAND_QOS,
                                 event_callbacks=STREAM_EVENTS)
        self.create_subscription(Float64, config.gripper_command_topic, self._on_gripper, COMMAND_QOS,
                                 event_callbacks=STREAM_EVENTS)
        self.create_service(Trigger, config.reset_service, self._on_reset, callback_group=ReentrantCallbackGroup())
        self._intrinsics = {c: camera_intrinsics(config, c) for c in config.cameras}
        # The physics runs in a child process (see SimRunner): in one process with other nodes it keeps real time.
        self.runner = SimRunner(config, self._publish_state, self._publish_images if render else None, render=render)
        self.runner.start()
        self.create_timer(1.0, self._check_runner)
        self.get_logger().info(f"sim_robot up: cameras {list(config.cameras)} at {config.camera_hz:g} Hz, "
                               f"state at {config.state_hz:g} Hz, target on {config.target_topic}")

    # --------------------------------------------------------------------------------------------- commands
    def _on_target(self, message: PoseStamped) -> None:
        try:
            self.runner.set_target(pose_from_message(message))
        except PoseError as exc:  # the control node never sends one; a hand-typed `ros2 topic pub` might
            self.get_logger().warning(f"ignored target on {self.config.target_topic}: {exc}",
                                      throttle_duration_sec=2.0)

    def _on_gripper(self, message: Float64) -> None:
        self.runner.set_gripper(float(message.data))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success = self.runner.request_reset()
        response.message = "reset: arm at home, gripper open, cube placed" if response.success else "reset timed out"
        return response

    def _check_runner(self) -> None:
        if self.runner.error is not None:
            self.get_logger().error(f"simulation stopped: {self.runner.error}", throttle_duration_sec=5.0)

    # ------------------------------------------------------------------------------------ publishing (sim thread)
    def _publish_state(self, state: SimState, stamp: float) -> None:
        frame = self.config.base_frame
        self.pose_publisher.publish(pose_to_message(state.pose, stamp, frame))
        joints = JointState(name=ARM_JOINT_NAMES, position=state.joint_positions.tolist(),
                            velocity=state.joint_velocities.tolist())
        seconds_to_stamp(stamp, joints.header.stamp)
        self.joint_publisher.publish(joints)
        fingers = JointState(name=FINGER_JOINT_NAMES, position=state.finger_positions.tolist())
        seconds_to_stamp(stamp, fingers.header.stamp)
        self.finger_publisher.publish(fingers)
        self.success_publisher.publish(Bool(data=state.success))

    def _publish_images(self, images: dict, stamp: float) -> None:
        for camera, image in images.items():
            frame = f"{camera}_color_optical_frame"
            self.image_publishers[camera].publish(numpy_to_image(image, "rgb8", stamp, frame))
            height, width = image.shape[:2]
            self.info_publishers[camera].publish(camera_info_message(width, height, *self._intrinsics[camera],
                                                                     stamp=stamp, frame_id=frame))

    def close(self) -> None:
        self.runner.stop()


def main(args=None) -> int:
    return run_nodes(lambda: [SimRobotNode()], args)


if __name__ == "__main__":
    sys.exit(main())
