"""realsense_camera with real pyrealsense2: a software_device camera (pipeline.set_device) and a recorded .db3
played back. Core: frames, stamps, depth aligned to colour in millimetres, reconnect after a drop. Node (real DDS,
private namespace): sensor_msgs/Image rgb8 + CameraInfo with the right stamps, from a live (software) device and from
a recording; two cameras with depth at once, one unplugged and reported by its serial while the other streams."""

from __future__ import annotations

import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 not installed (the 'robot' extra)")

from netns import run_isolated  # noqa: E402
from software_realsense import SoftwareCamera, depth_mm, frame_pixels  # noqa: E402

from irevla.robot.realsense import CameraStream, PlaybackSource  # noqa: E402


def collect(frames: list, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(frames) >= count, f"only {len(frames)} frames within {timeout} s"


def test_software_device_frames_have_content_intrinsics_and_host_stamps():
    camera = SoftwareCamera(64, 48)
    frames = []
    stream = CameraStream("wrist", camera, frames.append, frame_timeout=0.5, reconnect_interval=0.1,
                          log=lambda message: None).start()
    try:
        collect(frames, 5, 10.0)
        frame = frames[-1]
        assert frame.color.shape == (48, 64, 3) and frame.color.dtype == np.uint8
        assert np.array_equal(frame.color, frame_pixels(frame.frame_number, 64, 48))
        assert abs(frame.stamp - time.time()) < 1.0  # the frame's own system-clock stamp
        assert (frame.intrinsics.width, frame.intrinsics.fx) == (64, pytest.approx(57.6))
        numbers = [f.frame_number for f in frames]
        assert numbers == sorted(numbers)
    finally:
        stream.stop()
        camera.close()


def test_software_device_depth_is_aligned_to_colour_in_millimetres():
    camera = SoftwareCamera(64, 48, depth=True, serial="000000000007")
    frames = []
    stream = CameraStream("wrist", camera, frames.append, frame_timeout=0.5, reconnect_interval=0.1,
                          align_depth=True, log=lambda message: None).start()
    try:
        collect(frames, 5, 10.0)
        for frame in frames[-3:]:
            assert frame.depth is not None and frame.depth.dtype == np.uint16 and frame.depth.shape == (48, 64)
            # frames are matched by number: the depth of colour frame n is depth_mm(n), as the device wrote it; the
            # alignment leaves holes (0 = no reading) where no depth pixel lands after rounding, as on a real D4xx
            readings = frame.depth[frame.depth > 0]
            assert np.all(readings == depth_mm(frame.frame_number)), (frame.frame_number, np.unique(readings))
            assert readings.size >= 0.8 * frame.depth.size
    finally:
        stream.stop()
        camera.close()


def test_dropped_device_is_reconnected():
    camera = SoftwareCamera(32, 24)
    frames = []
    stream = CameraStream("front", camera, frames.append, frame_timeout=0.4, reconnect_interval=0.1,
                          log=lambda message: None).start()
    try:
        collect(frames, 3, 10.0)
        camera.unplug()
        time.sleep(0.1)
        before = len(frames)
        deadline = time.monotonic() + 10.0
        while stream.status.reconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.status.reconnects >= 1 and "no frame" in stream.status.last_error
        collect(frames, before + 3, 10.0)
        assert camera.devices_made >= 2 and stream.status.state == "streaming"
    finally:
        stream.stop()
        camera.close()


def test_old_stamps_fall_back_to_arrival_time_in_auto_mode():
    camera = SoftwareCamera(32, 24, timestamp_ms=lambda: 1000.0)  # 1970: a playback or an unsynced clock
    frames = {"auto": [], "frame": []}
    streams = [CameraStream("c", camera, frames["auto"].append, stamp_source="auto", log=lambda m: None).start()]
    try:
        collect(frames["auto"], 2, 10.0)
        assert abs(frames["auto"][-1].stamp - time.time()) < 1.0
    finally:
        for stream in streams:
            stream.stop()
        camera.close()


def record_db3(path, frames: int = 12) -> None:
    camera = SoftwareCamera(40, 30, fps=30, serial="000000000042")
    camera.close()  # inject by hand below: the recording must hold exactly these frames
    device, sensor, profile = camera.make_device()
    recorder = rs.recorder(str(path), device)
    pipeline = rs.pipeline()
    pipeline.set_device(recorder)
    config = rs.config()
    config.enable_stream(rs.stream.color, 40, 30, rs.format.rgb8, 30)
    pipeline.start(config)
    for number in range(frames):
        frame = rs.software_video_frame()
        frame.pixels = frame_pixels(number, 40, 30).tobytes()
        frame.bpp, frame.stride, frame.timestamp = 3, 120, time.time() * 1000.0
        frame.domain, frame.frame_number = rs.timestamp_domain.system_time, number
        frame.profile = profile.as_video_stream_profile()
        sensor.on_video_frame(frame)
        pipeline.wait_for_frames(1000)
        time.sleep(1 / 30)  # at the camera's pace: real-time playback replays the recorded timing
    pipeline.stop()
    del pipeline, recorder


def test_db3_recording_plays_back(tmp_path):
    path = tmp_path / "wrist.db3"
    record_db3(path)
    frames = []
    stream = CameraStream("wrist", PlaybackSource(str(path), real_time=False), frames.append,
                          frame_timeout=1.0, reconnect_interval=5.0, log=lambda message: None).start()
    try:
        collect(frames, 5, 10.0)
    finally:
        stream.stop()
    first = frames[0]
    assert first.color.shape == (30, 40, 3)
    assert np.array_equal(first.color, frame_pixels(first.frame_number, 40, 30))
    assert abs(first.stamp - time.time()) < 5.0


# ------------------------------------------------------------------------------------------------- the node
def test_camera_node_publishes_images_and_reconnects_over_dds():
    run_isolated(camera_node_body, timeout=90)


def camera_node_body() -> None:
    import rclpy
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import CameraInfo, Image

    from irevla.robot.config import RealSenseCameraConfig
    from irevla.robot.conversions import image_to_rgb, stamp_to_seconds
    from irevla.robot.nodes.realsense_camera import RealSenseCameraNode

    rclpy.init()
    camera = SoftwareCamera(64, 48)
    node = RealSenseCameraNode(RealSenseCameraConfig(names=("camera",), serials=("000000000001",),
                                                     frame_timeout=0.5, reconnect_interval=0.1),
                               sources={"camera": camera})
    probe = Probe()
    probe.watch(Image, "/camera/camera/color/image_raw", keep=True)  # realsense-ros's default name
    probe.watch(CameraInfo, "/camera/camera/color/camera_info")
    executor = spin_in_background([node, probe])
    try:
        message = probe.wait_for(lambda: probe.get("/camera/camera/color/image_raw"), 20, "an image")
        assert message.encoding == "rgb8" and (message.height, message.width, message.step) == (48, 64, 192)
        assert message.header.frame_id == "camera_color_optical_frame"
        stamp = stamp_to_seconds(message.header.stamp)
        assert abs(stamp - time.time()) < 1.0
        image = image_to_rgb(message)
        assert np.array_equal(image[..., 1:], frame_pixels(0, 64, 48)[..., 1:])
        info = probe.wait_for(lambda: probe.get("/camera/camera/color/camera_info"), 5, "camera info")
        assert info.k[0] == pytest.approx(57.6) and info.distortion_model == "plumb_bob"
        stamps = [stamp_to_seconds(m.header.stamp) for _, m in probe.history["/camera/camera/color/image_raw"]]
        assert stamps == sorted(stamps)
        camera.unplug()
        time.sleep(0.8)
        count = len(probe.history["/camera/camera/color/image_raw"])
        probe.wait_for(lambda: len(probe.history["/camera/camera/color/image_raw"]) > count + 3, 10,
                       "frames after the reconnect")
        assert node.streams["camera"].status.reconnects >= 1
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.close()
        camera.close()
        rclpy.shutdown()


def test_two_cameras_with_depth_by_serial_one_unplugged_over_dds():
    output = run_isolated(two_cameras_body, timeout=120)
    assert "reported: software RealSense 000000000022" in output


def two_cameras_body() -> None:
    import rclpy
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import Image

    from irevla.robot.config import RealSenseCameraConfig
    from irevla.robot.conversions import image_to_numpy
    from irevla.robot.nodes.realsense_camera import RealSenseCameraNode

    rclpy.init()
    wrist, front = SoftwareCamera(64, 48, depth=True, serial="000000000011"), SoftwareCamera(32, 24, depth=True,
                                                                                           serial="000000000022")
    config = RealSenseCameraConfig(names=("wrist", "front"), serials=("000000000011", "000000000022"),
                                   align_depth=True, frame_timeout=0.5, reconnect_interval=0.1)
    node = RealSenseCameraNode(config, sources={"wrist": wrist, "front": front})
    probe = Probe()
    topics = {f"/camera/{name}/{kind}": name for name in ("wrist", "front")
              for kind in ("color/image_raw", "aligned_depth_to_color/image_raw")}
    for topic in topics:
        probe.watch(Image, topic, keep=True)
    executor = spin_in_background([node, probe])
    try:
        probe.wait_for(lambda: all(probe.get(topic) for topic in topics), 20, "colour and depth of both cameras")
        for name, (height, width) in (("wrist", (48, 64)), ("front", (24, 32))):
            depth = probe.get(f"/camera/{name}/aligned_depth_to_color/image_raw")
            assert depth.encoding == "16UC1" and (depth.height, depth.width) == (height, width)
            assert depth.header.frame_id == f"{name}_color_optical_frame"
            values = image_to_numpy(depth)
            readings = values[values > 0]  # 0: a hole the alignment left
            assert values.dtype == np.uint16 and readings.size >= 0.8 * values.size
            assert 400 <= int(readings[0]) < 1400 and np.all(readings == readings[0])
        front.unplug()  # the front camera drops off the bus; the wrist camera must not notice
        probe.wait_for(lambda: node.streams["front"].status.reconnects >= 1, 10, "the front camera's reconnect")
        error = node.streams["front"].status.last_error
        assert "000000000022" in error and "000000000011" not in error, error
        print("reported:", error)
        count = len(probe.history["/camera/wrist/color/image_raw"])
        probe.wait_for(lambda: len(probe.history["/camera/wrist/color/image_raw"]) > count + 5, 10,
                       "the wrist camera streaming on")
        assert node.streams["wrist"].status.reconnects == 0 and node.streams["wrist"].status.state == "streaming"
        count = len(probe.history["/camera/front/aligned_depth_to_color/image_raw"])
        probe.wait_for(lambda: len(probe.history["/camera/front/aligned_depth_to_color/image_raw"]) > count + 3, 10,
                       "front depth after it came back")
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.close()
        wrist.close()
        front.close()
        rclpy.shutdown()


def test_camera_node_plays_a_db3_recording_over_dds(tmp_path):
    record_db3(tmp_path / "front.db3", frames=45)
    run_isolated(playback_node_body, timeout=90, extra_env={"IREVLA_TEST_DB3": str(tmp_path / "front.db3")})


def playback_node_body() -> None:
    import os

    import rclpy
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import Image

    from irevla.robot.config import RealSenseCameraConfig
    from irevla.robot.conversions import image_to_rgb
    from irevla.robot.nodes.realsense_camera import RealSenseCameraNode

    rclpy.init()
    probe = Probe()
    probe.watch(Image, "/camera/front/color/image_raw", keep=True)
    executor = spin_in_background([probe])
    time.sleep(1.0)  # let the subscription be discovered before the (short) recording starts
    node = RealSenseCameraNode(RealSenseCameraConfig(names=("front",), serials=("",),
                                                     playback_file=os.environ["IREVLA_TEST_DB3"],
                                                     reconnect_interval=30.0))
    executor.add_node(node)
    try:
        probe.wait_for(lambda: len(probe.history.get("/camera/front/color/image_raw", [])) >= 5, 20, "played frames")
        message = probe.history["/camera/front/color/image_raw"][-1][1]
        assert message.encoding == "rgb8" and (message.height, message.width) == (30, 40)
        image = image_to_rgb(message)
        assert np.array_equal(image[..., 1:], frame_pixels(0, 40, 30)[..., 1:]) and image[..., 2].mean() == 200
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.close()
        rclpy.shutdown()
