"""Recorder core (no ROS): robot topics -> episodes in the crash-safe `irevla.data.EpisodeStore`.

One step is recorded per action command: the action (as commanded, e.g. the policy's or the human's delta) and
the observation it was computed from -- the newest image of every camera and the newest robot state stamped at or
before the action's header stamp (``history_s`` seconds of them are kept). `stop()` adds the final observation,
builds the `Episode` with `EpisodeBuilder` (which validates every field) and writes it with `EpisodeStore.write`
(temp file, fsync, atomic rename). Reward is sparse: 1.0 on the last step of a successful episode.

Controls (services in the node, keys in a terminal): ``s`` start, ``e`` end and save, ``y`` / ``n`` mark success /
failure, ``d`` discard. Optional: `export_rosbag` writes the same episode as a rosbag2 (MCAP) with `rosbags`.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from irevla.calibration.result import camera_extrinsics
from irevla.data.episode import Episode, EpisodeBuilder, finish_labelled
from irevla.data.store import EpisodeStore
from irevla.robot.config import RecorderConfig
from irevla.spec import REAL_ROBOT_PROPRIO, ActionSpec, ContractError, Observation, ObservationSpec, TaskSpec

T = TypeVar("T")
KEY_HELP = "s: start  e: end and save  y: success  n: failure  d: discard"


class History(Generic[T]):
    """Values with stamps (s), oldest first, kept for `window` seconds behind the newest."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._stamps: deque[float] = deque()
        self._values: deque[T] = deque()

    def add(self, stamp: float, value: T) -> None:
        if self._stamps and stamp < self._stamps[-1]:  # out of order (a restarted sender): start over
            self._stamps.clear()
            self._values.clear()
        self._stamps.append(stamp)
        self._values.append(value)
        while self._stamps and self._stamps[0] < stamp - self.window:
            self._stamps.popleft()
            self._values.popleft()

    def at(self, stamp: float) -> tuple[float, T] | None:
        """The newest value stamped at or before `stamp`; the oldest one if all are newer; None if empty."""
        if not self._stamps:
            return None
        index = bisect.bisect_right(self._stamps, stamp) - 1
        index = max(index, 0)
        return self._stamps[index], self._values[index]

    def latest(self) -> tuple[float, T] | None:
        return (self._stamps[-1], self._values[-1]) if self._stamps else None

    def __len__(self) -> int:
        return len(self._stamps)


@dataclass(frozen=True)
class RecorderStatus:
    recording: bool
    steps: int
    success: bool | None
    episodes_written: int
    last_path: str
    message: str


class RecorderCore:
    def __init__(self, config: RecorderConfig, store: EpisodeStore | None = None,
                 action_spec: ActionSpec | None = None, log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store or EpisodeStore(config.out)
        self.cameras = tuple(config.cameras.names)
        # Read once, now: a missing or malformed hand-eye file stops the recorder before any episode, naming the file.
        self.extrinsics = camera_extrinsics(self.cameras, config.cameras.hand_eye_files)
        self.action_spec = action_spec or replace(ActionSpec.ee_delta(), frame=config.action_frame)
        self.log, self.clock = log, clock
        self.images: dict[str, History[np.ndarray]] = {c: History(config.history_s) for c in self.cameras}
        # Depth (uint16 mm, aligned to colour) for the cameras with a depth topic; paired by stamp like the images.
        self.depth_cameras = tuple(c for c, topic in zip(self.cameras, config.cameras.depth_topics) if topic)
        self.depths: dict[str, History[np.ndarray]] = {c: History(config.history_s) for c in self.depth_cameras}
        self._depth_frames: dict[str, list[np.ndarray]] = {}
        self.states: History[np.ndarray] = History(config.history_s)
        self.builder: EpisodeBuilder | None = None
        self.success: bool | None = None
        self.instruction = config.instruction
        self.episodes_written = 0
        self.last_path: Path | None = None
        self.message = "idle"
        self._skipped = 0
        self.steps = 0

    # ------------------------------------------------------------------------------------------------ inputs
    def on_image(self, camera: str, image: np.ndarray, stamp: float) -> None:
        if camera in self.images:
            self.images[camera].add(stamp, image)

    def on_depth(self, camera: str, depth: np.ndarray, stamp: float) -> None:
        if camera in self.depths:
            self.depths[camera].add(stamp, depth)

    def depth_at(self, stamp: float) -> dict[str, np.ndarray] | None:
        """Each depth camera's frame as of `stamp`, or None while one has not been seen."""
        frames = {camera: history.at(stamp) for camera, history in self.depths.items()}
        if any(f is None for f in frames.values()):
            return None
        return {camera: f[1] for camera, f in frames.items()}

    def on_state(self, proprio: np.ndarray, stamp: float) -> None:
        self.states.add(stamp, np.asarray(proprio, dtype=np.float32))

    def observation_at(self, stamp: float) -> Observation | None:
        """The observation as of `stamp` (None while a camera or the state has not been seen)."""
        state = self.states.at(stamp)
        frames = {camera: history.at(stamp) for camera, history in self.images.items()}
        if state is None or any(f is None for f in frames.values()):
            return None
        return Observation(images={c: f[1] for c, f in frames.items()}, proprio=state[1],
                           instruction=self.instruction, timestamp=stamp)

    # -------------------------------------------------------------------------------------------- episodes
    @property
    def recording(self) -> bool:
        return self.builder is not None

    def start(self, instruction: str | None = None) -> str:
        if self.recording:
            return self._say(f"already recording ({self.steps} steps); end or discard first")
        missing = ([c for c, h in self.images.items() if not len(h)] + ([] if len(self.states) else ["robot state"])
                   + [f"{c} depth" for c, h in self.depths.items() if not len(h)])
        if missing:
            return self._say(f"cannot start: nothing received yet from {missing}")
        if instruction:
            self.instruction = instruction
        sizes = {camera: tuple(self.images[camera].latest()[1].shape[:2]) for camera in self.cameras}
        task = TaskSpec(name=self.config.task, family=self.config.family, instruction=self.instruction,
                        action_spec=self.action_spec,
                        observation_spec=ObservationSpec(cameras=sizes, proprio_names=REAL_ROBOT_PROPRIO),
                        max_episode_steps=self.config.max_steps)
        self.builder = EpisodeBuilder(task, source=self.config.source, round=self.config.round,
                                      metadata={"recorder": "irevla.robot.recorder", "cameras": list(self.cameras),
                                                **({"camera_extrinsics": self.extrinsics} if self.extrinsics else {})})
        self.success, self._skipped, self.steps = None, 0, 0
        self._depth_frames = {camera: [] for camera in self.depth_cameras}
        return self._say(f"recording '{self.instruction}' ({', '.join(f'{c} {h}x{w}' for c, (h, w) in sizes.items())})")

    def on_action(self, values: Any, stamp: float, intervention: bool | None = None) -> bool:
        """Record one step; returns False when not recording or the observation is incomplete."""
        if self.builder is None:
            return False
        observation = self.observation_at(stamp)
        depth = self.depth_at(stamp)
        if observation is None or depth is None:
            self._skipped += 1
            return False
        try:
            self._check_depth(depth, observation)
            self.builder.add(observation, np.asarray(values, dtype=np.float32), 0.0, intervention=intervention)
        except ContractError as exc:  # a camera changed size, NaN action...: skip the step, say why
            self._skipped += 1
            self._say(f"step skipped: {exc}")
            return False
        for camera, frame in depth.items():
            self._depth_frames[camera].append(frame)
        self.steps += 1
        if self.steps >= self.config.max_steps:
            self._say(f"reached max_steps {self.config.max_steps}")
            self.stop()
        return True

    def mark_success(self, success: bool) -> str:
        self.success = bool(success)
        return self._say(f"marked {'success' if success else 'failure'}")

    def stop(self, save: bool = True) -> Path | None:
        """End the episode: write it (if `save` and it has steps) and return its path."""
        builder, self.builder = self.builder, None
        if builder is None:
            self._say("not recording")
            return None
        if not save:
            self._say(f"discarded {self.steps} steps")
            return None
        if self.steps == 0:
            self._say("nothing recorded (no action arrived); nothing written")
            return None
        final = self.observation_at(self.clock()) or self._latest_observation()
        success = bool(self.success)
        episode = self._finish(builder, final, success)
        if self.depth_cameras:
            final_depth = self._final_depth(final)
            episode = replace(episode, depth={camera: np.stack([*frames, final_depth[camera]])
                                              for camera, frames in self._depth_frames.items()})
        path = self.store.write(episode)
        self.episodes_written += 1
        self.last_path = path
        self._say(f"wrote {path} ({episode.n_steps} steps, {'success' if success else 'failure'}"
                  + (f", {self._skipped} steps skipped" if self._skipped else "") + ")")
        if self.config.export_rosbag:
            bag_dir = Path(self.config.rosbag_dir or Path(self.config.out) / "rosbag")
            bag = export_rosbag(episode, bag_dir / path.stem, self.config)
            self._say(f"rosbag2 (MCAP) written to {bag}")
        return path

    def _final_depth(self, final: Observation | None) -> dict[str, np.ndarray]:
        """Depth for the final observation; the last recorded one where none fits it."""
        depth = self.depth_at(final.timestamp) if final is not None else None
        try:
            if depth is None or final is None:
                raise ContractError("no depth at the final observation")
            self._check_depth(depth, final)
            return depth
        except ContractError:
            return {camera: frames[-1] for camera, frames in self._depth_frames.items()}

    @staticmethod
    def _check_depth(depth: dict[str, np.ndarray], observation: Observation) -> None:
        for camera, frame in depth.items():
            colour = observation.images[camera].shape[:2]
            if frame.dtype != np.uint16 or frame.shape != colour:
                raise ContractError(f"{camera} depth: expected uint16 {colour} aligned to colour (mm), got "
                                    f"{frame.dtype} {frame.shape}")

    def _latest_observation(self) -> Observation | None:
        stamps = [h.latest()[0] for h in (*self.images.values(), self.states) if len(h)]
        return self.observation_at(max(stamps)) if stamps else None

    @staticmethod
    def _finish(builder: EpisodeBuilder, final: Observation | None, success: bool) -> Episode:
        if final is None:
            raise ContractError("recorder: no final observation available")
        return finish_labelled(builder, final, success)

    def discard(self) -> str:
        self.stop(save=False)
        return self.message

    def handle_key(self, key: str) -> str | None:
        actions = {"s": self.start, "e": lambda: str(self.stop()), "y": lambda: self.mark_success(True),
                   "n": lambda: self.mark_success(False), "d": self.discard}
        action = actions.get(key.lower())
        return action() if action else None

    def status(self) -> RecorderStatus:
        return RecorderStatus(recording=self.recording, steps=self.steps if self.builder else 0,
                              success=self.success, episodes_written=self.episodes_written,
                              last_path=str(self.last_path or ""), message=self.message)

    def _say(self, message: str) -> str:
        self.message = message
        self.log(message)
        return message


# ------------------------------------------------------------------------------------------------------ rosbag
def export_rosbag(episode: Episode, path: str | Path, config: RecorderConfig | None = None) -> Path:
    """Write an episode as rosbag2 (MCAP): one sensor_msgs/Image topic per camera, the robot state and the action
    as sensor_msgs/JointState (irevla's conventions), stamped with the episode's observation times."""
    try:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:
        raise RuntimeError(f"rosbag export needs `rosbags` (pip install rosbags; the 'robot' extra): {exc}") from None
    config = config or RecorderConfig()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, JointState = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/JointState"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    topics = config.cameras.topic_of()
    times = episode.timestamps if episode.timestamps is not None else np.arange(episode.n_steps + 1) * 0.1

    def header(seconds: float, frame: str = "") -> Any:
        nanoseconds = int(round(seconds * 1e9))
        return Header(stamp=Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9), frame_id=frame)

    def joint_state(seconds: float, names, values, frame: str = "") -> Any:
        empty = np.zeros(0, np.float64)
        return JointState(header=header(seconds, frame), name=list(names),
                          position=np.asarray(values, np.float64), velocity=empty, effort=empty)

    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        image_connections = {camera: writer.add_connection(topics.get(camera, f"/camera/{camera}/color/image_raw"),
                                                           Image.__msgtype__, typestore=store)
                             for camera in episode.cameras}
        state_connection = writer.add_connection(config.topics.robot_state, JointState.__msgtype__, typestore=store)
        action_connection = writer.add_connection(config.topics.action, JointState.__msgtype__, typestore=store)
        for t in range(episode.n_steps + 1):
            seconds = float(times[t])
            nanoseconds = int(round(seconds * 1e9))
            for camera, connection in image_connections.items():
                frame = episode.images[camera][t]
                message = Image(header=header(seconds, f"{camera}_color_optical_frame"), height=frame.shape[0],
                                width=frame.shape[1], encoding="rgb8", is_bigendian=0, step=frame.shape[1] * 3,
                                data=np.ascontiguousarray(frame).reshape(-1))
                writer.write(connection, nanoseconds, store.serialize_cdr(message, Image.__msgtype__))
            state = joint_state(seconds, episode.task.observation_spec.proprio_names, episode.proprio[t])
            writer.write(state_connection, nanoseconds, store.serialize_cdr(state, JointState.__msgtype__))
            if t < episode.n_steps:
                action = joint_state(seconds, episode.task.action_spec.names, episode.actions[t],
                                     episode.task.action_spec.frame)
                writer.write(action_connection, nanoseconds, store.serialize_cdr(action, JointState.__msgtype__))
    return path
