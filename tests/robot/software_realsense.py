"""A pyrealsense2 software_device camera for the tests (colour, optionally depth): frames are injected by a feeder
thread. With `depth=True` the device also has a depth sensor (z16, depth units 1 mm, identity extrinsics to colour)
and a frame matcher, so the pipeline delivers colour + depth framesets that `rs.align` aligns as on a D4xx; the depth
value of frame n is `depth_mm(n)` everywhere.

`SoftwareCamera.source()` is a `PipelineSource` for irevla.robot.realsense: each `open` builds a fresh
``rs.software_device`` (a re-plugged camera) and starts the pipeline on it with ``pipeline.set_device(device)``.
`unplug()` stops injecting until the next `open`, which is what a camera dropping off the bus looks like to a
pipeline. Pixel values encode the frame number; timestamps are host time in ms (system_time domain) unless
`timestamp_ms` is given.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pyrealsense2 as rs


def frame_pixels(number: int, width: int, height: int) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = number % 256
    image[..., 1] = np.arange(width, dtype=np.uint8)[None, :]
    image[..., 2] = 200
    return image


def depth_mm(number: int) -> int:
    return 400 + number % 1000


def _intrinsics(width: int, height: int):
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.fx = intrinsics.fy = 0.9 * width
    intrinsics.ppx, intrinsics.ppy = width / 2, height / 2
    intrinsics.model = rs.distortion.brown_conrady
    intrinsics.coeffs = [0.0] * 5
    return intrinsics


class SoftwareCamera:
    def __init__(self, width: int = 64, height: int = 48, fps: int = 30, serial: str = "000000000001",
                 timestamp_ms=None, depth: bool = False) -> None:
        self.width, self.height, self.fps, self.serial, self.depth = width, height, fps, serial, depth
        self._depth_sensor = None
        self._depth_profile = None
        self._made_depth = (None, None)
        self.timestamp_ms = timestamp_ms or (lambda: time.time() * 1000.0)
        self._lock = threading.Lock()
        self._sensor = None
        self._profile = None
        self.devices_made = 0
        self.injected = 0
        self.unplugged = False
        self._keep: list = []  # devices must outlive their pipelines
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def make_device(self):
        device = rs.software_device()
        sensor = device.add_sensor("Color")
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
        stream.width, stream.height, stream.fps, stream.bpp = self.width, self.height, self.fps, 3
        stream.fmt, stream.intrinsics = rs.format.rgb8, _intrinsics(self.width, self.height)
        profile = sensor.add_video_stream(stream)
        depth_sensor = depth_profile = None
        if self.depth:
            depth_sensor = device.add_sensor("Depth")
            depth_stream = rs.video_stream()
            depth_stream.type, depth_stream.index, depth_stream.uid = rs.stream.depth, 0, 1
            depth_stream.width, depth_stream.height, depth_stream.fps, depth_stream.bpp = (self.width, self.height,
                                                                                           self.fps, 2)
            depth_stream.fmt, depth_stream.intrinsics = rs.format.z16, _intrinsics(self.width, self.height)
            depth_profile = depth_sensor.add_video_stream(depth_stream)
            depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)  # 1 unit = 1 mm
            identity = rs.extrinsics()
            identity.rotation, identity.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
            depth_profile.register_extrinsics_to(profile, identity)
            device.create_matcher(rs.matchers.dlr_c)  # colour + depth framesets, as a D4xx delivers them
        device.register_info(rs.camera_info.serial_number, self.serial)
        device.register_info(rs.camera_info.name, "Software RealSense")
        self._made_depth = (depth_sensor, depth_profile)  # taken by open() under the lock
        return device, sensor, profile

    def open(self, rs_module, pipeline):
        device, sensor, profile = self.make_device()
        pipeline.set_device(device)
        config = rs.config()
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        if self.depth:
            config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        started = pipeline.start(config)
        with self._lock:
            self._keep.append(device)
            self._sensor, self._profile = sensor, profile.as_video_stream_profile()
            depth_sensor, depth_profile = self._made_depth
            self._depth_sensor = depth_sensor
            self._depth_profile = depth_profile.as_video_stream_profile() if depth_profile is not None else None
            self.devices_made += 1
            self.unplugged = False
        return started

    @property
    def description(self) -> str:
        return f"software RealSense {self.serial}"

    def unplug(self) -> None:
        with self._lock:
            self.unplugged = True

    def _feed(self) -> None:
        number = 0
        while not self._stop.is_set():
            with self._lock:
                sensor, profile, unplugged = self._sensor, self._profile, self.unplugged
                depth_sensor, depth_profile = self._depth_sensor, self._depth_profile
            if sensor is not None and not unplugged:
                timestamp = self.timestamp_ms()
                frame = rs.software_video_frame()
                frame.pixels = frame_pixels(number, self.width, self.height).tobytes()
                frame.bpp, frame.stride = 3, self.width * 3
                frame.timestamp = timestamp
                frame.domain = rs.timestamp_domain.system_time
                frame.frame_number = number
                frame.profile = profile
                sensor.on_video_frame(frame)
                if depth_sensor is not None and depth_profile is not None:
                    depth = rs.software_video_frame()
                    depth.pixels = np.full((self.height, self.width), depth_mm(number), np.uint16).tobytes()
                    depth.bpp, depth.stride = 2, self.width * 2
                    depth.timestamp, depth.domain, depth.frame_number = timestamp, rs.timestamp_domain.system_time, number
                    depth.profile = depth_profile
                    depth_sensor.on_video_frame(depth)
                self.injected += 1
                number += 1
            time.sleep(1.0 / self.fps)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
