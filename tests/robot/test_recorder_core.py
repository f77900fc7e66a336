"""Recorder core: observations paired with actions by stamp, episodes written crash-safely and read back, keys,
discard, max_steps, and the rosbag2 (MCAP) export read back with rosbags."""

from __future__ import annotations

import numpy as np
import pytest

from irevla.data import EpisodeStore, read_episode
from irevla.robot.config import CamerasConfig, RecorderConfig
from irevla.robot.recorder import History, RecorderCore, export_rosbag

CAMERAS = CamerasConfig(names=("front", "wrist"), image_topics=("/camera/front/color/image_raw",
                                                                "/camera/wrist/color/image_raw"))


def make_recorder(tmp_path, **overrides) -> RecorderCore:
    config = RecorderConfig(out=str(tmp_path / "episodes"), cameras=CAMERAS, keyboard=False, **overrides)
    return RecorderCore(config, log=lambda message: None, clock=lambda: 1e9)


def frame(value: int, size=(24, 32)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def feed(recorder: RecorderCore, t: float) -> None:
    """Sensors at time t: images carry round(10 t) as pixel value, the state carries t."""
    for camera in ("front", "wrist"):
        recorder.on_image(camera, frame(int(round(10 * t)) % 256, (24, 32) if camera == "front" else (16, 16)), t)
    recorder.on_state(np.full(7, t, np.float32), t)


def test_history_returns_the_newest_at_or_before_a_stamp():
    history = History(window=1.0)
    for t in (0.0, 0.1, 0.2, 1.5):
        history.add(t, t)
    assert history.at(1.45) == (1.5, 1.5) and len(history) == 1  # older ones fell out of the window
    history.add(1.6, 1.6)
    assert history.at(1.55) == (1.5, 1.5) and history.at(9.0) == (1.6, 1.6) and history.latest() == (1.6, 1.6)


def test_cannot_start_before_every_sensor_was_seen(tmp_path):
    recorder = make_recorder(tmp_path)
    recorder.on_image("front", frame(0), 0.0)
    assert "wrist" in recorder.start() and "robot state" in recorder.message and not recorder.recording


def test_episode_is_recorded_paired_by_stamp_and_reads_back(tmp_path):
    recorder = make_recorder(tmp_path)
    for t in np.arange(0.0, 0.5, 0.05):
        feed(recorder, round(t, 3))
    assert "recording" in recorder.start("put the cube in the bowl")
    actions = []
    for k in range(5):
        t = 0.5 + 0.1 * k
        feed(recorder, t)
        feed(recorder, t + 0.05)  # newer sensor data arrives before the action computed from time t
        action = np.array([0.01 * k, 0, 0, 0, 0, 0, k % 2], np.float32)
        actions.append(action)
        assert recorder.on_action(action, stamp=t, intervention=k == 3)
    recorder.mark_success(True)
    path = recorder.stop()
    assert path is not None and not recorder.recording
    episode = read_episode(path)
    assert episode.n_steps == 5 and episode.success and episode.source == "teleop"
    assert episode.images["front"].shape == (6, 24, 32, 3) and episode.images["wrist"].shape == (6, 16, 16, 3)
    assert episode.proprio.shape == (6, 7) and episode.actions.shape == (5, 7)
    assert np.allclose(episode.proprio[:5, 0], [0.5, 0.6, 0.7, 0.8, 0.9])  # the state at the action's stamp
    assert [int(episode.images["front"][t][0, 0, 0]) for t in range(5)] == [5, 6, 7, 8, 9]
    assert np.allclose(episode.actions, np.stack(actions))
    assert episode.rewards.tolist() == [0, 0, 0, 0, 1.0]
    assert episode.interventions.tolist() == [False, False, False, True, False]
    assert episode.instruction == "put the cube in the bowl"
    assert EpisodeStore(tmp_path / "episodes").index(success=True)[0].path == path


def test_depth_is_paired_by_stamp_and_stored_in_the_episode(tmp_path):
    cameras = CAMERAS.model_copy(update={"depth_topics": ("/camera/front/aligned_depth_to_color/image_raw", "")})
    recorder = RecorderCore(RecorderConfig(out=str(tmp_path / "episodes"), cameras=cameras, keyboard=False),
                            log=lambda message: None, clock=lambda: 1e9)

    def depth(t: float, size=(24, 32)) -> np.ndarray:  # millimetres encode the time: 1000 t
        return np.full(size, int(round(1000 * t)), np.uint16)

    feed(recorder, 0.4)
    assert "front depth" in recorder.start() and not recorder.recording  # no depth seen yet
    recorder.on_depth("front", depth(0.4), 0.4)
    assert "recording" in recorder.start()
    for k in range(4):
        t = 0.5 + 0.1 * k
        feed(recorder, t)
        recorder.on_depth("front", depth(t), t)
        recorder.on_depth("front", depth(t + 0.05), t + 0.05)  # newer depth before the action computed from t
        assert recorder.on_action(np.zeros(7), stamp=t)
    feed(recorder, 0.9)
    recorder.on_depth("front", depth(0.9, (12, 16)), 0.95)  # a depth not aligned to colour: the step is skipped
    assert not recorder.on_action(np.zeros(7), stamp=0.95) and "aligned to colour" in recorder.message
    episode = read_episode(recorder.stop())
    assert set(episode.depth) == {"front"} and episode.depth["front"].dtype == np.uint16
    assert episode.depth["front"].shape == (5, 24, 32)
    assert [int(episode.depth["front"][t][0, 0]) for t in range(4)] == [500, 600, 700, 800]


def hand_eye_file(path, calibration_type: str, child_frame: str, translation, quaternion):
    """A hand-eye result as `irevla calibrate handeye` / easy_handeye2 write it (their common fields)."""
    path.write_text(
        f"parameters:\n  name: {path.stem}\n  calibration_type: {calibration_type}\n  robot_base_frame: fr3_link0\n"
        "  robot_effector_frame: fr3_hand_tcp\n"
        f"  tracking_base_frame: {child_frame}\n  tracking_marker_frame: charuco_board\n"
        f"transform:\n  translation: {dict(zip('xyz', translation))}\n  rotation: {dict(zip('xyzw', quaternion))}\n")
    return path


def test_episodes_record_the_camera_extrinsics_from_the_hand_eye_files(tmp_path):
    from irevla.calibration.result import extrinsics_from_metadata, load_hand_eye_calibration

    wrist = hand_eye_file(tmp_path / "calibration_wrist_camera.yaml", "eye_in_hand", "wrist_color_optical_frame",
                          [0.0695, 0.0102, -0.0801], [0.0183, 0.0799, 0.7041, 0.7053])
    cameras = CAMERAS.model_copy(update={"hand_eye_files": ("", str(wrist))})  # front: no calibration
    recorder = RecorderCore(RecorderConfig(out=str(tmp_path / "episodes"), cameras=cameras, keyboard=False),
                            log=lambda message: None, clock=lambda: 1e9)
    feed(recorder, 1.0)
    recorder.start()
    for k in range(3):
        feed(recorder, 1.0 + 0.1 * k)
        recorder.on_action(np.zeros(7), 1.0 + 0.1 * k)
    episode = read_episode(recorder.stop())
    recorded = episode.metadata["camera_extrinsics"]
    assert set(recorded) == {"wrist"}
    assert recorded["wrist"]["parent_frame"] == "fr3_hand_tcp" and recorded["wrist"]["file"] == str(wrist.resolve())
    assert len(recorded["wrist"]["sha256"]) == 64
    back = extrinsics_from_metadata(episode.metadata)["wrist"]
    assert np.allclose(back.T_parent_child, load_hand_eye_calibration(wrist).T_parent_child, atol=1e-12)
    assert back.child_frame == "wrist_color_optical_frame" and back.calibration_type == "eye_in_hand"


def test_a_bad_hand_eye_file_stops_the_recorder_before_any_episode(tmp_path):
    from irevla.calibration.errors import CalibrationError

    bad = hand_eye_file(tmp_path / "bad_calibration.yaml", "eye_on_base", "front_color_optical_frame",
                        [0.5, 0.0, 0.6], [0.0, 0.0, 0.0, 0.0])
    cameras = CAMERAS.model_copy(update={"hand_eye_files": (str(bad), "")})
    with pytest.raises(CalibrationError, match=r"bad_calibration.yaml: transform: quaternion"):
        RecorderCore(RecorderConfig(out=str(tmp_path / "episodes"), cameras=cameras, keyboard=False))
    with pytest.raises(CalibrationError, match="missing.yaml"):
        RecorderCore(RecorderConfig(out=str(tmp_path / "episodes"), keyboard=False,
                                    cameras=CAMERAS.model_copy(update={"hand_eye_files": (str(tmp_path / "missing.yaml"), "")})))
    with pytest.raises(ValueError, match="hand_eye_files \\(1\\) must be empty or one per camera"):
        CamerasConfig(names=("front", "wrist"), image_topics=("/a", "/b"), hand_eye_files=("x.yaml",))
    assert not (tmp_path / "episodes").exists() or not list((tmp_path / "episodes").glob("*.h5"))


def test_discard_and_keys(tmp_path):
    recorder = make_recorder(tmp_path)
    feed(recorder, 1.0)
    recorder.handle_key("s")
    assert recorder.recording
    recorder.on_action(np.zeros(7), 1.0)
    recorder.handle_key("d")
    assert not recorder.recording and "discarded 1" in recorder.message
    recorder.handle_key("S")
    recorder.on_action(np.zeros(7), 1.0)
    recorder.handle_key("n")
    recorder.handle_key("e")
    infos = EpisodeStore(tmp_path / "episodes").index()
    assert len(infos) == 1 and infos[0].success is False
    assert recorder.handle_key("x") is None


def test_max_steps_ends_and_saves_the_episode(tmp_path):
    recorder = make_recorder(tmp_path, max_steps=3)
    feed(recorder, 1.0)
    recorder.start()
    for k in range(5):
        recorder.on_action(np.zeros(7), 1.0 + k)
    assert not recorder.recording and recorder.episodes_written == 1
    assert read_episode(recorder.last_path).n_steps == 3


def test_bad_steps_are_skipped_not_fatal(tmp_path):
    recorder = make_recorder(tmp_path)
    feed(recorder, 1.0)
    recorder.start()
    assert not recorder.on_action(np.array([np.nan] * 7), 1.0)
    recorder.on_image("front", frame(0, (8, 8)), 1.1)  # the camera changed resolution
    assert not recorder.on_action(np.zeros(7), 1.1)
    assert "step skipped" in recorder.message
    feed(recorder, 1.2)
    assert recorder.on_action(np.zeros(7), 1.2)
    assert recorder.stop() is not None


def test_rosbag_export_reads_back(tmp_path):
    pytest.importorskip("rosbags")
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    recorder = make_recorder(tmp_path)
    feed(recorder, 1.0)
    recorder.start()
    for k in range(3):
        feed(recorder, 1.0 + 0.1 * k)
        recorder.on_action(np.full(7, 0.01 * k), 1.0 + 0.1 * k)
    episode = read_episode(recorder.stop())
    bag = export_rosbag(episode, tmp_path / "bag", recorder.config)
    store = get_typestore(Stores.ROS2_HUMBLE)
    counts, first_front = {}, None
    with Reader(bag) as reader:
        for connection, timestamp, raw in reader.messages():
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
            if connection.topic == "/camera/front/color/image_raw" and first_front is None:
                first_front = (timestamp, store.deserialize_cdr(raw, connection.msgtype))
    assert counts == {"/camera/front/color/image_raw": 4, "/camera/wrist/color/image_raw": 4,
                      "/irevla/robot/state": 4, "/irevla/action": 3}
    timestamp, image = first_front
    assert timestamp == 1_000_000_000 and image.encoding == "rgb8" and (image.height, image.width) == (24, 32)
    assert np.array_equal(image.data.reshape(24, 32, 3), episode.images["front"][0])
