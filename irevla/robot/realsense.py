"""RealSense capture core (no ROS): one pyrealsense2 pipeline per camera, frames with correct stamps, reconnects.

`CameraStream` runs one camera on its own thread: it opens a pipeline through a `PipelineSource`, waits for frame
sets, converts them into `CameraFrame` (RGB colour, optionally depth aligned to colour in millimetres, intrinsics,
stamp) and hands them to a callback. When no frame arrives for ``frame_timeout`` seconds, or the pipeline raises
(camera unplugged, USB reset), it closes the pipeline, waits ``reconnect_interval`` and opens it again -- for as long
as it runs; `status()` counts frames and reconnects and keeps the last error.

Sources (how a pipeline is opened):

* `SerialSource` -- a live camera by serial number (empty: the only connected camera), colour (and depth) at the
  configured profile.
* `PlaybackSource` -- a recording (``.db3``, rosbag2/sqlite3 as librealsense >= 2.58 writes) via
  ``config.enable_device_from_file``.
* anything with ``open(rs, pipeline) -> pipeline_profile`` -- the tests start a ``rs.software_device`` with
  ``pipeline.set_device(device)`` (``device.add_to(context)`` does not make it visible to a pipeline).

Stamps (``stamp_source``): ``frame`` uses the frame's own timestamp (ms) when its domain is the system or global
clock; ``receive`` the host time the frame set arrived; ``auto`` the frame's stamp when it is within a second of the
host clock (live cameras), else the arrival time (a recording played back carries its old times).

One process with rclpy and pyrealsense2 must import rclpy first: both embed a DDS stack, and with pyrealsense2
loaded first the process crashes in its exit handlers (measured with pyrealsense2 2.59.1 and rclpy 9.1). The nodes
import rclpy at module level and pyrealsense2 only when a stream starts, so they are safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from irevla.errors import UserError
from irevla.robot.config import RealSenseCameraConfig


class CameraError(UserError, RuntimeError):
    """A camera problem the user can fix; the message says which camera and what to do."""


def require_pyrealsense2() -> Any:
    try:
        import pyrealsense2
    except ImportError as exc:
        hint = (" (libusb is missing: apt-get install libusb-1.0-0)" if "libusb" in str(exc)
                else " (pip install pyrealsense2, the 'robot' extra)")
        raise CameraError(f"pyrealsense2 is not usable: {exc}{hint}") from None
    return pyrealsense2


@dataclass(frozen=True)
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    coefficients: tuple[float, ...] = (0.0,) * 5


@dataclass(frozen=True)
class CameraFrame:
    camera: str
    color: np.ndarray  # uint8 HxWx3 RGB
    stamp: float  # seconds since the epoch
    frame_number: int
    intrinsics: Intrinsics
    depth: np.ndarray | None = None  # uint16 HxW millimetres, aligned to colour


class PipelineSource(Protocol):
    description: str

    def open(self, rs: Any, pipeline: Any) -> Any: ...


@dataclass
class SerialSource:
    serial: str
    width: int
    height: int
    fps: int
    depth: bool = False

    @property
    def description(self) -> str:
        return f"RealSense {self.serial or '(the only one connected)'}"

    def open(self, rs: Any, pipeline: Any) -> Any:
        config = rs.config()
        if self.serial:
            connected = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
            if self.serial not in connected:
                raise CameraError(f"no RealSense with serial {self.serial} connected (connected: {connected or 'none'})")
            config.enable_device(self.serial)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        if self.depth:
            config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        return pipeline.start(config)


@dataclass
class PlaybackSource:
    path: str
    real_time: bool = True
    repeat: bool = False

    @property
    def description(self) -> str:
        return f"recording {self.path}"

    def open(self, rs: Any, pipeline: Any) -> Any:
        config = rs.config()
        config.enable_device_from_file(self.path, repeat_playback=self.repeat)
        profile = pipeline.start(config)
        profile.get_device().as_playback().set_real_time(self.real_time)
        return profile


@dataclass
class StreamStatus:
    frames: int = 0
    reconnects: int = 0
    opened: int = 0
    state: str = "starting"
    last_error: str = ""
    last_frame_time: float = 0.0
    extra: dict = field(default_factory=dict)


def video_intrinsics(profile: Any) -> Intrinsics:
    intrinsics = profile.as_video_stream_profile().get_intrinsics()
    model = intrinsics.model.name
    coefficients = [float(c) for c in intrinsics.coeffs]
    if model in ("kannala_brandt4", "ftheta"):
        ros_model, coefficients = "equidistant", (coefficients + [0.0] * 4)[:4]
    else:  # brown_conrady and its variants: ROS's plumb_bob, same k1 k2 p1 p2 k3 order (realsense-ros does this)
        ros_model, coefficients = "plumb_bob", (coefficients + [0.0] * 5)[:5]
    return Intrinsics(int(intrinsics.width), int(intrinsics.height), float(intrinsics.fx), float(intrinsics.fy),
                      float(intrinsics.ppx), float(intrinsics.ppy), ros_model, tuple(coefficients))


def color_array(rs: Any, frame: Any) -> np.ndarray:
    """A colour frame as RGB uint8 HxWx3, whatever 8-bit colour format it came in."""
    data = np.asanyarray(frame.get_data())
    fmt = frame.get_profile().format()
    if fmt == rs.format.rgb8:
        return np.array(data, copy=True)
    if fmt == rs.format.bgr8:
        return np.ascontiguousarray(data[..., ::-1])
    if fmt == rs.format.rgba8:
        return np.ascontiguousarray(data[..., :3])
    if fmt == rs.format.bgra8:
        return np.ascontiguousarray(data[..., 2::-1])
    raise CameraError(f"colour format {fmt} is not supported; configure rgb8 or bgr8")


def frame_stamp(rs: Any, frame: Any, received: float, mode: str) -> float:
    if mode == "receive":
        return received
    domain = frame.get_frame_timestamp_domain()
    on_host_clock = domain in (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time)
    stamp = frame.get_timestamp() / 1000.0
    if mode == "frame":
        return stamp if on_host_clock else received
    return stamp if on_host_clock and abs(stamp - received) < 1.0 else received


class CameraStream:
    """One camera on its own thread; see the module docstring."""

    def __init__(self, name: str, source: PipelineSource, on_frame: Callable[[CameraFrame], None],
                 frame_timeout: float = 1.0, reconnect_interval: float = 1.0, stamp_source: str = "auto",
                 align_depth: bool = False, log: Callable[[str], None] = print,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.name, self.source, self.on_frame = name, source, on_frame
        self.frame_timeout, self.reconnect_interval = frame_timeout, reconnect_interval
        self.stamp_source, self.align_depth = stamp_source, align_depth
        self.log, self.wall_clock = log, wall_clock
        self.status = StreamStatus()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera_{name}", daemon=True)

    def start(self) -> CameraStream:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        rs = require_pyrealsense2()
        first = True
        while not self._stop.is_set():
            if not first:
                self.status.reconnects += 1
                self.status.state = "reconnecting"
                if self._stop.wait(self.reconnect_interval):
                    break
            first = False
            pipeline = rs.pipeline()
            try:
                profile = self.source.open(rs, pipeline)
            except Exception as exc:  # noqa: BLE001 -- no camera yet: keep trying, say why
                self._failed(f"cannot open {self.source.description}: {exc}")
                continue
            self.status.opened += 1
            self.status.state = "streaming"
            self.log(f"camera {self.name}: streaming from {self.source.description}")
            try:
                self._stream(rs, pipeline, profile)
            except Exception as exc:  # noqa: BLE001 -- a dropped device: reconnect
                self._failed(f"{self.source.description}: {exc}")  # the serial says which camera, physically
            finally:
                try:
                    pipeline.stop()
                except RuntimeError:
                    pass
        self.status.state = "stopped"

    def _failed(self, message: str) -> None:
        if message != self.status.last_error:
            self.log(f"camera {self.name}: {message}; reconnecting every {self.reconnect_interval:.1f} s")
        self.status.last_error = message

    def _stream(self, rs: Any, pipeline: Any, profile: Any) -> None:
        color_profile = profile.get_stream(rs.stream.color)
        intrinsics = video_intrinsics(color_profile)
        align = rs.align(rs.stream.color) if self.align_depth else None
        depth_scale = None
        if self.align_depth:
            depth_sensor = profile.get_device().first_depth_sensor()
            depth_scale = float(depth_sensor.get_depth_scale())
        timeout_ms = int(self.frame_timeout * 1000)
        while not self._stop.is_set():
            ok, frames = pipeline.try_wait_for_frames(timeout_ms)
            if not ok:
                raise CameraError(f"no frame for {self.frame_timeout:.1f} s (camera unplugged or stalled)")
            received = self.wall_clock()
            if align is not None:
                frames = align.process(frames)
            color = frames.get_color_frame()
            if not color:
                continue
            depth = None
            if align is not None:
                depth_frame = frames.get_depth_frame()
                if depth_frame:
                    raw = np.asanyarray(depth_frame.get_data()).astype(np.float64)
                    depth = np.clip(np.round(raw * depth_scale * 1000.0), 0, 65535).astype(np.uint16)
            frame = CameraFrame(camera=self.name, color=color_array(rs, color),
                                stamp=frame_stamp(rs, color, received, self.stamp_source),
                                frame_number=int(color.get_frame_number()), intrinsics=intrinsics, depth=depth)
            self.status.frames += 1
            self.status.last_frame_time = time.monotonic()
            self.on_frame(frame)


def make_sources(config: RealSenseCameraConfig) -> dict[str, PipelineSource]:
    if config.playback_file:
        if len(config.names) != 1:
            raise CameraError(f"playback_file plays one recording: give one camera name, not {list(config.names)}")
        return {config.names[0]: PlaybackSource(config.playback_file, real_time=config.playback_real_time)}
    return {name: SerialSource(serial, config.width, config.height, config.fps, config.align_depth)
            for name, serial in zip(config.names, config.serials)}
