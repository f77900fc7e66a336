"""``irevla data import rosbag BAG OUT --map topics.yaml``: a rosbag2 (MCAP or sqlite3) -> irevla episodes.

A bag recorded on the robot PC (realsense-ros cameras, franka_ros2 state, a teleop twist, ...) becomes episodes in
an `irevla.data.store.EpisodeStore`. The topic map (a YAML file, `TopicMap` below; the documented example is
``config/rosbag_topics.yaml``) says which topic feeds which part of the episode:

* ``cameras``: name -> ``image`` (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8; padded rows are cut by
  ``step``; stored as RGB), optional ``depth`` (16UC1 / mono16 millimetres, or 32FC1 metres converted to mm;
  aligned to the colour image, same size) -> ``Episode.depth``, optional ``camera_info`` (sensor_msgs/CameraInfo)
  -> ``metadata["camera_info"][camera]`` = k, d, distortion_model, width, height.
* ``state``: ``pose`` (geometry_msgs/PoseStamped) -> ee_x ee_y ee_z ee_rx ee_ry ee_rz, the rotation relative to
  ``reference_orientation`` as `irevla.rotations.ee_rotation_feature` does it (reference stored in
  ``TaskSpec.extra["ee_rotation_reference"]``); ``gripper`` (sensor_msgs/JointState of the fingers) ->
  gripper_width (sum of the finger positions); ``joints`` (sensor_msgs/JointState, named entries) -> more proprio.
  Pose + gripper is `irevla.spec.REAL_ROBOT_PROPRIO`; irevla's own ``/irevla/robot/state`` is ``joints`` with
  those names.
* ``action``: ``twist`` (geometry_msgs/TwistStamped or Twist): per-step delta = velocity * scale / rate_hz, in
  `irevla.spec.ActionSpec.ee_delta` order dx dy dz drx dry drz gripper, clipped to its bounds (clipped steps are
  counted and reported), the gripper from the measured width, a topic or a constant; or ``joint_state``
  (sensor_msgs/JointState named like the ActionSpec, irevla's own ``/irevla/action`` format).
* ``success`` (std_msgs/Bool): an episode succeeded if a True arrives between its first tick and the next
  episode's first tick (a label given after the episode ended still counts). Reward: 1.0 on the last step.
* ``episodes``: split where no message arrived for ``gap_s``, or by a ``topic`` (std_msgs/Bool: true starts,
  false stops; std_msgs/String: ``start_values`` / ``stop_values``, also as JSON ``{"event": ...}`` like irevla's
  ``/irevla/episode/event``), or not at all.

Resampling: output ticks every 1 / ``rate_hz`` s (or at each message of ``resample.clock_topic``); per topic the
value at a tick is the newest message stamped at or before it, never a later one. A tick at which some per-step
topic has not published yet, or only a message older than ``max_age_s``, is dropped (and splits the episode
there); ``T + 1`` ticks give ``T + 1`` observations and ``T`` actions (the last tick's action is not used).

The whole bag is read and checked before anything is written (topics, types, encodings, frame sizes, names,
finite values); then each episode's frames are decoded and the episode is written atomically. Problems raise
`RosbagImportError` (a `irevla.errors.UserError`) naming the bag or map file, the topic and what was expected.
Nothing heavy (rosbags, numpy, pydantic) is imported until a command runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from irevla.errors import UserError

DEFAULT_MAP = "config/rosbag_topics.yaml"
EE_DELTA_NAMES = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")
POSE_PROPRIO = ("ee_x", "ee_y", "ee_z", "ee_rx", "ee_ry", "ee_rz")
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
_BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1,
                    "16UC1": 2, "mono16": 2, "32FC1": 4}

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
JOINT_STATE = "sensor_msgs/msg/JointState"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TWIST_TYPES = ("geometry_msgs/msg/TwistStamped", "geometry_msgs/msg/Twist")
BOOL = "std_msgs/msg/Bool"
STRING = "std_msgs/msg/String"
GRIPPER_COMMAND_TYPES = ("std_msgs/msg/Float64", "std_msgs/msg/Float32", BOOL)

IMPORT_DESCRIPTION = textwrap.fill(
    "Turn a rosbag2 (a directory with metadata.yaml, or one .mcap / .db3 file) into irevla episodes. The topic map "
    "(YAML, default config/rosbag_topics.yaml: realsense-ros cameras, franka_ros2 pose and gripper, a teleop twist) "
    "names the camera, depth, camera_info, state, action, success and episode-boundary topics, the rate to resample "
    "to and the task. Each output tick takes per topic the newest message at or before it; twist velocities become "
    "per-step deltas (velocity / rate) clipped to the ActionSpec bounds. The bag is checked completely before "
    "anything is written; each episode is written atomically.", width=100)
IMPORT_EPILOG = """\
examples:
  irevla data import rosbag bags/session_01 data/from_bag                       # map: config/rosbag_topics.yaml
  irevla data import rosbag bags/session_01/session_01_0.mcap data/from_bag --map my_topics.yaml
  irevla data import rosbag bags/session_01 data/from_bag --set resample.rate_hz=15 --set episodes.gap_s=1.0
  irevla data import rosbag bags/session_01 data/from_bag --dry-run             # check and summarise, write nothing

map file (see config/rosbag_topics.yaml, every key explained there):
  cameras:  {front: {image: /camera/front/color/image_raw, depth: ..., camera_info: ...}}
  state:    {pose: {topic: ...}, gripper: {topic: ...}, joints: {topic: ..., names: [...]}}
  action:   {source: twist | joint_state, topic: ..., frame: base | ee, gripper: {source: width | topic | constant}}
  success:  {topic: ...}        episodes: {split: gap | topic | none, gap_s: 2.0, topic: ...}
  resample: {rate_hz: 10.0}     task: {name: ..., family: ..., instruction: ...}
"""


class RosbagImportError(UserError, ValueError):
    """The bag, the topic map or their combination cannot be imported; the message names file, topic and value."""


# ------------------------------------------------------------------------------------------------------ topic map
@functools.cache
def topic_map_model() -> type:
    """The pydantic model of the topic map (`TopicMap`), built on first use so that importing this module stays
    cheap (``irevla --help``)."""
    from pydantic import Field, model_validator

    from irevla.config import ConfigModel

    class CameraTopics(ConfigModel):
        """One camera: its colour image topic, optionally the aligned depth and the camera_info topics."""

        image: str = Field(min_length=1, description="sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)")
        depth: str | None = Field(default=None, description="sensor_msgs/Image 16UC1 (mm) or 32FC1 (m), aligned to "
                                                            "the colour image (realsense aligned_depth_to_color)")
        camera_info: str | None = Field(default=None, description="sensor_msgs/CameraInfo of the colour image")

    class TaskSection(ConfigModel):
        name: str = Field(default="pick-cube", min_length=1)
        family: str = Field(default="robot", min_length=1)
        instruction: str = Field(default="pick up the cube", min_length=1)
        variation: str = ""
        source: Literal["script", "teleop", "rl", "intervention"] = "teleop"
        round: int = Field(default=0, ge=0)
        max_episode_steps: int = Field(default=600, gt=0, description="raised to the longest imported episode")

    class ResampleSection(ConfigModel):
        rate_hz: float = Field(default=10.0, gt=0, description="output rate (Hz); also the twist -> delta divisor "
                                                               "and TaskSpec.control_hz")
        clock_topic: str | None = Field(default=None, description="tick at each message of this topic instead of "
                                                                  "every 1/rate_hz s")
        max_age_s: float = Field(default=1.0, gt=0, description="a per-step topic whose newest message is older "
                                                                "than this drops the tick")

    class EpisodesSection(ConfigModel):
        split: Literal["gap", "topic", "none"] = "gap"
        gap_s: float = Field(default=2.0, gt=0, description="split: gap -- no message on any per-step topic for "
                                                            "longer than this ends an episode")
        topic: str | None = Field(default=None, description="split: topic -- std_msgs/Bool or std_msgs/String")
        start_values: tuple[str, ...] = ("start", "started", "rl_episode_start")
        stop_values: tuple[str, ...] = ("stop", "stopped", "end", "rl_episode_end")
        min_steps: int = Field(default=1, ge=1, description="shorter episodes are skipped (and reported)")

        @model_validator(mode="after")
        def _topic_given(self):
            if self.split == "topic" and not self.topic:
                raise ValueError("split: topic needs episodes.topic (a std_msgs/Bool or std_msgs/String topic)")
            return self

    class PoseSource(ConfigModel):
        topic: str = Field(min_length=1, description="geometry_msgs/PoseStamped: EE pose in the base frame")
        reference_orientation: tuple[float, float, float, float] | None = Field(
            default=(1.0, 0.0, 0.0, 0.0), description="x y z w; proprio rotation = axis-angle relative to it "
                                                      "(irevla's home: gripper down); null: base frame")

    class GripperStateSource(ConfigModel):
        topic: str = Field(min_length=1, description="sensor_msgs/JointState of the fingers")
        joints: tuple[str, ...] = Field(default=(), description="joints whose positions sum to the width; empty: "
                                                                "every joint named *finger*")

    class JointStateSource(ConfigModel):
        topic: str = Field(min_length=1, description="sensor_msgs/JointState")
        names: tuple[str, ...] = Field(min_length=1, description="entries to read, in proprio order")
        field: Literal["position", "velocity", "effort"] = "position"
        proprio_names: tuple[str, ...] = Field(default=(), description="names in the episode; default: names")

        @model_validator(mode="after")
        def _same_length(self):
            if self.proprio_names and len(self.proprio_names) != len(self.names):
                raise ValueError(f"proprio_names ({len(self.proprio_names)}) must have one entry per name "
                                 f"({len(self.names)})")
            return self

    class StateSection(ConfigModel):
        pose: PoseSource | None = None
        gripper: GripperStateSource | None = None
        joints: JointStateSource | None = None

        @model_validator(mode="after")
        def _something(self):
            if self.pose is None and self.gripper is None and self.joints is None:
                raise ValueError("give at least one of pose, gripper, joints")
            return self

    class GripperActionSource(ConfigModel):
        source: Literal["width", "topic", "constant"] = Field(
            default="width", description="width: 1 - measured width / max_width (state.gripper); topic: "
                                         "std_msgs/Float64|Float32 0 open..1 closed or Bool true = closed")
        topic: str | None = None
        max_width: float = Field(default=0.08, gt=0, description="open width (m) for source: width")
        value: float = Field(default=0.0, ge=0, le=1, description="source: constant")

        @model_validator(mode="after")
        def _topic_given(self):
            if self.source == "topic" and not self.topic:
                raise ValueError("source: topic needs topic (std_msgs/Float64, Float32 or Bool)")
            return self

    class ActionSection(ConfigModel):
        source: Literal["twist", "joint_state"] = "twist"
        topic: str = Field(min_length=1)
        frame: Literal["base", "ee"] = Field(default="base", description="ActionSpec.frame of the deltas")
        max_translation: float = Field(default=0.02, gt=0, description="ActionSpec.ee_delta bound (m per step)")
        max_rotation: float = Field(default=0.1, gt=0, description="ActionSpec.ee_delta bound (rad per step)")
        clip: bool = Field(default=True, description="clip into the ActionSpec bounds (counted in the summary)")
        linear_scale: float = Field(default=1.0, gt=0, description="twist: m/s per unit of twist.linear")
        angular_scale: float = Field(default=1.0, gt=0, description="twist: rad/s per unit of twist.angular")
        stale_after_s: float = Field(default=0.5, ge=0, description="twist: a twist older than this at a tick "
                                                                    "counts as zero motion; 0: never")
        names: tuple[str, ...] = Field(default=EE_DELTA_NAMES, description="joint_state: the JointState entries "
                                                                           "for dx dy dz drx dry drz gripper")
        gripper: GripperActionSource = GripperActionSource()

        @model_validator(mode="after")
        def _seven_names(self):
            if len(self.names) != len(EE_DELTA_NAMES):
                raise ValueError(f"names: expected {len(EE_DELTA_NAMES)} entries (for {' '.join(EE_DELTA_NAMES)}), "
                                 f"got {len(self.names)}")
            return self

    class SuccessSection(ConfigModel):
        topic: str | None = Field(default=None, description="std_msgs/Bool; a True in an episode marks success")
        default: bool = Field(default=False, description="success of every episode when no topic is given")

    class TopicMap(ConfigModel):
        """What `irevla data import rosbag` reads from which topic (see config/rosbag_topics.yaml)."""

        task: TaskSection = TaskSection()
        stamps: Literal["header", "bag"] = Field(
            default="header", description="header: header.stamp (capture time; messages without a header or with "
                                          "a zero stamp use the bag time); bag: the time the recorder received it")
        resample: ResampleSection = ResampleSection()
        episodes: EpisodesSection = EpisodesSection()
        cameras: dict[str, CameraTopics] = Field(min_length=1)
        state: StateSection
        action: ActionSection
        success: SuccessSection = SuccessSection()

        @model_validator(mode="after")
        def _consistent(self):
            if self.action.source == "twist" and self.action.gripper.source == "width" and self.state.gripper is None:
                raise ValueError("action.gripper.source: width needs state.gripper (the finger joint states); use "
                                 "source: topic or constant otherwise")
            names = list(proprio_names_of(self))
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"state: proprio names {duplicates} appear twice (set state.joints.proprio_names)")
            return self

    return TopicMap


def proprio_names_of(topic_map: Any) -> tuple[str, ...]:
    """The episode's proprio names: pose (6), gripper_width, then the joint-state entries."""
    state = topic_map.state
    names: list[str] = []
    if state.pose is not None:
        names += POSE_PROPRIO
    if state.gripper is not None:
        names.append("gripper_width")
    if state.joints is not None:
        names += state.joints.proprio_names or state.joints.names
    return tuple(names)


def load_topic_map(path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """Load and validate a topic map; problems are `irevla.config.ConfigError`s naming the file and the key."""
    from irevla.config import load_config

    return load_config(path, topic_map_model(), overrides)


# ---------------------------------------------------------------------------------------------------- images
def _check_image_message(message: Any, allowed: tuple[str, ...], where: str) -> tuple[int, int]:
    """(height, width) of a sensor_msgs/Image after checking encoding, step and data length."""
    encoding = message.encoding
    if encoding not in allowed:
        raise RosbagImportError(f"{where}: unsupported image encoding {encoding!r}; supported: {', '.join(allowed)}")
    height, width, step = int(message.height), int(message.width), int(message.step)
    if height <= 0 or width <= 0:
        raise RosbagImportError(f"{where}: empty image {width}x{height}")
    row = width * _BYTES_PER_PIXEL[encoding]
    if step < row:
        raise RosbagImportError(f"{where}: step {step} is shorter than a row of {width} {encoding} pixels ({row} "
                                f"bytes)")
    if len(message.data) < step * (height - 1) + row:
        raise RosbagImportError(f"{where}: {len(message.data)} bytes of data, expected {height} rows of step "
                                f"{step} ({height * step} bytes)")
    return height, width


def _rows(message: Any, bytes_per_pixel: int) -> Any:
    """The image bytes as (height, width * bytes_per_pixel): the padding beyond each row (`step`) cut off."""
    import numpy as np

    height, width, step = int(message.height), int(message.width), int(message.step)
    data = np.frombuffer(message.data, dtype=np.uint8)
    if data.size < height * step:  # the last row may come without its padding
        data = np.concatenate([data, np.zeros(height * step - data.size, np.uint8)])
    return data[:height * step].reshape(height, step)[:, :width * bytes_per_pixel]


def image_to_rgb(message: Any, where: str = "image") -> Any:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, 8UC3) -> uint8 (H, W, 3) RGB, padding removed."""
    import numpy as np

    height, width = _check_image_message(message, COLOR_ENCODINGS, where)
    encoding = message.encoding
    channels = _BYTES_PER_PIXEL[encoding]
    pixels = _rows(message, channels).reshape(height, width, channels)
    if encoding == "bgr8":
        pixels = pixels[..., ::-1]
    elif encoding == "rgba8":
        pixels = pixels[..., :3]
    elif encoding == "bgra8":
        pixels = pixels[..., 2::-1]
    elif channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def depth_to_millimetres(message: Any, where: str = "depth") -> Any:
    """sensor_msgs/Image 16UC1 / mono16 (mm; ``is_bigendian`` honoured) or 32FC1 (m; NaN, inf and <= 0 become 0)
    -> uint16 (H, W) millimetres, padding removed."""
    import numpy as np

    height, width = _check_image_message(message, DEPTH_ENCODINGS, where)
    encoding = message.encoding
    order = ">" if int(message.is_bigendian) else "<"
    raw = np.ascontiguousarray(_rows(message, _BYTES_PER_PIXEL[encoding]))
    if encoding == "32FC1":
        metres = raw.view(f"{order}f4").reshape(height, width).astype(np.float64)
        valid = np.isfinite(metres) & (metres > 0)
        millimetres = np.where(valid, np.round(np.where(valid, metres, 0.0) * 1000.0), 0.0)
        return np.clip(millimetres, 0, 65535).astype(np.uint16)
    return raw.view(f"{order}u2").reshape(height, width).astype(np.uint16)


# ------------------------------------------------------------------------------------------------ bag reading
@dataclass(eq=False)
class _Topic:
    """Everything kept of one topic after the first pass: stamps (ns, sorted) and per-message values."""

    name: str
    role: str
    where: str  # the map key that names it, for error messages
    msgtype: str = ""
    stamps: Any = None  # int64 (N,), sorted
    bag_ns: Any = None  # int64 (N,), the bag (receive) time, same order as stamps
    dup: Any = None  # int (N,): index among messages of this topic with the same bag time (identifies a message)
    values: list = field(default_factory=list)
    count: int = 0
    zero_stamps: int = 0
    used: set = field(default_factory=set)


def _stamp_ns(message: Any, bag_ns: int, use_header: bool) -> tuple[int, bool]:
    header = getattr(message, "header", None)
    if use_header and header is not None:
        stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        if stamp != 0:
            return stamp, False
        return bag_ns, True
    return bag_ns, False


def _open_reader(bag: Path) -> Any:
    try:
        from rosbags.rosbag2 import Reader
    except ImportError as exc:
        raise RosbagImportError(f"importing a rosbag needs `rosbags` (pip install rosbags): {exc}") from None
    if not bag.exists():
        raise RosbagImportError(f"{bag}: no such bag (expected a rosbag2 directory with metadata.yaml, or a .mcap "
                                f"or .db3 file)")
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as exc:  # noqa: BLE001 -- rosbags raises FileNotFoundError, ReaderError, sqlite3/mcap errors
        raise RosbagImportError(f"{bag}: not a readable rosbag2 (a directory with metadata.yaml, or a .mcap / .db3 "
                                f"file): {type(exc).__name__}: {exc}") from None
    return reader


class _Plan:
    """Which topics the map needs, their roles and allowed types."""

    def __init__(self, topic_map: Any, map_path: str) -> None:
        self.map = topic_map
        self.map_path = map_path
        self.topics: dict[str, _Topic] = {}
        self.cameras: dict[str, _Topic] = {}
        self.depths: dict[str, _Topic] = {}
        self.infos: dict[str, _Topic] = {}
        m = topic_map
        for camera, topics in m.cameras.items():
            self.cameras[camera] = self._add(topics.image, "image", f"cameras.{camera}.image")
            if topics.depth:
                self.depths[camera] = self._add(topics.depth, "depth", f"cameras.{camera}.depth")
            if topics.camera_info:
                self.infos[camera] = self._add(topics.camera_info, "camera_info", f"cameras.{camera}.camera_info")
        state = m.state
        self.pose = self._add(state.pose.topic, "pose", "state.pose.topic") if state.pose else None
        self.gripper = self._add(state.gripper.topic, "gripper", "state.gripper.topic") if state.gripper else None
        self.joints = self._add(state.joints.topic, "joints", "state.joints.topic") if state.joints else None
        self.action = self._add(m.action.topic, m.action.source, "action.topic")
        self.gripper_command = None
        if m.action.source == "twist" and m.action.gripper.source == "topic":
            self.gripper_command = self._add(m.action.gripper.topic, "gripper_command", "action.gripper.topic")
        self.success = self._add(m.success.topic, "success", "success.topic") if m.success.topic else None
        self.boundary = None
        if m.episodes.split == "topic":
            self.boundary = self._add(m.episodes.topic, "boundary", "episodes.topic")
        self.clock = None
        if m.resample.clock_topic:
            self.clock = self._add(m.resample.clock_topic, "clock", "resample.clock_topic")
        # per-step topics: a tick needs a message of each (of the streams, a recent one)
        self.per_step = [*self.cameras.values(), *self.depths.values(),
                         *(t for t in (self.pose, self.gripper, self.joints, self.action, self.gripper_command)
                           if t is not None)]
        # Operator commands are events, not streams: a teleop twist stops while the operator pauses (stale_after_s
        # turns an old twist into zero motion) and a gripper command comes when it changes. Neither may drop ticks
        # by age or end an episode by a gap; each needs only a first message.
        self.events = [t for t in (self.action if m.action.source == "twist" else None, self.gripper_command)
                       if t is not None]

    def _add(self, name: str, role: str, where: str) -> _Topic:
        key = (name, role)
        if key not in self.topics:
            self.topics[key] = _Topic(name=name, role=role, where=where)
        return self.topics[key]


ALLOWED_TYPES = {"image": (IMAGE,), "depth": (IMAGE,), "camera_info": (CAMERA_INFO,), "pose": (POSE_STAMPED,),
                 "gripper": (JOINT_STATE,), "joints": (JOINT_STATE,), "twist": TWIST_TYPES,
                 "joint_state": (JOINT_STATE,), "gripper_command": GRIPPER_COMMAND_TYPES, "success": (BOOL,),
                 "boundary": (BOOL, STRING), "clock": None}


def _boundary_value(message: Any, episodes: Any) -> str | None:
    data = message.data
    if isinstance(data, (bool, int)) and not isinstance(data, str):
        return "start" if data else "stop"
    text = str(data).strip()
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and "event" in parsed:
            text = str(parsed["event"])
    except ValueError:
        pass
    if text in episodes.start_values:
        return "start"
    if text in episodes.stop_values:
        return "stop"
    return None


class _Extractor:
    """Per-role conversion of a deserialised message into the small value kept from the first pass."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.sizes: dict[str, tuple[int, int, str]] = {}  # topic -> (height, width, first encoding)

    def __call__(self, topic: _Topic, message: Any, index: int) -> Any:
        where = f"topic {topic.name} (message {index}, map key {topic.where})"
        role = topic.role
        m = self.plan.map
        if role in ("image", "depth"):
            allowed = COLOR_ENCODINGS if role == "image" else DEPTH_ENCODINGS
            size = _check_image_message(message, allowed, where)
            known = self.sizes.setdefault(topic.name, (*size, message.encoding))
            if known[:2] != size:
                raise RosbagImportError(f"{where}: image is {size[1]}x{size[0]}, earlier messages were "
                                        f"{known[1]}x{known[0]} (an episode's camera has one size)")
            return None
        if role == "camera_info":
            return {"k": [float(v) for v in message.k], "d": [float(v) for v in message.d],
                    "distortion_model": str(message.distortion_model), "width": int(message.width),
                    "height": int(message.height), "frame_id": str(message.header.frame_id)}
        if role == "pose":
            p, q = message.pose.position, message.pose.orientation
            return (float(p.x), float(p.y), float(p.z), float(q.x), float(q.y), float(q.z), float(q.w))
        if role == "gripper":
            return _gripper_width(message, m.state.gripper.joints, where)
        if role == "joints":
            source = m.state.joints
            return _named_values(message, source.names, source.field, where)
        if role == "twist":
            twist = getattr(message, "twist", message)
            return (float(twist.linear.x), float(twist.linear.y), float(twist.linear.z),
                    float(twist.angular.x), float(twist.angular.y), float(twist.angular.z))
        if role == "joint_state":
            frame = str(message.header.frame_id)
            if frame and frame != m.action.frame:
                raise RosbagImportError(f"{where}: action frame_id is {frame!r}, but the map says action.frame: "
                                        f"{m.action.frame} (irevla actions carry 'base' or 'ee')")
            values = _named_values(message, m.action.names, "position", where)
            by_name = dict(zip(message.name, message.position))
            intervention = by_name.get("meta/intervention")
            return values, (None if intervention is None else float(intervention) > 0.5)
        if role == "gripper_command":
            return float(bool(message.data)) if isinstance(message.data, (bool,)) else float(message.data)
        if role == "success":
            return bool(message.data)
        if role == "boundary":
            return _boundary_value(message, m.episodes)
        return None


def _named_values(message: Any, names: tuple[str, ...], field_name: str, where: str) -> tuple[float, ...]:
    values = list(getattr(message, field_name))
    if len(values) != len(message.name):
        raise RosbagImportError(f"{where}: JointState has {len(message.name)} names but {len(values)} "
                                f"{field_name} values")
    by_name = dict(zip(message.name, values))
    missing = [n for n in names if n not in by_name]
    if missing:
        raise RosbagImportError(f"{where}: JointState has no entries {missing} (it has {list(message.name)})")
    return tuple(float(by_name[n]) for n in names)


def _gripper_width(message: Any, joints: tuple[str, ...], where: str) -> float:
    """Franka Hand joint states: the width is the sum of the finger positions (each 0 .. 0.04 m)."""
    if joints:
        return float(sum(_named_values(message, joints, "position", where)))
    positions = [float(p) for name, p in zip(message.name, message.position) if "finger" in name]
    if not positions:  # an arm's joint_states by mistake would otherwise make a "width" of joint1 + joint2
        raise RosbagImportError(f"{where}: gripper JointState has no joint named *finger* (names "
                                f"{list(message.name)}); name the finger joints in state.gripper.joints")
    return float(sum(positions)) if len(positions) >= 2 else 2.0 * positions[0]


def _scan(bag: Path, plan: _Plan, progress: bool) -> dict[str, Any]:
    """First pass: check the bag against the map and keep every small value and every image's stamp."""
    import numpy as np
    from rosbags.typesys import Stores, get_typestore
    from tqdm.auto import tqdm

    reader = _open_reader(bag)
    try:
        available: dict[str, list] = {}
        for connection in reader.connections:
            available.setdefault(connection.topic, []).append(connection)
        listing = ", ".join(f"{t} ({c[0].msgtype})" for t, c in sorted(available.items())) or "none"
        if reader.message_count == 0:
            raise RosbagImportError(f"{bag}: the bag has no messages (topics: {listing})")
        connections = []
        for topic in plan.topics.values():
            if topic.name not in available:
                raise RosbagImportError(f"{bag}: no topic {topic.name} in the bag (map {plan.map_path}, key "
                                        f"{topic.where}); the bag has: {listing}")
            msgtype = available[topic.name][0].msgtype
            allowed = ALLOWED_TYPES[topic.role]
            if allowed is not None and msgtype not in allowed:
                raise RosbagImportError(f"{bag}: topic {topic.name} (map key {topic.where}) has type {msgtype}, "
                                        f"expected {' or '.join(allowed)}")
            topic.msgtype = msgtype
            connections += [c for c in available[topic.name] if c not in connections]
        typestore = get_typestore(Stores.ROS2_HUMBLE)
        use_header = plan.map.stamps == "header"
        extract = _Extractor(plan)
        by_name: dict[str, list[_Topic]] = {}
        for topic in plan.topics.values():
            by_name.setdefault(topic.name, []).append(topic)
        raw: dict[int, tuple[list, list, list]] = {id(t): ([], [], []) for t in plan.topics.values()}
        total = sum(c.msgcount for c in connections)
        with tqdm(total=total, unit="msg", desc="reading bag", disable=not progress, leave=False) as bar:
            for connection, bag_ns, data in reader.messages(connections=connections):
                bar.update()
                try:
                    message = typestore.deserialize_cdr(data, connection.msgtype)
                except Exception as exc:  # noqa: BLE001 -- a corrupt message: name it
                    raise RosbagImportError(f"{bag}: topic {connection.topic}: cannot deserialise a "
                                            f"{connection.msgtype} at bag time {bag_ns} ns: {exc}") from None
                for topic in by_name[connection.topic]:
                    stamps, bag_times, values = raw[id(topic)]
                    stamp, zero = _stamp_ns(message, bag_ns, use_header)
                    topic.zero_stamps += zero
                    values.append(extract(topic, message, len(values)))
                    stamps.append(stamp)
                    bag_times.append(bag_ns)
        duration_ns, message_count = int(reader.duration), int(reader.message_count)
    finally:
        reader.close()
    for topic in plan.topics.values():
        stamps, bag_times, values = raw[id(topic)]
        topic.count = len(stamps)
        if not stamps and topic.role not in ("success", "camera_info"):
            raise RosbagImportError(f"{bag}: topic {topic.name} (map key {topic.where}) has no messages")
        bag_array = np.asarray(bag_times, dtype=np.int64)
        dup = np.zeros(len(bag_times), dtype=np.int64)
        seen: Counter = Counter()
        for i, t in enumerate(bag_times):
            dup[i] = seen[t]
            seen[t] += 1
        order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
        topic.stamps = np.asarray(stamps, dtype=np.int64)[order]
        topic.bag_ns = bag_array[order]
        topic.dup = dup[order]
        topic.values = [values[i] for i in order]
    return {"connections": connections, "sizes": extract.sizes, "duration_ns": duration_ns,
            "message_count": message_count, "storage": _storage_of(bag)}


def _storage_of(bag: Path) -> str:
    if bag.is_file():
        return {".mcap": "mcap", ".db3": "sqlite3"}.get(bag.suffix, bag.suffix)
    try:
        import yaml

        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return str(info.get("storage_identifier", "?"))
    except Exception:  # noqa: BLE001 -- only for the summary
        return "?"


# --------------------------------------------------------------------------------------------- episode plan
@dataclass
class _EpisodePlan:
    ticks: Any  # int64 (T+1,)
    index: dict  # topic key -> int array (T+1,) of message indices (sorted order)
    success: bool
    window_end: int


@dataclass
class ImportReport:
    """What an import did; `format()` is the summary `irevla data import rosbag` prints."""

    bag: str
    out: str
    map_path: str
    storage: str = ""
    duration_s: float = 0.0
    messages: int = 0
    rate_hz: float = 0.0
    clock_topic: str | None = None
    split: str = ""
    episodes: list = field(default_factory=list)  # [(path or None, steps, success)]
    skipped_short: int = 0
    ticks: int = 0
    dropped_ticks: int = 0
    topic_counts: list = field(default_factory=list)  # [(topic, type, messages, used)]
    action_source: str = ""
    actions: int = 0
    clipped_actions: int = 0
    clipped_per_dim: dict = field(default_factory=dict)
    stale_actions: int = 0
    repeated_actions: int = 0
    zero_stamps: int = 0
    clip: bool = True
    dry_run: bool = False

    @property
    def steps(self) -> int:
        return sum(steps for _, steps, _ in self.episodes)

    def format(self) -> str:
        verb = "would write" if self.dry_run else "written"
        lines = [f"rosbag {self.bag} ({self.storage}, {self.duration_s:.1f} s, {self.messages} messages) -> "
                 f"{self.out}  [map {self.map_path}]"]
        successes = sum(1 for _, _, s in self.episodes if s)
        lengths = ", ".join(str(steps) for _, steps, _ in self.episodes)
        lines.append(f"  episodes {verb}: {len(self.episodes)} ({successes} successful), steps: {self.steps}"
                     + (f" ({lengths})" if self.episodes else "")
                     + (f"; {self.skipped_short} shorter than episodes.min_steps skipped" if self.skipped_short
                        else ""))
        clock = f"each message of {self.clock_topic}" if self.clock_topic else f"{self.rate_hz:g} Hz"
        lines.append(f"  ticks: {self.ticks} at {clock} (split: {self.split}), dropped: {self.dropped_ticks} "
                     f"(a per-step topic not yet published or older than resample.max_age_s)")
        bounds = "clipped to the ActionSpec bounds" if self.clip else \
            "outside the ActionSpec bounds (kept: action.clip false)"
        line = f"  actions ({self.action_source}): {self.actions}, {bounds}: {self.clipped_actions}"
        if self.clipped_per_dim:
            line += " (" + ", ".join(f"{k} {v}" for k, v in self.clipped_per_dim.items()) + ")"
        if self.action_source == "twist":
            line += f", stale twist (older than action.stale_after_s, zero motion): {self.stale_actions}"
        lines.append(line)
        if self.repeated_actions:
            lines.append(f"  warning: {self.repeated_actions} steps reuse an action message of the previous step "
                         f"(JointState deltas applied twice?); set resample.clock_topic to the action or state topic")
        if self.zero_stamps:
            lines.append(f"  note: {self.zero_stamps} messages had a zero header stamp; their bag time was used")
        width = max([len("topic"), *(len(t) for t, *_ in self.topic_counts)])
        type_width = max([len("type"), *(len(ty) for _, ty, *_ in self.topic_counts)])
        lines.append(f"  {'topic':<{width}}  {'type':<{type_width}}  {'messages':>8}  {'used':>6}")
        for topic, msgtype, count, used in self.topic_counts:
            used_text = "-" if used is None else str(used)
            lines.append(f"  {topic:<{width}}  {msgtype:<{type_width}}  {count:>8}  {used_text:>6}")
        for path, steps, success in self.episodes:
            if path is not None:
                lines.append(f"  {path}  {steps} steps  {'success' if success else 'failure'}")
        return "\n".join(lines)


def _windows(plan: _Plan, bag: Path) -> list[tuple[int, int]]:
    """Episode windows [start, end] (ns, inclusive) from the split rule."""
    import numpy as np

    episodes = plan.map.episodes
    times = np.sort(np.concatenate([t.stamps for t in plan.per_step if t not in plan.events]))
    if episodes.split == "none":
        return [(int(times[0]), int(times[-1]))]
    if episodes.split == "gap":
        gap = int(round(episodes.gap_s * 1e9))
        breaks = np.flatnonzero(np.diff(times) > gap)
        starts = np.concatenate([[0], breaks + 1])
        ends = np.concatenate([breaks, [len(times) - 1]])
        return [(int(times[s]), int(times[e])) for s, e in zip(starts, ends)]
    topic = plan.boundary
    windows, start = [], None
    for stamp, value in zip(topic.stamps, topic.values):
        if value == "start":
            if start is not None:
                windows.append((start, int(stamp) - 1))
            start = int(stamp)
        elif value == "stop" and start is not None:
            windows.append((start, int(stamp)))
            start = None
    if start is not None:
        windows.append((start, int(times[-1])))
    if not windows:
        seen = sorted({str(v) for v in topic.values})
        raise RosbagImportError(f"{bag}: episodes.topic {topic.name} has no start message (map {plan.map_path}: "
                                f"Bool true, or a String in start_values {list(episodes.start_values)}; "
                                f"{topic.count} messages)" + ("" if topic.msgtype == BOOL else
                                                              f"; recognised values: {seen}"))
    return windows


def _nearest_earlier(topic: _Topic, ticks: Any) -> tuple[Any, Any]:
    """(index of the newest message at or before each tick (-1: none yet), its age in ns)."""
    import numpy as np

    index = np.searchsorted(topic.stamps, ticks, side="right") - 1
    age = np.where(index >= 0, ticks - topic.stamps[np.maximum(index, 0)], np.iinfo(np.int64).max)
    return index, age


def _plan_episodes(plan: _Plan, bag: Path, report: ImportReport) -> list[_EpisodePlan]:
    import numpy as np

    m = plan.map
    windows = _windows(plan, bag)
    max_age = int(round(m.resample.max_age_s * 1e9))
    period = 1e9 / m.resample.rate_hz
    runs: list[tuple[Any, dict, int]] = []
    for start, end in windows:
        if plan.clock is not None:
            stamps = plan.clock.stamps
            ticks = stamps[(stamps >= start) & (stamps <= end)]
        else:
            n = int(np.floor((end - start) / period + 1e-9)) + 1
            ticks = start + np.round(np.arange(n) * period).astype(np.int64)
        if not len(ticks):
            continue
        report.ticks += len(ticks)
        valid = np.ones(len(ticks), dtype=bool)
        index = {}
        for topic in plan.per_step:
            idx, age = _nearest_earlier(topic, ticks)
            valid &= (idx >= 0) & ((age <= max_age) | (topic in plan.events))
            index[id(topic)] = idx
        report.dropped_ticks += int((~valid).sum())
        # contiguous runs of valid ticks: a stale topic in the middle splits the episode there
        edges = np.flatnonzero(np.diff(np.concatenate([[0], valid.astype(np.int8), [0]])))
        for run_start, run_end in zip(edges[::2], edges[1::2]):
            runs.append((ticks[run_start:run_end], {k: v[run_start:run_end] for k, v in index.items()}, end))
    plans = []
    for i, (ticks, index, window_end) in enumerate(runs):
        if len(ticks) - 1 < m.episodes.min_steps:
            report.skipped_short += 1
            continue
        success = m.success.default
        if plan.success is not None:
            until = runs[i + 1][0][0] if i + 1 < len(runs) else np.iinfo(np.int64).max
            stamps = plan.success.stamps
            inside = (stamps >= ticks[0]) & (stamps < until)
            success = any(v for v, keep in zip(plan.success.values, inside) if keep)
        plans.append(_EpisodePlan(ticks=ticks, index=index, success=bool(success), window_end=window_end))
    if not plans:
        raise RosbagImportError(
            f"{bag}: no episode of at least episodes.min_steps={m.episodes.min_steps} steps (map {plan.map_path}): "
            f"{report.ticks} ticks, {report.dropped_ticks} dropped because a per-step topic had no message at or "
            f"before them within resample.max_age_s={m.resample.max_age_s} s; first message per topic: "
            + ", ".join(f"{t.name} {t.stamps[0] / 1e9:.3f} s" for t in plan.per_step))
    return plans


# ------------------------------------------------------------------------------------------- numbers per step
def _action_spec(topic_map: Any) -> Any:
    from dataclasses import replace

    from irevla.spec import ActionSpec

    action = topic_map.action
    return replace(ActionSpec.ee_delta(action.max_translation, action.max_rotation), frame=action.frame)


def _reference_matrix(topic_map: Any) -> Any:
    import numpy as np

    pose = topic_map.state.pose
    if pose is None or pose.reference_orientation is None:
        return np.eye(3)
    from irevla.rotations import quaternion_to_matrix

    return quaternion_to_matrix(pose.reference_orientation)


def _proprio(plan: _Plan, episode: _EpisodePlan, reference: Any, bag: Path) -> Any:
    import numpy as np

    from irevla.rotations import QUATERNION_NORM_TOLERANCE, PoseError, ee_rotation_feature, normalize_quaternion
    from irevla.rotations import quaternion_to_matrix as to_matrix

    columns = []
    if plan.pose is not None:
        rows = []
        for i in episode.index[id(plan.pose)]:
            x, y, z, *quaternion = plan.pose.values[i]
            try:
                q = normalize_quaternion(quaternion, f"topic {plan.pose.name}: pose.orientation",
                                         QUATERNION_NORM_TOLERANCE)
            except PoseError as exc:
                raise RosbagImportError(f"{bag}: {exc} (message stamped {plan.pose.stamps[i] / 1e9:.6f} s)") from None
            rows.append([x, y, z, *ee_rotation_feature(to_matrix(q), reference)])
        columns.append(np.asarray(rows, dtype=np.float64))
    if plan.gripper is not None:
        columns.append(np.asarray([[plan.gripper.values[i]] for i in episode.index[id(plan.gripper)]]))
    if plan.joints is not None:
        columns.append(np.asarray([plan.joints.values[i] for i in episode.index[id(plan.joints)]]))
    return np.concatenate(columns, axis=1).astype(np.float32)


def _actions(plan: _Plan, episode: _EpisodePlan, report: ImportReport, spec: Any) -> tuple[Any, Any]:
    """(float32 (T, 7) actions, bool (T,) interventions or None) for the first T ticks."""
    import numpy as np

    m = plan.map
    action = m.action
    ticks = episode.ticks[:-1]
    idx = episode.index[id(plan.action)][:-1]
    interventions = None
    if action.source == "joint_state":
        values = np.asarray([plan.action.values[i][0] for i in idx], dtype=np.float64).reshape(len(idx), 7)
        flags = [plan.action.values[i][1] for i in idx]
        if any(f is not None for f in flags):
            interventions = np.asarray([bool(f) for f in flags], dtype=bool)
        report.repeated_actions += int(np.sum(np.diff(idx) == 0))
    else:
        twist = np.asarray([plan.action.values[i] for i in idx], dtype=np.float64).reshape(len(idx), 6)
        if action.stale_after_s > 0:
            stale = ticks - plan.action.stamps[idx] > int(round(action.stale_after_s * 1e9))
            twist[stale] = 0.0
            report.stale_actions += int(stale.sum())
        scale = np.array([action.linear_scale] * 3 + [action.angular_scale] * 3)
        deltas = twist * scale / m.resample.rate_hz
        gripper_source = action.gripper
        if gripper_source.source == "width":
            widths = np.asarray([plan.gripper.values[i] for i in episode.index[id(plan.gripper)][:-1]])
            gripper = np.clip(1.0 - widths / gripper_source.max_width, 0.0, 1.0)
        elif gripper_source.source == "topic":
            commands = [plan.gripper_command.values[i] for i in episode.index[id(plan.gripper_command)][:-1]]
            gripper = np.asarray(commands, dtype=np.float64)
        else:
            gripper = np.full(len(idx), gripper_source.value)
        values = np.concatenate([deltas, gripper.reshape(-1, 1)], axis=1)
    values = values.astype(np.float32)
    if not np.all(np.isfinite(values)):
        step = int(np.argwhere(~np.isfinite(values))[0][0])
        raise RosbagImportError(f"topic {plan.action.name}: non-finite action {values[step].tolist()} at tick "
                                f"{episode.ticks[step] / 1e9:.6f} s")
    outside = (values < spec.low_array) | (values > spec.high_array)
    report.actions += len(values)
    report.clipped_actions += int(outside.any(axis=1).sum())
    for name, count in zip(spec.names, outside.sum(axis=0)):
        if count:
            report.clipped_per_dim[name] = report.clipped_per_dim.get(name, 0) + int(count)
    if action.clip:
        values = np.clip(values, spec.low_array, spec.high_array)
    return values, interventions


def _camera_info(plan: _Plan, episode: _EpisodePlan, sizes: dict, bag: Path) -> dict:
    import numpy as np

    infos = {}
    for camera, topic in plan.infos.items():
        if not topic.count:
            continue
        i = max(int(np.searchsorted(topic.stamps, episode.ticks[0], side="right")) - 1, 0)
        info = dict(topic.values[i])
        height, width, _ = sizes[plan.cameras[camera].name]
        if (info["width"], info["height"]) != (0, 0) and (info["width"], info["height"]) != (width, height):
            raise RosbagImportError(f"{bag}: camera_info {topic.name} (map key {topic.where}) is "
                                    f"{info['width']}x{info['height']}, but the image topic "
                                    f"{plan.cameras[camera].name} is {width}x{height}")
        infos[camera] = {**info, "topic": topic.name}
    return infos


def _read_frames(bag: Path, plan: _Plan, episode: _EpisodePlan, sizes: dict) -> tuple[dict, dict]:
    """Second pass for one episode: decode exactly the image and depth messages its ticks use."""
    import numpy as np
    from rosbags.typesys import Stores, get_typestore

    wanted: dict[tuple[str, int, int], list[tuple[str, str, Any]]] = {}
    outputs: dict[tuple[str, str], Any] = {}
    for kind, topics in (("image", plan.cameras), ("depth", plan.depths)):
        for camera, topic in topics.items():
            height, width, _ = sizes[topic.name]
            shape = (len(episode.ticks), height, width, 3) if kind == "image" else (len(episode.ticks), height, width)
            outputs[(kind, camera)] = np.empty(shape, dtype=np.uint8 if kind == "image" else np.uint16)
            idx = episode.index[id(topic)]
            for t, i in enumerate(idx):
                key = (topic.name, int(topic.bag_ns[i]), int(topic.dup[i]))
                wanted.setdefault(key, []).append((kind, camera, t))
    start = min(k[1] for k in wanted)
    stop = max(k[1] for k in wanted) + 1
    names = {k[0] for k in wanted}
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    reader = _open_reader(bag)
    found = 0
    try:
        connections = [c for c in reader.connections if c.topic in names]
        seen: Counter = Counter()
        for connection, bag_ns, data in reader.messages(connections=connections, start=start, stop=stop):
            key = (connection.topic, int(bag_ns), seen[(connection.topic, bag_ns)])
            seen[(connection.topic, bag_ns)] += 1
            targets = wanted.get(key)
            if not targets:
                continue
            found += 1
            message = typestore.deserialize_cdr(data, connection.msgtype)
            where = f"topic {connection.topic} (bag time {bag_ns} ns)"
            decoded = {}
            for kind, camera, t in targets:
                if kind not in decoded:
                    decoded[kind] = image_to_rgb(message, where) if kind == "image" else \
                        depth_to_millimetres(message, where)
                outputs[(kind, camera)][t] = decoded[kind]
    finally:
        reader.close()
    if found != len(wanted):
        raise RosbagImportError(f"{bag}: {len(wanted) - found} image messages found in the first pass could not be "
                                f"read again (the bag changed while importing?)")
    images = {camera: outputs[("image", camera)] for camera in plan.cameras}
    depth = {camera: outputs[("depth", camera)] for camera in plan.depths}
    return images, depth


# ------------------------------------------------------------------------------------------------------ import
def import_rosbag(bag: str | Path, out: str | Path, topic_map: Any, map_path: str = "<map>", progress: bool = True,
                  dry_run: bool = False) -> ImportReport:
    """Import `bag` into the episode store at `out` following `topic_map` (a `topic_map_model()` instance).

    Everything is checked (first pass over the bag) before the first episode is written; each episode is then
    decoded and written atomically. Returns the report (`ImportReport.format()` is the printed summary)."""
    import numpy as np
    from tqdm.auto import tqdm

    from irevla.data.episode import Episode
    from irevla.spec import ObservationSpec, TaskSpec

    bag, out = Path(bag), Path(out)
    if out.exists() and not out.is_dir():
        raise RosbagImportError(f"{out}: output exists and is not a directory (OUT is an episode directory)")
    report = ImportReport(bag=str(bag), out=str(out), map_path=map_path, rate_hz=topic_map.resample.rate_hz,
                          clock_topic=topic_map.resample.clock_topic, split=topic_map.episodes.split,
                          action_source=topic_map.action.source, clip=topic_map.action.clip,
                          dry_run=dry_run)
    plan = _Plan(topic_map, map_path)
    scan = _scan(bag, plan, progress)
    report.storage, report.messages = scan["storage"], scan["message_count"]
    report.duration_s = scan["duration_ns"] / 1e9
    report.zero_stamps = sum(t.zero_stamps for t in plan.topics.values())
    sizes = scan["sizes"]
    for camera, depth_topic in plan.depths.items():
        image_size, depth_size = sizes[plan.cameras[camera].name][:2], sizes[depth_topic.name][:2]
        if image_size != depth_size:
            raise RosbagImportError(
                f"{bag}: depth topic {depth_topic.name} (map key {depth_topic.where}) is {depth_size[1]}x"
                f"{depth_size[0]}, the colour image {plan.cameras[camera].name} {image_size[1]}x{image_size[0]}: "
                f"depth must be aligned to the colour image (realsense-ros: align_depth, the "
                f"aligned_depth_to_color topic)")

    episodes = _plan_episodes(plan, bag, report)
    spec = _action_spec(topic_map)
    reference = _reference_matrix(topic_map)
    task_cfg = topic_map.task
    cameras = {camera: sizes[topic.name][:2] for camera, topic in plan.cameras.items()}
    longest = max(len(e.ticks) - 1 for e in episodes)
    task = TaskSpec(name=task_cfg.name, family=task_cfg.family, instruction=task_cfg.instruction, action_spec=spec,
                    observation_spec=ObservationSpec(cameras, proprio_names_of(topic_map)),
                    max_episode_steps=max(task_cfg.max_episode_steps, longest), variation=task_cfg.variation,
                    control_hz=float(topic_map.resample.rate_hz),
                    extra={"ee_rotation_reference": np.asarray(reference).reshape(-1).round(9).tolist(),
                           "imported_from": "rosbag2"})
    # every number per step, computed (and checked) before anything is written
    prepared = []
    for number, episode in enumerate(episodes):
        proprio = _proprio(plan, episode, reference, bag)
        if not np.all(np.isfinite(proprio)):
            tick = int(np.argwhere(~np.isfinite(proprio))[0][0])
            raise RosbagImportError(f"{bag}: non-finite proprio {proprio[tick].tolist()} at tick "
                                    f"{episode.ticks[tick] / 1e9:.6f} s (state topics "
                                    f"{[t.name for t in (plan.pose, plan.gripper, plan.joints) if t]})")
        actions, interventions = _actions(plan, episode, report, spec)
        prepared.append((number, episode, proprio, actions, interventions, _camera_info(plan, episode, sizes, bag)))
    for topic in plan.per_step:
        for episode in episodes:
            topic.used.update(int(i) for i in np.unique(episode.index[id(topic)]))

    if dry_run:
        report.episodes = [(None, len(e.ticks) - 1, e.success) for e in episodes]
    else:
        from irevla.data.store import EpisodeStore

        store = EpisodeStore(out)
        for number, episode, proprio, actions, interventions, infos in tqdm(
                prepared, desc="writing episodes", unit="episode", disable=not progress, leave=False):
            images, depth = _read_frames(bag, plan, episode, sizes)
            rewards = np.zeros(len(actions), dtype=np.float32)
            if episode.success:
                rewards[-1] = 1.0
            metadata = {"importer": "irevla data import rosbag", "bag": str(bag), "map": map_path,
                        "episode_in_bag": number, "start_s": episode.ticks[0] / 1e9, "end_s": episode.ticks[-1] / 1e9,
                        "stamps": topic_map.stamps, "rate_hz": topic_map.resample.rate_hz,
                        "topics": {t.where: t.name for t in plan.topics.values()}}
            if infos:
                metadata["camera_info"] = infos
            result = Episode(images=images, proprio=proprio, actions=actions, rewards=rewards,
                             success=episode.success, instruction=task_cfg.instruction, task=task,
                             source=task_cfg.source, round=task_cfg.round,
                             timestamps=episode.ticks.astype(np.float64) / 1e9, interventions=interventions,
                             metadata=metadata, **({"depth": depth} if depth else {}))
            path = store.write(result)
            report.episodes.append((path, result.n_steps, result.success))
    rows: dict[str, tuple] = {}
    for topic in plan.topics.values():  # one row per topic, also when it plays two roles (e.g. state and clock)
        used = len(topic.used) if topic in plan.per_step else None
        _, _, _, before = rows.get(topic.name, (None, None, None, None))
        rows[topic.name] = (topic.name, topic.msgtype, topic.count, used if used is not None else before)
    report.topic_counts = [rows[name] for name in sorted(rows)]
    return report


# ------------------------------------------------------------------------------------------------------ the CLI
def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``irevla data import rosbag``."""
    parser.add_argument("bag", metavar="BAG", help="rosbag2 directory (with metadata.yaml) or a .mcap / .db3 file")
    parser.add_argument("out", metavar="OUT", help="episode directory to write to (created; existing episodes kept)")
    parser.add_argument("--map", dest="topic_map", default=DEFAULT_MAP, metavar="YAML",
                        help=f"topic map (default: {DEFAULT_MAP}; realsense-ros + franka_ros2 topic names)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a map key, e.g. --set resample.rate_hz=15 (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="read and check everything, print the summary, "
                                                               "write nothing")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run_import(args: argparse.Namespace) -> int:
    """``irevla data import rosbag``: import, print the summary; 0 on success (errors are UserErrors -> exit 2)."""
    from irevla.config import parse_overrides

    map_path = str(args.topic_map)
    topic_map = load_topic_map(map_path, parse_overrides(getattr(args, "overrides", []) or []))
    report = import_rosbag(args.bag, args.out, topic_map, map_path=map_path,
                           progress=getattr(args, "progress", True), dry_run=getattr(args, "dry_run", False))
    print(report.format())
    return 0


__all__ = ["DEFAULT_MAP", "IMPORT_DESCRIPTION", "IMPORT_EPILOG", "ImportReport", "RosbagImportError",
           "add_import_arguments", "depth_to_millimetres", "image_to_rgb", "import_rosbag", "load_topic_map",
           "run_import", "topic_map_model"]
