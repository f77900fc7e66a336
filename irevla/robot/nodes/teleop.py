"""teleop node: SpaceMouse (or keyboard) -> 7-D delta actions at ``rate_hz`` (irevla.robot.teleop).

Publishes sensor_msgs/JointState actions (irevla.robot.conversions' convention, frame ``base``) with
``meta/intervention`` = 1 while a human is moving the device (HIL-SERL: input norm > ``intervention_threshold``,
held ``intervention_hold`` s) on ``output_topic`` -- by default ``topics.teleop_action``, which the RL actor merges
as interventions; set it to ``topics.action`` (teleop_record.launch.py does) to drive franka_control directly.
``device: auto`` tries the SpaceMouse (hidapi) and falls back to the keyboard in this terminal.
It listens to ``topics.action`` (what franka_control is commanded, e.g. by the policy): while nobody intervenes the
teleop's gripper follows the commanded one, so a takeover does not open a gripper the policy closed.
"""

from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import JointState

from irevla.config import ConfigError
from irevla.robot.config import TeleopConfig
from irevla.robot.conversions import ConversionError, action_to_joint_state, command_from_joint_state
from irevla.robot.keyboard import TerminalKeys
from irevla.robot.ros_edge import COMMAND_QOS, declare_config, run_nodes, wall_time
from irevla.robot.teleop import (
    ACTION_NAMES,
    KEYBOARD_HELP,
    HidDevice,
    KeyboardSource,
    SpaceMouseSource,
    TeleopCore,
    TeleopError,
    open_hid_device,
)


class TeleopNode(Node):
    def __init__(self, config: TeleopConfig | None = None, hid_device: HidDevice | None = None,
                 **node_kwargs) -> None:
        super().__init__("teleop", **node_kwargs)
        self.config = config = declare_config(self, TeleopConfig, config)
        self.keys: TerminalKeys | None = None
        self.source = self._open_source(hid_device)
        self.core = TeleopCore(config, self.source.read)
        topic = config.output_topic or config.topics.teleop_action
        self.publisher = self.create_publisher(JointState, topic, COMMAND_QOS)
        # The commanded gripper, to take over from (see irevla.robot.teleop). When output_topic is topics.action
        # this hears its own actions too, which changes nothing: while it intervenes the core ignores them.
        self.create_subscription(JointState, config.topics.action, self._on_commanded_action, COMMAND_QOS)
        self.create_timer(1.0 / config.rate_hz, self._step)
        self.get_logger().info(f"teleop up: {type(self.source).__name__} -> {topic} at {config.rate_hz:g} Hz")

    def _open_source(self, hid_device: HidDevice | None):
        config = self.config
        if hid_device is not None or config.device in ("auto", "spacemouse"):
            try:
                device = hid_device or open_hid_device(config.spacemouse)
                return SpaceMouseSource(device, config.spacemouse)
            except TeleopError as exc:
                if config.device == "spacemouse":
                    raise ConfigError(f"teleop: {exc}") from None
                self.get_logger().warning(f"{exc}; using the keyboard")
        keyboard = KeyboardSource()
        self.keys = TerminalKeys(keyboard.on_key)
        if self.keys.available:
            self.get_logger().info(f"keyboard teleop: {KEYBOARD_HELP}")
        else:
            self.get_logger().warning("keyboard teleop needs a terminal (run the node in one, not under launch "
                                      "without a tty); no input will arrive")
        return keyboard

    def _on_commanded_action(self, message: JointState) -> None:
        try:
            command = command_from_joint_state(message)
        except ConversionError as exc:
            self.get_logger().warning(f"commanded action ignored: {exc}", throttle_duration_sec=5.0)
            return
        self.core.follow_gripper(float(command.values[-1]))

    def _step(self) -> None:
        error = getattr(self.source, "error", None)
        if error:
            self.get_logger().error(error, throttle_duration_sec=5.0)
        step = self.core.step()
        if not step.intervening and not self.config.publish_when_idle:
            return
        self.publisher.publish(action_to_joint_state(step.action, ACTION_NAMES, wall_time(), "base",
                                                     intervention=step.intervening))

    def close(self) -> None:
        self.source.close()
        if self.keys is not None:
            self.keys.close()


def main(args=None) -> int:
    return run_nodes(lambda: [TeleopNode()], args)


if __name__ == "__main__":
    sys.exit(main())
