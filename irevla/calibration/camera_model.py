"""Camera intrinsics: the pinhole + distortion model, and the intrinsics YAML file other parts of irevla read.

One file can hold several streams/profiles of one camera (a RealSense reports factory intrinsics for every
resolution); `load_intrinsics` picks the one a user asks for. Distortion models use ROS CameraInfo names:
``plumb_bob`` (k1 k2 p1 p2 k3) and ``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6) are what OpenCV computes with;
``equidistant`` (fisheye) is stored but not usable for board-pose estimation here.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, model_validator

from irevla.atomic_io import atomic_write_yaml
from irevla.calibration.errors import CalibrationError
from irevla.config import ConfigError, ConfigModel, load_config

DistortionModel = Literal["plumb_bob", "rational_polynomial", "equidistant"]
COEFFICIENT_COUNTS = {"plumb_bob": (5,), "rational_polynomial": (8,), "equidistant": (4,)}


class CameraIntrinsics(ConfigModel):
    """Intrinsics of one stream at one resolution. Pixel coordinates follow OpenCV (centre of top-left pixel = 0,0)."""

    stream: str = Field(default="color", description="stream name, e.g. color, infrared1, depth")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    cx: float
    cy: float
    distortion_model: DistortionModel = "plumb_bob"
    distortion_coefficients: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    realsense_model: str | None = Field(default=None, description="librealsense distortion model, when read from one")

    @model_validator(mode="after")
    def _check(self) -> CameraIntrinsics:
        expected = COEFFICIENT_COUNTS[self.distortion_model]
        if len(self.distortion_coefficients) not in expected:
            raise ValueError(f"distortion model {self.distortion_model} takes {expected[0]} coefficients, got "
                             f"{len(self.distortion_coefficients)}")
        if not all(np.isfinite(v) for v in (self.fx, self.fy, self.cx, self.cy, *self.distortion_coefficients)):
            raise ValueError("intrinsics contain NaN or inf")
        return self

    @property
    def camera_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def opencv_distortion(self) -> np.ndarray:
        """Coefficients in the order cv2.solvePnP / projectPoints expect; rejects models OpenCV's pinhole can't use."""
        if self.distortion_model == "equidistant":
            raise CalibrationError(f"{self.stream} {self.width}x{self.height}: fisheye (equidistant) intrinsics are "
                                   "not supported for ChArUco pose estimation; use a pinhole stream such as color")
        return np.asarray(self.distortion_coefficients, dtype=np.float64)

    @property
    def profile_name(self) -> str:
        return f"{self.stream} {self.width}x{self.height}"


class IntrinsicsFile(ConfigModel):
    """What `irevla calibrate intrinsics` writes: one camera, one or more stream profiles, and how they were made."""

    camera_name: str = ""
    camera_serial: str = ""
    source: Literal["realsense_factory", "charuco", "camera_info", "manual"] = "manual"
    date: str = ""
    streams: tuple[CameraIntrinsics, ...] = Field(min_length=1)
    calibration_report: dict[str, Any] | None = Field(default=None, description="ChArUco fit: RMS, per-image errors")


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def write_intrinsics_file(path: str | Path, intrinsics_file: IntrinsicsFile) -> Path:
    data = intrinsics_file.model_dump(mode="json")
    if data["calibration_report"] is None:
        del data["calibration_report"]
    return atomic_write_yaml(path, data)


def load_intrinsics_file(path: str | Path) -> IntrinsicsFile:
    try:
        return load_config(path, IntrinsicsFile)
    except ConfigError as exc:
        raise CalibrationError(str(exc)) from None


def load_intrinsics(path: str | Path, stream: str = "color", width: int | None = None,
                    height: int | None = None) -> CameraIntrinsics:
    """The one profile of `stream` (and resolution, when given) in an intrinsics file; errors list what is there."""
    streams = load_intrinsics_file(path).streams
    matches = [s for s in streams if s.stream == stream and (width is None or s.width == width)
               and (height is None or s.height == height)]
    available = ", ".join(s.profile_name for s in streams)
    if not matches:
        wanted = f"{stream} {width or '*'}x{height or '*'}"
        raise CalibrationError(f"{path}: no intrinsics for {wanted}; the file has: {available}")
    if len(matches) > 1:
        raise CalibrationError(f"{path}: several profiles match stream {stream!r} ({available}); "
                               "give the resolution (--width/--height)")
    return matches[0]


def camera_info_yaml(intrinsics: CameraIntrinsics, camera_name: str) -> str:
    """The camera_calibration_parsers YAML that ROS camera drivers load through camera_info_url."""
    k = intrinsics.camera_matrix
    projection = np.hstack([k, np.zeros((3, 1))])
    data = {
        "image_width": intrinsics.width, "image_height": intrinsics.height, "camera_name": camera_name,
        "camera_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in k.ravel()]},
        "distortion_model": intrinsics.distortion_model,
        "distortion_coefficients": {"rows": 1, "cols": len(intrinsics.distortion_coefficients),
                                    "data": [float(v) for v in intrinsics.distortion_coefficients]},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in np.eye(3).ravel()]},
        "projection_matrix": {"rows": 3, "cols": 4, "data": [float(v) for v in projection.ravel()]},
    }
    return yaml.safe_dump(data, sort_keys=False)
