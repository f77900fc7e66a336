"""realsense_camera node: pyrealsense2 pipelines for one or more cameras (by serial) -> sensor_msgs/Image + CameraInfo.

For each camera ``names[i]`` (serial ``serials[i]``): colour as ``rgb8`` on ``image_topic_pattern``, its CameraInfo on
``camera_info_topic_pattern`` and, with ``align_depth``, depth aligned to colour as ``16UC1`` (mm) on
``depth_topic_pattern``; sensor-data QoS; stamps per `irevla.robot.realsense` (``stamp_source``); frame id
``frame_id_pattern``. A camera that drops is reopened every ``reconnect_interval`` s. With the default patterns and
the name ``camera`` the topics are realsense-ros's (``/camera/camera/color/image_raw``), so either node can feed the
policy. ``playback_file`` plays a ``.db3`` recording instead of live cameras.
"""

from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from irevla.robot.config import RealSenseCameraConfig
from irevla.robot.conversions import camera_info_message, numpy_to_image
from irevla.robot.realsense import CameraFrame, CameraStream, PipelineSource, make_sources
from irevla.robot.ros_edge import SENSOR_QOS, declare_config, run_nodes


class RealSenseCameraNode(Node):
    def __init__(self, config: RealSenseCameraConfig | None = None,
                 sources: dict[str, PipelineSource] | None = None, **node_kwargs) -> None:
        super().__init__("realsense_camera", **node_kwargs)
        self.config = config = declare_config(self, RealSenseCameraConfig, config)
        sources = sources or make_sources(config)
        self.publishers_ = {}
        for name in sources:
            self.publishers_[name] = (
                self.create_publisher(Image, config.image_topic_pattern.format(camera=name), SENSOR_QOS),
                self.create_publisher(CameraInfo, config.camera_info_topic_pattern.format(camera=name), SENSOR_QOS),
                self.create_publisher(Image, config.depth_topic_pattern.format(camera=name), SENSOR_QOS)
                if config.align_depth else None)
        logger = self.get_logger()
        self.streams = {name: CameraStream(name, source, self._publish, config.frame_timeout,
                                           config.reconnect_interval, config.stamp_source, config.align_depth,
                                           log=logger.info).start()
                        for name, source in sources.items()}
        self.create_timer(5.0, self._report)

    def _publish(self, frame: CameraFrame) -> None:
        image_publisher, info_publisher, depth_publisher = self.publishers_[frame.camera]
        frame_id = self.config.frame_id_pattern.format(camera=frame.camera)
        image_publisher.publish(numpy_to_image(frame.color, "rgb8", frame.stamp, frame_id))
        k = frame.intrinsics
        info_publisher.publish(camera_info_message(k.width, k.height, k.fx, k.fy, k.cx, k.cy, k.coefficients,
                                                   k.distortion_model, frame.stamp, frame_id))
        if depth_publisher is not None and frame.depth is not None:
            depth_publisher.publish(numpy_to_image(frame.depth, "16UC1", frame.stamp, frame_id))

    def _report(self) -> None:
        for name, stream in self.streams.items():
            if stream.status.state != "streaming":
                self.get_logger().warning(f"camera {name}: {stream.status.state}: {stream.status.last_error}")

    def close(self) -> None:
        for stream in self.streams.values():
            stream.stop()


def main(args=None) -> int:
    return run_nodes(lambda: [RealSenseCameraNode()], args)


if __name__ == "__main__":
    sys.exit(main())
