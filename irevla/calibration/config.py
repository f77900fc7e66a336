"""Calibration settings: board, frame names, ROS topics, noise model, sample counts, workspace margin.

Defaults match a Franka FR3 under franka_ros2 with a RealSense under realsense-ros; `config/calibration.yaml` holds
the same values for editing, loaded with `irevla.config.load_config` (errors name the file and the key).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from irevla.calibration.board import CharucoBoardConfig
from irevla.calibration.errors import CalibrationError
from irevla.calibration.refinement import NoiseModel
from irevla.config import ConfigError, ConfigModel, load_config


class FramesConfig(ConfigModel):
    """TF frame names written into the result (and used by the static transform publisher)."""

    robot_base_frame: str = Field(default="fr3_link0", min_length=1)
    robot_effector_frame: str = Field(default="fr3_hand_tcp", min_length=1,
                                      description="the frame the pose topic reports (franka_ros2 current_pose: the "
                                                  "end effector set in Desk, the hand TCP with a Franka Hand)")
    camera_frame: str = Field(default="camera_color_optical_frame", min_length=1,
                              description="optical frame of the calibrated stream (z forward, x right, y down)")
    board_frame: str = Field(default="charuco_board", min_length=1)


class RosTopicsConfig(ConfigModel):
    pose_topic: str = Field(default="/franka_robot_state_broadcaster/current_pose",
                            description="geometry_msgs/PoseStamped of the end effector in the base frame")
    image_topic: str = "/camera/camera/color/image_raw"
    camera_info_topic: str = "/camera/camera/color/camera_info"
    timeout_s: float = Field(default=5.0, gt=0)


class NoiseConfig(ConfigModel):
    """Expected noise, per axis (1 sigma): weighs corners against robot poses in the refinement."""

    pixel_px: float = Field(default=0.5, gt=0)
    robot_translation_mm: float = Field(default=0.5, gt=0)
    robot_rotation_deg: float = Field(default=0.1, gt=0)

    def model(self) -> NoiseModel:
        return NoiseModel(self.pixel_px, self.robot_translation_mm, self.robot_rotation_deg)


class CalibrationConfig(ConfigModel):
    board: CharucoBoardConfig = CharucoBoardConfig()
    frames: FramesConfig = FramesConfig()
    ros: RosTopicsConfig = RosTopicsConfig()
    noise: NoiseConfig = NoiseConfig()
    min_samples: int = Field(default=5, ge=3, description="fewer usable samples is an error")
    target_samples: int = Field(default=15, ge=3, description="collection asks for this many")
    workspace_margin: float = Field(default=0.02, ge=0, description="metres the workspace box shrinks on each side")


def load_calibration_config(path: str | Path | None) -> CalibrationConfig:
    """The config at `path`, or the built-in defaults when `path` is None."""
    if path is None:
        return CalibrationConfig()
    try:
        return load_config(path, CalibrationConfig)
    except ConfigError as exc:
        raise CalibrationError(str(exc)) from None
