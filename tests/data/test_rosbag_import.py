"""`irevla data import rosbag`: bags with known contents (written with rosbags, MCAP and sqlite3) -> episodes.

Every image pixel, pose, width and twist encodes its message index, so each resampled value can be checked against
the nearest-earlier message computed here independently of the importer.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags")

from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from irevla.config import ConfigError  # noqa: E402
from irevla.data.episode_file import read_episode  # noqa: E402
from irevla.data.rosbag import (  # noqa: E402
    RosbagImportError,
    add_import_arguments,
    depth_to_millimetres,
    image_to_rgb,
    import_rosbag,
    load_topic_map,
    run_import,
)
from irevla.data.store import EpisodeStore  # noqa: E402
from irevla.errors import UserError  # noqa: E402
from irevla.spec import REAL_ROBOT_PROPRIO  # noqa: E402

STORE = get_typestore(Stores.ROS2_HUMBLE)
T = STORE.types
T0 = 1_700_000_000 * 10**9
MS = 10**6
REPO = Path(__file__).resolve().parents[2]

FRONT, WRIST = "/camera/front/color/image_raw", "/camera/wrist/color/image_raw"
DEPTH, INFO = "/camera/front/aligned_depth_to_color/image_raw", "/camera/front/color/camera_info"
POSE, GRIPPER = "/franka_robot_state_broadcaster/current_pose", "/franka_gripper/joint_states"
TWIST, SUCCESS, EVENT = "/servo_node/delta_twist_cmds", "/sim_robot/success", "/irevla/episode/event"
FRONT_HW, WRIST_HW = (4, 5), (3, 2)


# --------------------------------------------------------------------------------------------------- messages
def header(ns: int, frame: str = "") -> object:
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                    frame_id=frame)


def image_msg(ns: int, pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: int = 0) -> object:
    """`pixels` (H, W, C) or (H, W) in the encoding's own layout; each row padded with `pad` bytes of 0xAB."""
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    return T["sensor_msgs/msg/Image"](header=header(ns, "cam"), height=height, width=width, encoding=encoding,
                                      is_bigendian=bigendian, step=padded.shape[1], data=padded.reshape(-1))


def front_rgb(k: int) -> np.ndarray:
    """Front frame k: R = k, G = 10 * row + column, B = 200."""
    h, w = FRONT_HW
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = k
    rgb[..., 1] = 10 * np.arange(h)[:, None] + np.arange(w)[None, :]
    rgb[..., 2] = 200
    return rgb


def wrist_rgb(k: int) -> np.ndarray:
    """Wrist frame k: R = k, G = 100, B = 50 + row (sent as bgr8)."""
    h, w = WRIST_HW
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = k, 100, 50 + np.arange(h)[:, None]
    return rgb


def front_depth(k: int) -> np.ndarray:
    h, w = FRONT_HW
    return (1000 + 10 * k + np.arange(w)[None, :] + 100 * np.arange(h)[:, None]).astype(np.uint16)


def pose_of(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Position and quaternion (x y z w) of pose k: home (gripper down) turned about base z by 0.01 k rad."""
    position = np.array([0.4 + 0.001 * k, -0.1, 0.3])
    quaternion = (Rotation.from_rotvec([0, 0, 0.01 * k]) * Rotation.from_quat([1, 0, 0, 0])).as_quat()
    return position, quaternion


def pose_msg(ns: int, k: int) -> object:
    position, q = pose_of(k)
    return T["geometry_msgs/msg/PoseStamped"](
        header=header(ns, "fr3_link0"),
        pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=position[0], y=position[1],
                                                                               z=position[2]),
                                         orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2],
                                                                                       w=q[3])))


def finger(k: int) -> float:
    return 0.04 - 0.0005 * k


def joint_state_msg(ns: int, names, positions, frame: str = "") -> object:
    empty = np.zeros(0, np.float64)
    return T["sensor_msgs/msg/JointState"](header=header(ns, frame), name=list(names),
                                           position=np.asarray(positions, np.float64), velocity=empty, effort=empty)


def twist_of(k: int) -> np.ndarray:
    """linear x y z (m/s), angular x y z (rad/s); z = 0.3 m/s is 0.03 m per step at 10 Hz: clipped to 0.02."""
    return np.array([0.05 + 0.001 * k, -0.02, 0.3 if k % 4 == 0 else 0.1, 0.0, 0.1, 0.5])


def twist_msg(ns: int, k: int) -> object:
    v = twist_of(k)
    vector = T["geometry_msgs/msg/Vector3"]
    return T["geometry_msgs/msg/TwistStamped"](
        header=header(ns, "fr3_link0"),
        twist=T["geometry_msgs/msg/Twist"](linear=vector(x=v[0], y=v[1], z=v[2]), angular=vector(x=v[3], y=v[4],
                                                                                                 z=v[5])))


def camera_info_msg(ns: int, width: int, height: int) -> object:
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(ns, "front_color_optical_frame"), height=height, width=width, distortion_model="plumb_bob",
        d=np.array([0.1, -0.2, 0.0, 0.0, 0.05]), k=np.array([600.0, 0, 2.5, 0, 601.0, 2.0, 0, 0, 1]),
        r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


# ------------------------------------------------------------------------------------------------------ bags
class Bag:
    """A rosbags Writer that remembers every message (topic -> [(stamp ns, index k)]) for the expected values."""

    def __init__(self, path: Path, storage: str = "mcap") -> None:
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=8, storage_plugin=plugin)
        self.writer.open()
        self.connections: dict[str, object] = {}
        self.sent: dict[str, list[tuple[int, int]]] = {}
        self.path = path

    def write(self, topic: str, ns: int, message: object, k: int = 0) -> None:
        msgtype = message.__msgtype__
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=STORE)
        self.writer.write(self.connections[topic], ns, STORE.serialize_cdr(message, msgtype))
        self.sent.setdefault(topic, []).append((ns, k))

    def close(self) -> Bag:
        self.writer.close()
        return self

    def latest(self, topic: str, tick: int) -> int:
        """Index k of the newest message on `topic` stamped at or before `tick` (the expected resampled value)."""
        return max((ns, k) for ns, k in self.sent[topic] if ns <= tick)[1]


def record_segment(bag: Bag, start: int, duration_ms: int, k_offset: int = 0, depth: bool = True,
                   twist_pause_ms: tuple[int, int] | None = None) -> None:
    """All topics of a robot session for `duration_ms`, at different rates and phases (stamps = bag times)."""
    for i, ms in enumerate(range(3, duration_ms, 50)):  # front 20 Hz, padded rgb8, + depth + camera_info
        k = k_offset + i
        bag.write(FRONT, start + ms * MS, image_msg(start + ms * MS, front_rgb(k % 256), "rgb8", pad=7), k)
        if depth:
            bag.write(DEPTH, start + ms * MS, image_msg(start + ms * MS, front_depth(k), "16UC1", pad=6), k)
        if i % 10 == 0:
            bag.write(INFO, start + ms * MS, camera_info_msg(start + ms * MS, FRONT_HW[1], FRONT_HW[0]), k)
    for i, ms in enumerate(range(10, duration_ms, 66)):  # wrist ~15 Hz, bgr8 with padding
        k = k_offset + i
        bag.write(WRIST, start + ms * MS, image_msg(start + ms * MS, wrist_rgb(k % 256)[..., ::-1], "bgr8", pad=2), k)
    for i, ms in enumerate(range(1, duration_ms, 10)):  # pose 100 Hz
        bag.write(POSE, start + ms * MS, pose_msg(start + ms * MS, k_offset + i), k_offset + i)
    for i, ms in enumerate(range(2, duration_ms, 20)):  # gripper 50 Hz
        k = k_offset + i
        bag.write(GRIPPER, start + ms * MS, joint_state_msg(start + ms * MS, ["fr3_finger_joint1",
                                                                             "fr3_finger_joint2"],
                                                            [finger(k), finger(k)]), k)
    for i, ms in enumerate(range(5, duration_ms, 33)):  # twist ~30 Hz
        if twist_pause_ms and twist_pause_ms[0] <= ms < twist_pause_ms[1]:
            continue  # the operator lets go of the SpaceMouse
        bag.write(TWIST, start + ms * MS, twist_msg(start + ms * MS, k_offset + i), k_offset + i)


def topic_map(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((REPO / "config" / "rosbag_topics.yaml").read_text())
    data["cameras"]["wrist"].pop("camera_info")
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def import_bag(bag: Path, out: Path, map_path: Path, **kwargs):
    return import_rosbag(bag, out, load_topic_map(map_path), map_path=str(map_path), progress=False, **kwargs)


def episodes_in(out: Path) -> list:
    episodes = [read_episode(p) for p in EpisodeStore(out, create=False).paths()]
    return sorted(episodes, key=lambda e: e.timestamps[0])


def expected_ticks(bag: Bag, start: int, end: int, rate_hz: float = 10.0) -> list[int]:
    """Ticks every 1/rate from `start` (the window's first message) at which every per-step topic has published."""
    period = 10**9 / rate_hz
    ticks = [start + round(i * period) for i in range(int((end - start) // period) + 1)]
    first = max(bag.sent[t][0][0] for t in (FRONT, WRIST, DEPTH, POSE, GRIPPER, TWIST))
    return [t for t in ticks if t >= first]


def check_episode(episode, bag: Bag, ticks: list[int], rate_hz: float = 10.0) -> None:
    assert episode.n_steps == len(ticks) - 1
    np.testing.assert_array_equal(episode.timestamps, np.asarray(ticks, dtype=np.float64) / 1e9)
    reference = Rotation.from_quat([1, 0, 0, 0])
    for t, tick in enumerate(ticks):
        k = bag.latest(FRONT, tick)
        np.testing.assert_array_equal(episode.images["front"][t], front_rgb(k % 256))  # padding cut
        np.testing.assert_array_equal(episode.depth["front"][t], front_depth(bag.latest(DEPTH, tick)))
        np.testing.assert_array_equal(episode.images["wrist"][t], wrist_rgb(bag.latest(WRIST, tick) % 256))  # bgr->rgb
        position, q = pose_of(bag.latest(POSE, tick))
        rotation = (Rotation.from_quat(q) * reference.inv()).as_rotvec()
        width = 2 * finger(bag.latest(GRIPPER, tick))
        np.testing.assert_allclose(episode.proprio[t], np.concatenate([position, rotation, [width]]), atol=1e-6)
        assert episode.proprio[t, 5] == pytest.approx(0.01 * bag.latest(POSE, tick), abs=1e-6)
        if t < episode.n_steps:
            delta = twist_of(bag.latest(TWIST, tick)) / rate_hz
            expected = np.clip(np.append(delta, 1 - width / 0.08), [-0.02] * 3 + [-0.1] * 3 + [0],
                               [0.02] * 3 + [0.1] * 3 + [1])
            np.testing.assert_allclose(episode.actions[t], expected, atol=1e-6)


# ------------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_import_resamples_nearest_earlier_and_splits_by_gap(tmp_path, storage, capsys):
    bag = Bag(tmp_path / "session", storage)
    record_segment(bag, T0, 1000)
    record_segment(bag, T0 + 4000 * MS, 800, k_offset=100)  # 3 s of silence between: a second episode
    bag.write(SUCCESS, T0 + 200 * MS, T["std_msgs/msg/Bool"](data=False))
    bag.write(SUCCESS, T0 + 4500 * MS, T["std_msgs/msg/Bool"](data=True))
    bag.close()
    out = tmp_path / "out"
    report = import_bag(bag.path, out, topic_map(tmp_path, success__topic=SUCCESS))

    first, second = episodes_in(out)
    # window 1 starts with its first message (pose at +1 ms); ticks before wrist/depth/twist published are dropped
    ticks1 = expected_ticks(bag, T0 + 1 * MS, T0 + 991 * MS)
    check_episode(first, bag, ticks1)
    window2 = T0 + 4001 * MS
    ticks2 = [t for t in expected_ticks(bag, window2, T0 + 4791 * MS) if t >= window2 + 10 * MS]
    check_episode(second, bag, ticks2)
    assert not first.success and second.success
    assert first.rewards.sum() == 0 and second.rewards[-1] == 1.0
    info = first.metadata["camera_info"]["front"]
    assert info["k"] == [600.0, 0, 2.5, 0, 601.0, 2.0, 0, 0, 1] and info["distortion_model"] == "plumb_bob"
    assert (info["width"], info["height"]) == (5, 4) and info["d"] == [0.1, -0.2, 0.0, 0.0, 0.05]
    assert first.task.action_spec.names == ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")
    assert first.task.observation_spec.proprio_names == REAL_ROBOT_PROPRIO
    assert first.task.observation_spec.cameras == {"front": FRONT_HW, "wrist": WRIST_HW}
    assert first.task.extra["ee_rotation_reference"] == [1, 0, 0, 0, -1, 0, 0, 0, -1]

    clipped = sum(int((np.abs(twist_of(bag.latest(TWIST, t))[2]) / 10) > 0.02)
                  for e_ticks in (ticks1, ticks2) for t in e_ticks[:-1])
    assert clipped > 0 and report.clipped_actions == clipped and report.clipped_per_dim == {"dz": clipped}
    assert report.dropped_ticks == 2 and len(report.episodes) == 2
    text = report.format()
    assert f"clipped to the ActionSpec bounds: {clipped}" in text and "episodes written: 2" in text
    counts = {topic: count for topic, _, count, _ in report.topic_counts}
    assert counts[FRONT] == len(bag.sent[FRONT]) and counts[SUCCESS] == 2


def test_boundary_topic_splits_and_labels(tmp_path):
    bag = Bag(tmp_path / "session.mcap")
    record_segment(bag, T0, 3000, depth=False)
    event = T["std_msgs/msg/String"]
    for ms, kind in [(500, "started"), (1200, "stopped"), (1700, "start"), (2600, "end")]:
        bag.write(EVENT, T0 + ms * MS, event(data=json.dumps({"event": kind, "steps": 0}) if kind.endswith("ed")
                                             else kind))
    bag.write(SUCCESS, T0 + 2650 * MS, T["std_msgs/msg/Bool"](data=True))  # a label after the stop still counts
    bag.close()
    out = tmp_path / "out"
    path = topic_map(tmp_path, episodes__split="topic", episodes__topic=EVENT, success__topic=SUCCESS,
                     cameras__front__depth=None)
    report = import_bag(bag.path, out, path)
    first, second = episodes_in(out)
    assert first.depth is None
    assert list(first.timestamps) == [(T0 + ms * MS) / 1e9 for ms in range(500, 1201, 100)]
    assert list(second.timestamps) == [(T0 + ms * MS) / 1e9 for ms in range(1700, 2601, 100)]
    assert not first.success and second.success
    ticks = [T0 + ms * MS for ms in range(1700, 2601, 100)]
    for t, tick in enumerate(ticks):
        np.testing.assert_array_equal(second.images["front"][t], front_rgb(bag.latest(FRONT, tick)))
    assert report.dropped_ticks == 0


def test_round_trip_of_irevla_export(tmp_path):
    from episode_factory import make_episode, make_task

    from irevla.robot.recorder import export_rosbag

    task = make_task("pick-cube", cameras={"front": (6, 8), "wrist": (4, 4)}, real_robot=True)
    episode = make_episode(7, n_steps=9, task=task)
    bag = export_rosbag(episode, tmp_path / "bags" / "episode")
    path = tmp_path / "irevla_export.yaml"
    path.write_text(yaml.safe_dump({
        "task": {"name": "pick-cube", "family": "franka", "instruction": "do pick-cube"},
        "resample": {"rate_hz": 10.0, "clock_topic": "/irevla/robot/state"},
        "episodes": {"split": "none"},
        "cameras": {"front": {"image": FRONT}, "wrist": {"image": WRIST}},
        "state": {"joints": {"topic": "/irevla/robot/state", "names": list(REAL_ROBOT_PROPRIO)}},
        "action": {"source": "joint_state", "topic": "/irevla/action", "frame": "ee", "clip": False}}))
    report = import_bag(bag, tmp_path / "out", path)
    (back,) = episodes_in(tmp_path / "out")
    assert back.n_steps == episode.n_steps
    assert back.actions.tobytes() == episode.actions.tobytes()
    assert back.proprio.tobytes() == episode.proprio.tobytes()
    for camera in ("front", "wrist"):
        np.testing.assert_array_equal(back.images[camera], episode.images[camera])
    np.testing.assert_allclose(back.timestamps, episode.timestamps, rtol=0, atol=1e-9)
    assert back.task.action_spec == episode.task.action_spec
    assert back.task.observation_spec == episode.task.observation_spec
    assert report.repeated_actions == 0 and report.dropped_ticks == 0
    assert report.clipped_actions > 0  # the factory's actions exceed ee_delta's bounds: reported, kept (clip: false)


def test_image_decoding_padding_encodings_and_endianness():
    rgb = front_rgb(9)
    for encoding, pixels in [("rgb8", rgb), ("bgr8", rgb[..., ::-1]),
                             ("rgba8", np.concatenate([rgb, np.full((*FRONT_HW, 1), 7, np.uint8)], axis=2)),
                             ("bgra8", np.concatenate([rgb[..., ::-1], np.full((*FRONT_HW, 1), 7, np.uint8)], axis=2))]:
        for pad in (0, 3, 13):
            np.testing.assert_array_equal(image_to_rgb(image_msg(0, pixels, encoding, pad=pad)), rgb)
    mono = rgb[..., 1].copy()
    np.testing.assert_array_equal(image_to_rgb(image_msg(0, mono, "mono8", pad=1)), np.repeat(mono[..., None], 3, 2))
    depth = front_depth(3)
    np.testing.assert_array_equal(depth_to_millimetres(image_msg(0, depth.astype("<u2"), "16UC1", pad=4)), depth)
    np.testing.assert_array_equal(depth_to_millimetres(image_msg(0, depth.astype(">u2"), "16UC1", 2, 1)), depth)
    metres = (depth / 1000.0).astype("<f4")
    metres[0, 0] = np.nan
    expected = depth.copy()
    expected[0, 0] = 0
    np.testing.assert_array_equal(depth_to_millimetres(image_msg(0, metres, "32FC1")), expected)


# ------------------------------------------------------------------------------------------------------ errors
def small_bag(path: Path, storage: str = "mcap", encoding: str = "rgb8") -> Path:
    bag = Bag(path, storage)
    record_segment(bag, T0, 1000)
    if encoding != "rgb8":
        bag.write("/camera/side/color/image_raw", T0 + 50 * MS,
                  image_msg(T0 + 50 * MS, np.zeros((2, 2, 2), np.uint8), encoding))
    bag.close()
    return path


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())


def test_missing_topic_names_it_and_lists_the_bag(tmp_path):
    bag = small_bag(tmp_path / "bag")
    path = topic_map(tmp_path, cameras__wrist__image="/camera/side/color/image_raw")
    with pytest.raises(RosbagImportError) as error:
        import_bag(bag, tmp_path / "out", path)
    message = str(error.value)
    assert "/camera/side/color/image_raw" in message and "cameras.wrist.image" in message and str(bag) in message
    assert f"{FRONT} (sensor_msgs/msg/Image)" in message and str(path) in message
    assert_nothing_written(tmp_path / "out")


def test_unknown_encoding_says_which_are_supported(tmp_path):
    bag = small_bag(tmp_path / "bag", storage="sqlite3", encoding="yuv422")
    path = topic_map(tmp_path, cameras__wrist__image="/camera/side/color/image_raw")
    with pytest.raises(RosbagImportError, match="unsupported image encoding 'yuv422'") as error:
        import_bag(bag, tmp_path / "out", path)
    assert "/camera/side/color/image_raw" in str(error.value) and "rgb8, bgr8" in str(error.value)
    assert_nothing_written(tmp_path / "out")


def test_empty_bag_and_missing_bag(tmp_path):
    bag = Bag(tmp_path / "empty")
    bag.writer.add_connection(FRONT, "sensor_msgs/msg/Image", typestore=STORE)
    bag.close()
    with pytest.raises(RosbagImportError, match="no messages") as error:
        import_bag(bag.path, tmp_path / "out", topic_map(tmp_path))
    assert str(bag.path) in str(error.value)
    with pytest.raises(RosbagImportError, match="no such bag") as error:
        import_bag(tmp_path / "nope", tmp_path / "out", topic_map(tmp_path))
    assert str(tmp_path / "nope") in str(error.value)
    (tmp_path / "junk.mcap").write_bytes(b"not a bag at all")
    with pytest.raises(RosbagImportError, match="not a readable rosbag2"):
        import_bag(tmp_path / "junk.mcap", tmp_path / "out", topic_map(tmp_path))
    assert_nothing_written(tmp_path / "out")


def test_wrong_map_field_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    data = yaml.safe_load((REPO / "config" / "rosbag_topics.yaml").read_text())
    data["cameras"]["front"]["imgae"] = data["cameras"]["front"].pop("image")
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        load_topic_map(path)
    assert str(path) in str(error.value) and "cameras.front.imgae: unknown key" in str(error.value)
    data = yaml.safe_load((REPO / "config" / "rosbag_topics.yaml").read_text())
    data["resample"]["rate_hz"] = "fast"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="resample.rate_hz"):
        load_topic_map(path)


def test_wrong_type_and_unaligned_depth(tmp_path):
    bag = small_bag(tmp_path / "bag")
    with pytest.raises(RosbagImportError, match="has type geometry_msgs/msg/TwistStamped, expected "
                                                "geometry_msgs/msg/PoseStamped"):
        import_bag(bag, tmp_path / "out", topic_map(tmp_path, state__pose__topic=TWIST))
    with pytest.raises(RosbagImportError, match="must be aligned to the colour image"):
        import_bag(bag, tmp_path / "out", topic_map(tmp_path, cameras__wrist__depth=DEPTH))
    assert_nothing_written(tmp_path / "out")


def _parse(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    add_import_arguments(parser)
    return parser.parse_args(argv)


def test_run_import_prints_summary_and_dry_run_writes_nothing(tmp_path, capsys):
    bag = small_bag(tmp_path / "bag")
    path = topic_map(tmp_path)
    assert run_import(_parse([str(bag), str(tmp_path / "dry"), "--map", str(path), "--dry-run", "--no-progress"])) == 0
    assert "episodes would write: 1" in capsys.readouterr().out
    assert not (tmp_path / "dry").exists()
    assert run_import(_parse([str(bag), str(tmp_path / "out"), "--map", str(path), "--set", "resample.rate_hz=5",
                              "--no-progress"])) == 0
    (episode,) = episodes_in(tmp_path / "out")
    assert episode.task.control_hz == 5.0 and np.allclose(np.diff(episode.timestamps), 0.2)
    with pytest.raises(UserError):
        run_import(_parse([str(tmp_path / "missing"), str(tmp_path / "o2"), "--map", str(path)]))


@pytest.mark.skipif(any(importlib.util.find_spec(f"irevla.data.{m}") is None for m in ("lerobot", "view")),
                    reason="irevla.data.cli also wires lerobot and view, not there yet")
def test_cli_end_to_end(tmp_path, capsys):
    from irevla.cli import main

    bag = small_bag(tmp_path / "bag")
    path = topic_map(tmp_path)
    assert main(["data", "import", "rosbag", str(bag), str(tmp_path / "out"), "--map", str(path)]) == 0
    assert len(EpisodeStore(tmp_path / "out", create=False).paths()) == 1
    assert "episodes written: 1" in capsys.readouterr().out
    assert main(["data", "import", "rosbag", str(tmp_path / "nope"), str(tmp_path / "o2"), "--map", str(path)]) == 2
    assert "no such bag" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_an_operator_pause_is_zero_motion_not_a_split(tmp_path):
    """No twist for 1.4 s in the middle of a demonstration: still one episode, with zero motion while the twist is
    older than action.stale_after_s (the twist is an event stream, not a sensor that must stay fresh)."""
    bag = Bag(tmp_path / "pause")
    record_segment(bag, 0, 3000, twist_pause_ms=(800, 2200))
    bag.close()
    import_bag(bag.path, tmp_path / "out", topic_map(tmp_path))
    (episode,) = episodes_in(tmp_path / "out")
    assert episode.n_steps >= 28
    ticks = np.asarray(expected_ticks(bag, 1 * MS, 2991 * MS))[:episode.n_steps]
    still = (ticks > (800 + 500) * MS) & (ticks < 2200 * MS)
    assert still.sum() >= 8
    assert np.all(episode.actions[still, :6] == 0) and np.any(episode.actions[~still, :6] != 0)
