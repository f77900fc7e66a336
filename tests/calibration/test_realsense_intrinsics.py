"""Factory intrinsics and colour capture through pyrealsense2, against a software device with known intrinsics."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from irevla.calibration.camera_model import load_intrinsics, write_intrinsics_file
from irevla.calibration.errors import CalibrationError

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 not importable (needs libusb-1.0-0)")

PROFILES = {  # (width, height): (fx, fy, ppx, ppy)
    (640, 480): (615.25, 614.5, 321.5, 238.75),
    (1280, 720): (922.9, 921.75, 642.25, 358.0),
}
COEFFS = [0.1, -0.2, 0.001, 0.002, 0.05]


@pytest.fixture
def software_camera():
    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, "000123456")
    device.register_info(rs.camera_info.name, "Intel RealSense D435 (software)")
    sensor = device.add_sensor("RGB Camera")
    profiles = {}
    for uid, ((width, height), (fx, fy, ppx, ppy)) in enumerate(PROFILES.items()):
        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = width, height
        intrinsics.fx, intrinsics.fy, intrinsics.ppx, intrinsics.ppy = fx, fy, ppx, ppy
        intrinsics.model, intrinsics.coeffs = rs.distortion.brown_conrady, COEFFS
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, uid
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = width, height, 30, 3, rs.format.rgb8
        stream.intrinsics = intrinsics
        profiles[(width, height)] = sensor.add_video_stream(stream)
    return device, sensor, profiles


def test_factory_intrinsics_of_every_profile(software_camera, tmp_path):
    from irevla.calibration.realsense import factory_intrinsics

    device, _, _ = software_camera
    result = factory_intrinsics(device)
    assert result.camera_serial == "000123456" and result.source == "realsense_factory"
    assert {(s.stream, s.width, s.height) for s in result.streams} == {("color", w, h) for w, h in PROFILES}
    for stream in result.streams:
        fx, fy, ppx, ppy = PROFILES[(stream.width, stream.height)]
        assert (stream.fx, stream.fy, stream.cx, stream.cy) == pytest.approx((fx, fy, ppx, ppy))
        assert stream.distortion_coefficients == pytest.approx(COEFFS)
        assert stream.distortion_model == "plumb_bob" and stream.realsense_model == "brown_conrady"
    path = write_intrinsics_file(tmp_path / "intrinsics.yaml", result)
    picked = load_intrinsics(path, "color", 1280, 720)
    assert picked.fx == pytest.approx(922.9)
    with pytest.raises(CalibrationError, match="several profiles match stream 'color'"):
        load_intrinsics(path, "color")
    with pytest.raises(CalibrationError, match=r"no intrinsics for depth \*x\*; the file has: color 640x480, "
                                               r"color 1280x720"):
        load_intrinsics(path, "depth")


def test_image_source_captures_colour_frames(software_camera):
    from irevla.calibration.realsense import RealSenseImageSource

    device, sensor, profiles = software_camera
    source = RealSenseImageSource(device=device, width=640, height=480, timeout_s=5.0)
    try:
        assert source.serial == "000123456"
        assert source.intrinsics().fx == pytest.approx(615.25)
        picture = np.zeros((480, 640, 3), np.uint8)
        picture[100:120, 200:240] = (255, 128, 7)

        def inject() -> None:
            for number in range(30):
                frame = rs.software_video_frame()
                frame.pixels, frame.bpp, frame.stride = picture, 3, 640 * 3
                frame.timestamp, frame.frame_number = number * 33.3, number
                frame.domain = rs.timestamp_domain.hardware_clock
                frame.profile = profiles[(640, 480)].as_video_stream_profile()
                sensor.on_video_frame(frame)
                time.sleep(0.02)

        injector = threading.Thread(target=inject)
        injector.start()
        captured = source.capture()
        injector.join()
        assert captured.image.shape == (480, 640, 3)
        assert tuple(captured.image[110, 220]) == (255, 128, 7)
    finally:
        source.close()


def test_missing_serial_lists_what_is_connected():
    from irevla.calibration.realsense import find_device

    with pytest.raises(CalibrationError, match="no RealSense with serial 999 connected; connected: none"):
        find_device("999")
