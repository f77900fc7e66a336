"""recorder node: records episodes from the robot topics into the episode store (irevla.robot.recorder).

Subscribes every camera in ``cameras`` (sensor_msgs/Image), ``topics.robot_state`` and ``topics.action``; one step
per action message. Services: ``~/start`` (std_srvs/Trigger), ``~/stop`` (Trigger: end and save),
``~/mark_success`` (std_srvs/SetBool: data = success), ``~/discard`` (Trigger). With ``keyboard: true`` and a
terminal: s start, e end+save, y/n success/failure, d discard. Every start/stop/label is also published as JSON on
``topics.episode_event``.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from irevla.robot.config import RecorderConfig
from irevla.robot.conversions import (
    ConversionError,
    action_values_from_joint_state,
    image_to_numpy,
    image_to_rgb,
    proprio_from_joint_state,
    stamp_to_seconds,
)
from irevla.robot.keyboard import TerminalKeys
from irevla.robot.recorder import KEY_HELP, RecorderCore
from irevla.robot.ros_edge import (
    COMMAND_QOS,
    SENSOR_QOS,
    STATE_QOS,
    STREAM_EVENTS,
    declare_config,
    run_nodes,
    wall_time,
)


class RecorderNode(Node):
    def __init__(self, config: RecorderConfig | None = None, **node_kwargs) -> None:
        super().__init__("recorder", **node_kwargs)
        self.config = config = declare_config(self, RecorderConfig, config)
        self.lock = threading.Lock()
        self.core = RecorderCore(config, log=self.get_logger().info, clock=wall_time)
        self.events = self.create_publisher(String, config.topics.episode_event, STATE_QOS)
        for camera, topic in config.cameras.topic_of().items():
            self.create_subscription(Image, topic, lambda message, camera=camera: self._on_image(camera, message),
                                     SENSOR_QOS, event_callbacks=STREAM_EVENTS)
        for camera, topic in zip(config.cameras.names, config.cameras.depth_topics):
            if topic:
                self.create_subscription(Image, topic, lambda message, camera=camera: self._on_depth(camera, message),
                                         SENSOR_QOS, event_callbacks=STREAM_EVENTS)
        self.create_subscription(JointState, config.topics.robot_state, self._on_state, SENSOR_QOS,
                                 event_callbacks=STREAM_EVENTS)
        self.create_subscription(JointState, config.topics.action, self._on_action, COMMAND_QOS)
        services = ReentrantCallbackGroup()
        self.create_service(Trigger, "~/start", self._srv_start, callback_group=services)
        self.create_service(Trigger, "~/stop", self._srv_stop, callback_group=services)
        self.create_service(Trigger, "~/discard", self._srv_discard, callback_group=services)
        self.create_service(SetBool, "~/mark_success", self._srv_success, callback_group=services)
        self.keys = TerminalKeys(self._on_key) if config.keyboard else None
        hint = f"; keys: {KEY_HELP}" if self.keys is not None and self.keys.available else ""
        self.get_logger().info(f"recorder up: episodes to {Path(config.out).resolve()}, cameras "
                               f"{list(config.cameras.names)}{hint}")

    # ------------------------------------------------------------------------------------------------ topics
    def _on_image(self, camera: str, message: Image) -> None:
        try:
            image = image_to_rgb(message)
        except ConversionError as exc:
            self.get_logger().warning(f"camera {camera}: {exc}", throttle_duration_sec=5.0)
            return
        with self.lock:
            self.core.on_image(camera, image, stamp_to_seconds(message.header.stamp))

    def _on_depth(self, camera: str, message: Image) -> None:
        try:
            depth = image_to_numpy(message)
            if depth.dtype != np.uint16 or depth.ndim != 2:
                raise ConversionError(f"depth image {message.encoding} {depth.dtype} {depth.shape}: expected 16UC1 "
                                      f"(uint16 millimetres, one channel)")
        except ConversionError as exc:
            self.get_logger().warning(f"camera {camera} depth: {exc}", throttle_duration_sec=5.0)
            return
        with self.lock:
            self.core.on_depth(camera, depth, stamp_to_seconds(message.header.stamp))

    def _on_state(self, message: JointState) -> None:
        try:
            proprio = proprio_from_joint_state(message)
        except ConversionError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        with self.lock:
            self.core.on_state(proprio, stamp_to_seconds(message.header.stamp))

    def _on_action(self, message: JointState) -> None:
        try:
            values, meta = action_values_from_joint_state(message, self.core.action_spec.names)
        except ConversionError as exc:
            self.get_logger().warning(f"action not recorded: {exc}", throttle_duration_sec=5.0)
            return
        intervention = meta["meta/intervention"] > 0.5 if "meta/intervention" in meta else None
        with self.lock:
            was_recording = self.core.recording
            self.core.on_action(values, stamp_to_seconds(message.header.stamp), intervention)
            ended = was_recording and not self.core.recording
        if ended:
            self._event("stopped")

    # ------------------------------------------------------------------------------------------------ control
    def _event(self, kind: str) -> None:
        status = self.core.status()
        self.events.publish(String(data=json.dumps({"event": kind, "stamp": wall_time(), **status.__dict__})))

    def _run(self, kind: str, action) -> tuple[bool, str]:
        with self.lock:
            try:
                result = action()
            except Exception as exc:  # noqa: BLE001 -- a failed write must reach the caller, not kill the node
                self.get_logger().error(f"{kind} failed: {exc}")
                return False, f"{kind} failed: {exc}"
            message = self.core.message
        self._event(kind)
        return (result is not None if kind == "stopped" else True), message

    def _srv_start(self, request, response):
        with self.lock:
            self.core.start()
            response.success, response.message = self.core.recording, self.core.message
        self._event("started")
        return response

    def _srv_stop(self, request, response):
        response.success, response.message = self._run("stopped", self.core.stop)
        return response

    def _srv_discard(self, request, response):
        response.success, response.message = self._run("discarded", self.core.discard)
        return response

    def _srv_success(self, request, response):
        response.success, response.message = self._run("labelled", lambda: self.core.mark_success(request.data))
        return response

    def _on_key(self, key: str) -> None:
        kinds = {"s": "started", "e": "stopped", "y": "labelled", "n": "labelled", "d": "discarded"}
        if key.lower() in kinds:
            self._run(kinds[key.lower()], lambda: self.core.handle_key(key))

    def close(self) -> None:
        if self.keys is not None:
            self.keys.close()
        with self.lock:
            if self.core.recording:
                self.get_logger().warning("shutting down while recording: saving the episode so far")
                try:
                    self.core.stop()
                except Exception as exc:  # noqa: BLE001
                    self.get_logger().error(f"could not save on shutdown: {exc}")


def main(args=None) -> int:
    return run_nodes(lambda: [RecorderNode()], args)


if __name__ == "__main__":
    sys.exit(main())
