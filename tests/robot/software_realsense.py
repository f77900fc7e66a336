"""A pyrealsense2 software_device colour camera for the tests: frames are injected by a feeder thread.

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


class SoftwareCamera:
    def __init__(self, width: int = 64, height: int = 48, fps: int = 30, serial: str = "000000000001",
                 timestamp_ms=None) -> None:
        self.width, self.height, self.fps, self.serial = width, height, fps, serial
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
        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = self.width, self.height
        intrinsics.fx = intrinsics.fy = 0.9 * self.width
        intrinsics.ppx, intrinsics.ppy = self.width / 2, self.height / 2
        intrinsics.model = rs.distortion.brown_conrady
        intrinsics.coeffs = [0.0] * 5
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
        stream.width, stream.height, stream.fps, stream.bpp = self.width, self.height, self.fps, 3
        stream.fmt, stream.intrinsics = rs.format.rgb8, intrinsics
        profile = sensor.add_video_stream(stream)
        device.register_info(rs.camera_info.serial_number, self.serial)
        device.register_info(rs.camera_info.name, "Software RealSense")
        return device, sensor, profile

    def open(self, rs_module, pipeline):
        device, sensor, profile = self.make_device()
        pipeline.set_device(device)
        config = rs.config()
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        started = pipeline.start(config)
        with self._lock:
            self._keep.append(device)
            self._sensor, self._profile = sensor, profile.as_video_stream_profile()
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
            if sensor is not None and not unplugged:
                frame = rs.software_video_frame()
                frame.pixels = frame_pixels(number, self.width, self.height).tobytes()
                frame.bpp, frame.stride = 3, self.width * 3
                frame.timestamp = self.timestamp_ms()
                frame.domain = rs.timestamp_domain.system_time
                frame.frame_number = number
                frame.profile = profile
                sensor.on_video_frame(frame)
                self.injected += 1
                number += 1
            time.sleep(1.0 / self.fps)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
