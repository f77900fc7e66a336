"""Intel RealSense through pyrealsense2: factory intrinsics of every stream profile, and an image source.

Factory intrinsics come from ``profile.as_video_stream_profile().get_intrinsics()`` (fx, fy, ppx, ppy, model,
coeffs). librealsense's Brown-Conrady variants are stored as ROS ``plumb_bob`` like realsense-ros does (their
coefficients are zero on D4xx colour streams, and otherwise the same k1 k2 p1 p2 k3 order); the original model name
is kept in ``realsense_model``. pyrealsense2 is imported when a function here is called, not at import time.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from irevla.calibration.camera_model import CameraIntrinsics, IntrinsicsFile, now_iso
from irevla.calibration.errors import CalibrationError
from irevla.calibration.sources import CapturedImage


def require_pyrealsense2() -> Any:
    try:
        import pyrealsense2
    except ImportError as exc:
        hint = (" (libusb is missing: apt-get install libusb-1.0-0)" if "libusb" in str(exc)
                else " (pip install pyrealsense2, or the 'robot' extra of irevla)")
        raise CalibrationError(f"pyrealsense2 is not usable: {exc}{hint}") from None
    return pyrealsense2


def find_device(serial: str | None = None, context: Any = None) -> Any:
    """The connected RealSense with `serial` (or the only one); errors list what is connected."""
    rs = require_pyrealsense2()
    devices = list((context or rs.context()).query_devices())
    found = {_info(d, rs.camera_info.serial_number): d for d in devices}
    listing = ", ".join(f"{_info(d, rs.camera_info.name)} (serial {s})" for s, d in found.items()) or "none"
    if serial:
        if serial not in found:
            raise CalibrationError(f"no RealSense with serial {serial} connected; connected: {listing}")
        return found[serial]
    if len(found) != 1:
        raise CalibrationError(f"{len(found)} RealSense cameras connected ({listing}); "
                               + ("connect one" if not found else "choose one with --serial"))
    return devices[0]


def intrinsics_from_realsense(intrinsics: Any, stream: str) -> CameraIntrinsics:
    """Convert an ``rs.intrinsics``; the stream name is the profile's (``color``, ``infrared1``, ``depth``...)."""
    model = intrinsics.model.name
    coefficients = [float(c) for c in intrinsics.coeffs]
    if model in ("kannala_brandt4", "ftheta"):
        ros_model, coefficients = "equidistant", (coefficients + [0.0] * 4)[:4]
    else:
        ros_model, coefficients = "plumb_bob", (coefficients + [0.0] * 5)[:5]
    return CameraIntrinsics(stream=stream, width=int(intrinsics.width), height=int(intrinsics.height),
                            fx=float(intrinsics.fx), fy=float(intrinsics.fy), cx=float(intrinsics.ppx),
                            cy=float(intrinsics.ppy), distortion_model=ros_model,
                            distortion_coefficients=tuple(coefficients), realsense_model=model)


def factory_intrinsics(device: Any) -> IntrinsicsFile:
    """Intrinsics of every video stream profile of `device`, one entry per (stream, resolution)."""
    rs = require_pyrealsense2()
    streams: dict[tuple[str, int, int], CameraIntrinsics] = {}
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            if not profile.is_video_stream_profile():
                continue
            video = profile.as_video_stream_profile()
            name = _stream_name(profile)
            key = (name, video.width(), video.height())
            if key in streams:
                continue  # the same resolution at another fps or pixel format has the same intrinsics
            try:
                streams[key] = intrinsics_from_realsense(video.get_intrinsics(), name)
            except RuntimeError:
                continue  # some profiles (e.g. motion-module or uncalibrated formats) report no intrinsics
    if not streams:
        raise CalibrationError(f"{_info(device, rs.camera_info.name)}: no video stream reports intrinsics")
    return IntrinsicsFile(camera_name=_info(device, rs.camera_info.name),
                          camera_serial=_info(device, rs.camera_info.serial_number), source="realsense_factory",
                          date=now_iso(), streams=tuple(streams[k] for k in sorted(streams)))


class RealSenseImageSource:
    """Colour frames straight from pyrealsense2 (when no camera node runs). `device` is for tests/playback."""

    def __init__(self, serial: str | None = None, width: int = 640, height: int = 480, fps: int = 30,
                 device: Any = None, timeout_s: float = 5.0):
        rs = require_pyrealsense2()
        self._rs = rs
        self.timeout_s = timeout_s
        self._pipeline = rs.pipeline()
        config = rs.config()
        if device is not None:
            self._pipeline.set_device(device)
        else:
            device = find_device(serial)
            config.enable_device(_info(device, rs.camera_info.serial_number))
        self.serial = _info(device, rs.camera_info.serial_number)
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        try:
            self._profile = self._pipeline.start(config)
        except RuntimeError as exc:
            raise CalibrationError(f"RealSense {self.serial}: cannot stream colour {width}x{height} rgb8 @ {fps} fps "
                                   f"({exc})") from None

    def capture(self) -> CapturedImage:
        started = time.monotonic()
        # Frames queued before the request show the scene before the user pressed Enter; drop them.
        while self._pipeline.poll_for_frames():
            pass
        while time.monotonic() - started < self.timeout_s:
            ok, frames = self._pipeline.try_wait_for_frames(int(self.timeout_s * 1000))
            if ok and frames.get_color_frame():
                frame = frames.get_color_frame()
                image = np.asanyarray(frame.get_data()).copy()
                return CapturedImage(image, frame.get_timestamp() / 1000.0)
        raise CalibrationError(f"RealSense {self.serial}: no colour frame within {self.timeout_s:.0f} s")

    def intrinsics(self) -> CameraIntrinsics:
        stream = self._profile.get_stream(self._rs.stream.color).as_video_stream_profile()
        return intrinsics_from_realsense(stream.get_intrinsics(), "color")

    def close(self) -> None:
        self._pipeline.stop()


def _stream_name(profile: Any) -> str:
    # infrared has two indices on stereo cameras (left 1, right 2); others have one.
    name = profile.stream_type().name
    return f"{name}{profile.stream_index()}" if name == "infrared" and profile.stream_index() else name


def _info(device: Any, field: Any) -> str:
    return device.get_info(field) if device.supports(field) else ""
