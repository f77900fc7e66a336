"""LeRobotDataset v3.0 both ways: ``irevla data export --format lerobot`` and ``irevla data import lerobot``.

The format is LeRobot's (codebase_version ``v3.0``, what the model hub's robot datasets and SmolVLA / pi0 fine-tuning
use); this module writes and reads it with pyarrow and PyAV only, so irevla's environment never needs the `lerobot`
package (which pins another torch and needs torchvision). The tests check the result with the real `lerobot` in its
own environment (docs/data.md says how).

Mapping (irevla episode of T steps <-> T+1 LeRobot frames)
-----------------------------------------------------------
=============================  ==========================================================================
LeRobot feature                irevla
=============================  ==========================================================================
observation.images.<camera>    ``images[camera]``, video (AV1 in MP4 by default, one file per episode)
observation.state              ``proprio`` (names = ``task.observation_spec.proprio_names``)
action                         ``actions``; frame T (the final observation) repeats action T-1
                               (the robot holds), and ``next.done`` marks it
next.reward                    ``rewards`` (0 on frame T)
next.done                      True on frame T only
next.success                   True on frame T of a successful episode
irevla.intervention            ``interventions`` (only when an exported episode has them)
irevla.timestamp               ``timestamps``, float64 seconds (only when every exported episode has them)
task (tasks.parquet)           ``instruction``
=============================  ==========================================================================

``timestamp`` is ``frame_index / fps`` as LeRobot requires; fps is the tasks' ``control_hz``. Everything else irevla
knows about an episode (its TaskSpec, source, round, creation time, success, metadata) travels in ``irevla/*``
columns of meta/episodes, so irevla -> LeRobot -> irevla keeps actions, proprio, rewards and flags bit-exact and
images within the video codec's tolerance (the export reports the PSNR it measured by decoding its own videos).

Import maps the features above; a dataset made elsewhere gets a TaskSpec built from info.json (action bounds from
the action statistics, fps as the control rate). A feature irevla cannot map is an error naming the feature, unless
``--ignore FEATURE`` says to drop it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irevla.errors import UserError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
IMAGE_PREFIX = "observation.images."
STATE, ACTION = "observation.state", "action"
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
CODECS = {"av1": "libsvtav1", "h264": "libx264"}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)

EXPORT_DESCRIPTION = """\
Write irevla episodes as a LeRobotDataset v3.0 (parquet + one video per camera and episode) that LeRobot loads with
LeRobotDataset(repo_id, root=OUT). The final observation of each episode becomes a last frame that repeats the last
action, marked by next.done; irevla's own fields travel in meta/episodes so `irevla data import lerobot` gets the
episodes back. All episodes must share cameras, image sizes, proprio and action layout and control rate.
OUT must not exist; it appears only when complete."""
EXPORT_EPILOG = """\
examples:
  irevla data export --format lerobot data/expert out/expert_lerobot
  irevla data export --format lerobot data/expert data/rl --task button-press-v3 --success out/pos_lerobot
  python -c "from lerobot.datasets.lerobot_dataset import LeRobotDataset as D; print(D('local/x', root='out/expert_lerobot'))"
"""
IMPORT_DESCRIPTION = """\
Turn a LeRobotDataset v3.0 directory (downloaded by you, e.g. `hf download --repo-type dataset ORG/NAME --local-dir
DIR`; irevla never downloads) into irevla episode files: N frames become an episode of N-1 steps (the last frame's
action is dropped, its observation is the final one). Each episode is written atomically."""
IMPORT_EPILOG = """\
examples:
  irevla data import lerobot out/expert_lerobot data/back            # irevla's own export: everything comes back
  irevla data import lerobot ~/datasets/svla_so101_pickplace data/so101 --task-name pickplace
  irevla data import lerobot ~/datasets/aloha_sim data/aloha --ignore observation.effort   # drop what irevla cannot map
  irevla sft --data data/so101 --out runs/so101_sft                  # stage 0 on the imported episodes
"""


class LeRobotFormatError(UserError, ValueError):
    """A LeRobot dataset (or an export request) irevla cannot handle; the message names the file and the feature."""


# ------------------------------------------------------------------------------------------------------ arguments
def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=("lerobot",), help="output format (lerobot: v3.0)")
    parser.add_argument("paths", nargs="+", metavar="DIR", help="episode directories, then OUT (the new dataset)")
    parser.add_argument("--task", action="append", help="only these tasks (name or family/name; repeatable)")
    parser.add_argument("--success", action="store_true", help="only successful episodes")
    parser.add_argument("--source", action="append", help="only these sources (script, teleop, rl, intervention)")
    parser.add_argument("--codec", default="av1", choices=tuple(CODECS),
                        help="video codec: av1 (LeRobot's default; libsvtav1) or h264 (default av1)")
    parser.add_argument("--crf", type=int, default=30, help="video quality, lower is better (LeRobot: 30)")
    parser.add_argument("--robot-type", help="info.json robot_type (default: the tasks' family)")


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="LeRobotDataset v3.0 directory (with meta/info.json)")
    parser.add_argument("out", metavar="OUT", help="episode directory to write into (created if missing)")
    parser.add_argument("--task-name", help="TaskSpec name for a dataset not made by irevla (default: PATH's name)")
    parser.add_argument("--source", default="teleop", choices=("script", "teleop", "rl", "intervention"),
                        help="episode source for a dataset not made by irevla (default teleop)")
    parser.add_argument("--ignore", action="append", default=[], metavar="FEATURE",
                        help="drop this feature instead of failing on it (repeatable)")
    parser.add_argument("--episodes", type=int, nargs="+", metavar="INDEX", help="only these episode indices")
    parser.add_argument("--no-assume-success", action="store_true",
                        help="without a next.success feature, mark episodes failed (default: successful, "
                             "as demonstrations are)")


# ----------------------------------------------------------------------------------------------------- statistics
def _stats(values: np.ndarray) -> dict[str, Any]:
    """LeRobot's per-feature statistics over axis 0 (min, max, mean, std, count, q01 ... q99)."""
    values = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
                           "count": np.asarray([values.shape[0]])}
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = np.quantile(values, q, axis=0)
    return {k: np.asarray(v).tolist() for k, v in out.items()}


class ImageStats:
    """Per-channel statistics of uint8 RGB frames, exact and in constant memory: a 256-bin histogram per channel
    gives min, max, mean, std and every quantile of the values (scaled to [0, 1], shaped (3, 1, 1) as LeRobot has
    them); `count` is the number of frames, as LeRobot counts."""

    def __init__(self) -> None:
        self.histogram = np.zeros((3, 256), np.int64)
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        for channel in range(3):
            self.histogram[channel] += np.bincount(frames[..., channel].reshape(-1), minlength=256)
        self.frames += int(frames.shape[0])

    def result(self) -> dict[str, Any]:
        levels = np.arange(256, dtype=np.float64) / 255.0
        out: dict[str, list] = {k: [] for k in ("min", "max", "mean", "std", *(f"q{int(round(q * 100)):02d}"
                                                                                for q in QUANTILES))}
        for counts in self.histogram:
            present = np.flatnonzero(counts)
            total = counts.sum()
            mean = float((counts * levels).sum() / total)
            cumulative = np.cumsum(counts) / total
            out["min"].append(levels[present[0]])
            out["max"].append(levels[present[-1]])
            out["mean"].append(mean)
            out["std"].append(float(np.sqrt((counts * (levels - mean) ** 2).sum() / total)))
            for q in QUANTILES:  # the lower value at the quantile's rank (numpy's 'inverted_cdf')
                out[f"q{int(round(q * 100)):02d}"].append(levels[int(np.searchsorted(cumulative, q))])
        return {k: [[[float(x)]] for x in v] for k, v in out.items()} | {"count": [self.frames]}


# --------------------------------------------------------------------------------------------------------- video
def _quiet_encoder() -> None:
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration per file otherwise


def encode_video(frames: np.ndarray, path: Path, fps: float, codec: str = "av1", crf: int = 30) -> None:
    """Encode uint8 (N, H, W, 3) RGB frames as yuv420p video, frame i at pts i / fps (LeRobot's timestamps).

    The encoder runs in a thread of its own. SVT-AV1 (libsvtav1, LeRobot's codec), when the process runs as root (a
    container, CI, many robot PCs), switches the thread that opens it to SCHED_FIFO at real-time priority, and every
    thread and process started from that thread afterwards inherits it: a later busy loop then starves the whole
    machine (the test suite once hung for an hour that way, its own timeouts never scheduled). Opened from a
    short-lived thread, the switch dies with that thread and the caller keeps its scheduling.
    """
    height, width = frames.shape[1:3]
    if codec not in CODECS:
        raise LeRobotFormatError(f"codec {codec!r}: expected one of {sorted(CODECS)}")
    if height % 2 or width % 2:
        raise LeRobotFormatError(f"{path}: yuv420p video needs even image sizes, got {height}x{width}")
    failure: list[BaseException] = []

    def encode() -> None:
        try:
            _encode(frames, path, fps, codec, crf)
        except BaseException as error:  # re-raised in the caller's thread
            failure.append(error)

    worker = threading.Thread(target=encode, name=f"encode {path.name}")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def _encode(frames: np.ndarray, path: Path, fps: float, codec: str, crf: int) -> None:
    import av

    _quiet_encoder()
    height, width = frames.shape[1:3]
    rate = _fps_fraction(fps)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(CODECS[codec], rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = 1 / rate
        stream.options = {"crf": str(crf), "g": "2", **({"preset": "12"} if codec == "av1" else {})}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_video(path: Path, start_s: float, n_frames: int, fps: float, where: str) -> np.ndarray:
    """Frames [start_s, start_s + n_frames / fps) of a video as uint8 (n_frames, H, W, 3) RGB."""
    import av

    if not path.is_file():
        raise LeRobotFormatError(f"{where}: video file {path} is missing")
    frames: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if start_s > 0 and stream.time_base:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                index = int(round((frame.time - start_s) * fps))
                if index >= n_frames:
                    break
                if index >= 0:
                    frames[index] = frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise LeRobotFormatError(f"{where}: cannot decode {path}: {exc}") from None
    missing = [i for i in range(n_frames) if i not in frames]
    if missing:
        raise LeRobotFormatError(f"{where}: {path} lacks {len(missing)} of the episode's {n_frames} frames "
                                 f"(first missing: frame {missing[0]} at {start_s + missing[0] / fps:.3f} s)")
    return np.stack([frames[i] for i in range(n_frames)])


def _fps_fraction(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


# -------------------------------------------------------------------------------------------------------- export
@dataclass
class ExportReport:
    out: Path
    episodes: int = 0
    frames: int = 0
    fps: float = 0.0
    cameras: tuple[str, ...] = ()
    tasks: list[str] = field(default_factory=list)
    psnr_db: dict[str, float] = field(default_factory=dict)
    skipped_depth: int = 0

    def format(self) -> str:
        lines = [f"LeRobotDataset v3.0 written to {self.out}: {self.episodes} episode(s), {self.frames} frames at "
                 f"{self.fps:g} fps, cameras {', '.join(self.cameras)}, {len(self.tasks)} task(s)"]
        for camera, value in self.psnr_db.items():
            lines.append(f"  video {IMAGE_PREFIX}{camera}: PSNR {value:.1f} dB against the episodes' frames")
        if self.skipped_depth:
            lines.append(f"  note: depth of {self.skipped_depth} episode(s) not exported (LeRobot v3 has no lossless "
                         f"uint16 video stream)")
        return "\n".join(lines)


def _features(template, fps: float, with_interventions: bool, with_timestamps: bool, codec: str) -> dict:
    task = template.task
    features: dict[str, Any] = {}
    for camera, (height, width) in task.observation_spec.cameras.items():
        features[IMAGE_PREFIX + camera] = {
            "dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": height, "video.width": width, "video.codec": codec, "video.pix_fmt": "yuv420p",
                     "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}}
    features[STATE] = {"dtype": "float32", "shape": [len(task.observation_spec.proprio_names)],
                       "names": list(task.observation_spec.proprio_names)}
    features[ACTION] = {"dtype": "float32", "shape": [task.action_spec.dim], "names": list(task.action_spec.names)}
    features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    features["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
    if with_interventions:
        features["irevla.intervention"] = {"dtype": "bool", "shape": [1], "names": None}
    if with_timestamps:
        features["irevla.timestamp"] = {"dtype": "float64", "shape": [1], "names": None}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        features[name] = {"dtype": "int64", "shape": [1], "names": None}
    return features


def _hf_metadata(features: dict) -> bytes:
    """The `huggingface` schema metadata `datasets` writes, so LeRobot's loader sees the same feature types."""
    hf = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["shape"] == [1] and key not in (STATE, ACTION):
            hf[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            hf[key] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": ft["shape"][0], "_type": "List"}
    return json.dumps({"info": {"features": hf}}).encode()


def _frames_table(episode, features: dict, episode_index: int, first_index: int, task_index: int, fps: float):
    import pyarrow as pa

    n_frames = episode.n_steps + 1
    actions = np.concatenate([episode.actions, episode.actions[-1:]])
    done = np.zeros(n_frames, bool)
    done[-1] = True
    columns: dict[str, Any] = {
        STATE: pa.FixedSizeListArray.from_arrays(pa.array(episode.proprio.reshape(-1), pa.float32()),
                                                 episode.proprio.shape[1]),
        ACTION: pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1), pa.float32()), actions.shape[1]),
        "next.reward": pa.array(np.concatenate([episode.rewards, [0.0]]).astype(np.float32)),
        "next.done": pa.array(done),
        "next.success": pa.array(done & episode.success),
    }
    if "irevla.intervention" in features:
        flags = episode.interventions if episode.interventions is not None else np.zeros(episode.n_steps, bool)
        columns["irevla.intervention"] = pa.array(np.concatenate([flags, [False]]))
    if "irevla.timestamp" in features:
        columns["irevla.timestamp"] = pa.array(episode.timestamps.astype(np.float64))
    frame_index = np.arange(n_frames, dtype=np.int64)
    columns["timestamp"] = pa.array((frame_index / fps).astype(np.float32))
    columns["frame_index"] = pa.array(frame_index)
    columns["episode_index"] = pa.array(np.full(n_frames, episode_index, np.int64))
    columns["index"] = pa.array(first_index + frame_index)
    columns["task_index"] = pa.array(np.full(n_frames, task_index, np.int64))
    return pa.table(columns)


def _select(paths: Sequence[str], tasks: list[str] | None, success: bool, sources: list[str] | None) -> list[Path]:
    """The episode files to export. An unreadable file stops the export (naming it): a dataset that silently lacks
    episodes is worse than an error; `irevla data check` lists every bad file."""
    from irevla.data.episode_file import list_episode_files, read_info
    from irevla.data.store import EpisodeCollection

    for path in paths:
        if not Path(path).is_dir():
            raise LeRobotFormatError(f"{path}: not a directory of irevla episodes")
    for path in paths:
        for file in list_episode_files(path):
            read_info(file)  # EpisodeFormatError naming the file
    collection = EpisodeCollection(list(paths))
    infos = collection.index(source=sources, success=True if success else None)
    if tasks:
        infos = [i for i in infos if i.task.name in tasks or f"{i.task.family}/{i.task.name}" in tasks]
    if not infos:
        raise LeRobotFormatError(f"no episodes to export in {', '.join(map(str, paths))} with the given filters")
    return [info.path for info in infos]


def export_lerobot(dirs: Sequence[str | Path], out: str | Path, *, tasks: list[str] | None = None,
                   success: bool = False, sources: list[str] | None = None, codec: str = "av1", crf: int = 30,
                   robot_type: str | None = None, progress: bool = True) -> ExportReport:
    """Write the selected episodes of `dirs` as a LeRobotDataset v3.0 at `out` (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from irevla.data.episode_file import read_episode, read_info, read_lowdim

    out = Path(out)
    if out.exists():
        raise LeRobotFormatError(f"{out} exists; choose a new output directory (nothing was written)")
    paths = _select([str(d) for d in dirs], tasks, success, sources)
    infos = [read_info(p) for p in paths]
    # One layout and one rate for the whole dataset: LeRobot has one feature set and one fps.
    _check_uniform(paths, infos)
    first = read_episode(paths[0])
    fps = float(first.task.control_hz)
    with_timestamps = True
    with_interventions = False
    for path in paths:  # low-dim only: cheap
        _, arrays = read_lowdim(path)
        with_timestamps &= "timestamps" in arrays
        with_interventions |= "interventions" in arrays
    features = _features(first, fps, with_interventions, with_timestamps, codec)

    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    report = ExportReport(out=out, fps=fps, cameras=tuple(first.task.observation_spec.cameras))
    task_index: dict[str, int] = {}
    episode_rows: list[dict[str, Any]] = []
    state_values, action_values, scalar_values = [], [], {k: [] for k in ("next.reward", "timestamp", "frame_index",
                                                                         "episode_index", "index", "task_index")}
    image_stats = {c: ImageStats() for c in report.cameras}
    squared_error: dict[str, list[float]] = {c: [0.0, 0] for c in report.cameras}
    try:
        (staging / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        data_file = staging / DATA_PATH.format(chunk_index=0, file_index=0)
        data_file.parent.mkdir(parents=True)
        schema = None
        writer = None
        frame_count = 0
        for episode_index, path in enumerate(tqdm(paths, desc="export lerobot", unit="ep", disable=not progress,
                                                  file=sys.stderr)):
            episode = read_episode(path)
            if episode.depth:
                report.skipped_depth += 1
            index = task_index.setdefault(episode.instruction, len(task_index))
            table = _frames_table(episode, features, episode_index, frame_count, index, fps)
            if writer is None:
                schema = table.schema.with_metadata({b"huggingface": _hf_metadata(features)})
                writer = pq.ParquetWriter(str(data_file), schema)
            writer.write_table(table.cast(schema))
            n_frames = episode.n_steps + 1
            row: dict[str, Any] = {
                "episode_index": episode_index, "tasks": [episode.instruction], "length": n_frames,
                "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": frame_count,
                "dataset_to_index": frame_count + n_frames}
            chunk, file_index = divmod(episode_index, CHUNKS_SIZE)
            for camera in report.cameras:
                key = IMAGE_PREFIX + camera
                video = staging / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file_index)
                video.parent.mkdir(parents=True, exist_ok=True)
                frames = episode.images[camera]
                encode_video(frames, video, fps, codec, crf)
                decoded = decode_video(video, 0.0, n_frames, fps, f"export of {path.name}")
                error = squared_error[camera]
                error[0] += float(np.sum((decoded.astype(np.float64) - frames) ** 2))
                error[1] += frames.size
                row.update({f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file_index,
                            f"videos/{key}/from_timestamp": 0.0, f"videos/{key}/to_timestamp": n_frames / fps})
                image_stats[camera].add(frames)
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                        "irevla/task_json": episode.task.to_json(), "irevla/source": episode.source,
                        "irevla/round": episode.round, "irevla/created": episode.created,
                        "irevla/success": episode.success,
                        "irevla/has_interventions": episode.interventions is not None,
                        "irevla/metadata_json": json.dumps(episode.metadata, sort_keys=True),
                        "irevla/file": path.name})
            episode_rows.append(row)
            state_values.append(episode.proprio)
            action_values.append(np.concatenate([episode.actions, episode.actions[-1:]]))
            for key in scalar_values:
                scalar_values[key].append(table.column(key).to_numpy())
            frame_count += n_frames
        writer.close()

        pq.write_table(pa.Table.from_pylist(episode_rows), str(staging / EPISODES_PATH))
        _write_tasks(staging / "meta" / "tasks.parquet", list(task_index))
        stats = {STATE: _stats(np.concatenate(state_values)), ACTION: _stats(np.concatenate(action_values))}
        for key, parts in scalar_values.items():
            stats[key] = _stats(np.concatenate(parts)[:, None])
        for camera, accumulated in image_stats.items():
            stats[IMAGE_PREFIX + camera] = accumulated.result()
        (staging / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": robot_type or first.task.family,
            "total_episodes": len(paths), "total_frames": frame_count, "total_tasks": len(task_index),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
            "fps": int(fps) if fps.is_integer() else fps,
            "splits": {"train": f"0:{len(paths)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "features": features,
            "irevla": {"exported_by": _irevla_version(), "episodes": len(paths)}}
        (staging / "meta" / "info.json").write_text(json.dumps(info, indent=4))
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.episodes, report.frames, report.tasks = len(paths), frame_count, list(task_index)
    report.psnr_db = {c: (math.inf if e[0] == 0 else 10 * math.log10(255.0**2 / (e[0] / e[1])))
                      for c, e in squared_error.items()}
    return report


def _irevla_version() -> str:
    import irevla

    return f"irevla {irevla.__version__}"


def _check_uniform(paths: list[Path], infos: list) -> None:
    first = infos[0].task
    for camera, (height, width) in first.observation_spec.cameras.items():
        if height % 2 or width % 2:
            raise LeRobotFormatError(f"{paths[0]}: camera {camera!r} is {height}x{width}; LeRobot's yuv420p video "
                                     f"needs even image sizes")
    for path, info in zip(paths, infos):
        task = info.task
        for what, a, b in (("cameras and image sizes", task.observation_spec.cameras, first.observation_spec.cameras),
                           ("proprio_names", task.observation_spec.proprio_names, first.observation_spec.proprio_names),
                           ("action names", task.action_spec.names, first.action_spec.names),
                           ("control_hz (fps)", task.control_hz, first.control_hz)):
            if a != b:
                raise LeRobotFormatError(
                    f"{path}: {what} {a} differ from {paths[0].name}'s {b}; a LeRobot dataset has one feature set "
                    f"and one fps: export them separately (--task)")


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as pandas writes it (task strings as the index, column task_index): LeRobot reads it with
    pandas; irevla has no pandas, so the pandas metadata is written here."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                     "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks, pa.large_string())})
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), str(path))


def run_export(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise LeRobotFormatError("export needs at least one episode directory and OUT: "
                                 "irevla data export --format lerobot DIR [DIR ...] OUT")
    *dirs, out = args.paths
    report = export_lerobot(dirs, out, tasks=args.task, success=args.success, sources=args.source, codec=args.codec,
                            crf=args.crf, robot_type=args.robot_type)
    print(report.format())
    return 0


# -------------------------------------------------------------------------------------------------------- import
@dataclass
class ImportReport:
    source: Path
    out: Path
    written: list[Path] = field(default_factory=list)
    frames: int = 0
    ignored: list[str] = field(default_factory=list)
    success_from: str = ""

    def format(self) -> str:
        lines = [f"{len(self.written)} episode(s) ({self.frames} frames) imported from {self.source} into {self.out}",
                 f"  success: {self.success_from}"]
        if self.ignored:
            lines.append(f"  ignored features: {', '.join(self.ignored)}")
        return "\n".join(lines)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing; is {path.parent.parent} a LeRobotDataset v3.0 directory?")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise LeRobotFormatError(f"{path}: not valid JSON: {exc}") from None


def _read_table(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise LeRobotFormatError(f"{path}: not a readable parquet file: {exc}") from None


def _tasks(root: Path) -> dict[int, str]:
    table = _read_table(root / "meta" / "tasks.parquet")
    names = table.column_names
    text_column = "task" if "task" in names else "__index_level_0__" if "__index_level_0__" in names else None
    if text_column is None or "task_index" not in names:
        raise LeRobotFormatError(f"{root / 'meta' / 'tasks.parquet'}: expected columns task_index and the task "
                                 f"strings (column 'task' or the pandas index), got {names}")
    return dict(zip(table.column("task_index").to_pylist(), table.column(text_column).to_pylist()))


def _episodes_meta(root: Path) -> list[dict[str, Any]]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root / 'meta' / 'episodes'}: no episode metadata (chunk-*/file-*.parquet)")
    rows = []
    for file in files:
        table = _read_table(file)
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        rows.extend(table.select(keep).to_pylist())
    return sorted(rows, key=lambda r: r["episode_index"])


def _plan_features(info: dict, info_path: Path, ignore: list[str]) -> tuple[list[str], list[str]]:
    """Cameras and the ignored features; any feature irevla cannot map (and not ignored) is an error naming it."""
    features = info.get("features")
    if not isinstance(features, dict):
        raise LeRobotFormatError(f"{info_path}: field 'features' missing or not an object")
    known = {STATE, ACTION, "next.reward", "next.done", "next.success", "irevla.intervention", "irevla.timestamp",
             *BOOKKEEPING}
    cameras, ignored = [], []
    for key, ft in features.items():
        if key in ignore:
            ignored.append(key)
            continue
        if key.startswith(IMAGE_PREFIX):
            if ft.get("dtype") not in ("video", "image"):
                raise LeRobotFormatError(f"{info_path}: feature {key!r} has dtype {ft.get('dtype')!r}; irevla maps "
                                         f"camera features stored as 'video' or 'image'")
            if ft.get("info", {}).get("video.is_depth_map"):
                raise LeRobotFormatError(f"{info_path}: feature {key!r} is a depth map; irevla imports RGB cameras "
                                         f"(--ignore {key} to drop it)")
            cameras.append(key[len(IMAGE_PREFIX):])
        elif key not in known:
            raise LeRobotFormatError(
                f"{info_path}: feature {key!r} (dtype {ft.get('dtype')}, shape {ft.get('shape')}) has no place in an "
                f"irevla episode (it maps observation.images.*, observation.state, action, next.reward, next.done, "
                f"next.success); pass --ignore {key} to drop it")
    for required in (STATE, ACTION):
        if required not in features or required in ignore:
            raise LeRobotFormatError(f"{info_path}: feature {required!r} is required (irevla needs proprio and "
                                     f"actions), the dataset has {sorted(features)}")
    if not cameras:
        raise LeRobotFormatError(f"{info_path}: no camera feature (observation.images.*): irevla episodes need "
                                 f"at least one camera")
    return cameras, ignored


def _image_hw(ft: dict, key: str, info_path: Path) -> tuple[int, int]:
    shape, names = list(ft.get("shape", [])), ft.get("names") or []
    if len(shape) != 3:
        raise LeRobotFormatError(f"{info_path}: feature {key!r} has shape {shape}, expected (H, W, 3) or (3, H, W)")
    if list(names)[:1] in (["channels"], ["channel"]) or (shape[0] == 3 and shape[2] != 3):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _task_spec(info: dict, root: Path, stats: dict | None, instruction: str, cameras: dict, name: str,
               max_steps: int):
    from irevla.spec import ActionSpec, ObservationSpec, TaskSpec

    features = info["features"]
    action_ft, state_ft = features[ACTION], features[STATE]
    action_dim, state_dim = int(action_ft["shape"][0]), int(state_ft["shape"][0])

    def names_of(ft: dict, n: int, prefix: str) -> tuple[str, ...]:
        names = ft.get("names")
        if isinstance(names, dict):  # older LeRobot: {"motors": [...]}
            names = next(iter(names.values()), None)
        if isinstance(names, list) and len(names) == n and all(isinstance(x, str) for x in names):
            return tuple(names)
        return tuple(f"{prefix}_{i}" for i in range(n))

    low, high = np.full(action_dim, -1.0), np.full(action_dim, 1.0)
    if stats and ACTION in stats:
        low = np.asarray(stats[ACTION]["min"], float).reshape(-1)
        high = np.asarray(stats[ACTION]["max"], float).reshape(-1)
        span = np.maximum(high - low, 1e-6)
        low, high = low - 0.05 * span, high + 0.05 * span  # a margin: bounds from data, not from the robot
    return TaskSpec(name=name, family="lerobot", instruction=instruction or name,
                    action_spec=ActionSpec(names=names_of(action_ft, action_dim, "action"), low=tuple(low),
                                           high=tuple(high), frame="base"),
                    observation_spec=ObservationSpec(cameras, names_of(state_ft, state_dim, "state")),
                    max_episode_steps=max(1, max_steps), control_hz=float(info["fps"]),
                    extra={"lerobot": {"dataset": root.name, "robot_type": info.get("robot_type")}})


def import_lerobot(path: str | Path, out: str | Path, *, task_name: str | None = None, source: str = "teleop",
                   ignore: Sequence[str] = (), episodes: Sequence[int] | None = None, assume_success: bool = True,
                   progress: bool = True) -> ImportReport:
    """Write every episode of the LeRobotDataset v3.0 at `path` as an irevla episode file into `out`: all of them,
    or, on an error, none (they are staged beside `out` and moved in at the end)."""
    from irevla.atomic_io import commit_file
    from irevla.data.store import EpisodeStore

    root = Path(path)
    if not root.is_dir():
        raise LeRobotFormatError(f"{root}: not a directory (a LeRobotDataset v3.0 has meta/info.json)")
    info_path = root / "meta" / "info.json"
    info = _read_json(info_path)
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        hint = (" (convert it with LeRobot's `python -m lerobot.datasets.v30.convert_dataset_v21_to_v30`)"
                if isinstance(version, str) and version.startswith("v2") else "")
        raise LeRobotFormatError(f"{info_path}: field 'codebase_version' is {version!r}, irevla reads "
                                 f"{CODEBASE_VERSION!r}{hint}")
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise LeRobotFormatError(f"{info_path}: field {key!r} is missing")
    cameras, ignored = _plan_features(info, info_path, list(ignore))
    features = info["features"]
    camera_sizes = {c: _image_hw(features[IMAGE_PREFIX + c], IMAGE_PREFIX + c, info_path) for c in cameras}
    fps = float(info["fps"])
    tasks = _tasks(root)
    rows = _episodes_meta(root)
    if episodes is not None:
        wanted = set(episodes)
        missing = wanted - {r["episode_index"] for r in rows}
        if missing:
            raise LeRobotFormatError(f"{root}: no episode(s) {sorted(missing)} (it has {len(rows)})")
        rows = [r for r in rows if r["episode_index"] in wanted]
    stats_path = root / "meta" / "stats.json"
    stats = _read_json(stats_path) if stats_path.is_file() else None
    has_success = "next.success" in features and "next.success" not in ignored
    report = ImportReport(source=root, out=Path(out), ignored=ignored,
                          success_from="irevla's own" if rows and "irevla/success" in rows[0] else
                          "next.success" if has_success else
                          ("assumed successful (no next.success; --no-assume-success to mark them failed)"
                           if assume_success else "marked failed (no next.success)"))
    out = Path(out)
    # Everything is written into a hidden directory beside OUT and moved in at the end: a dataset that fails at its
    # tenth episode leaves OUT as it was (a rerun after the fix does not duplicate the first nine).
    staging = out.parent / f".{out.name}.import-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        report.written = _import_rows(rows, root, info, features, cameras, camera_sizes, fps, tasks, stats, ignored,
                                      has_success, assume_success, task_name, source, EpisodeStore(staging),
                                      progress, report)
        out.mkdir(parents=True, exist_ok=True)
        report.written = [commit_file(path, out / path.name) for path in report.written]  # fsync'd renames
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _import_rows(rows, root, info, features, cameras, camera_sizes, fps, tasks, stats, ignored, has_success,
                 assume_success, task_name, source, store, progress, report) -> list[Path]:
    from tqdm import tqdm

    from irevla.data.episode import Episode, utc_now_iso
    from irevla.spec import ContractError, TaskSpec

    written = []
    data_key, table = None, None
    for row in tqdm(rows, desc="import lerobot", unit="ep", disable=not progress, file=sys.stderr):
        where = f"{root} episode {row['episode_index']}"
        key = (int(row.get("data/chunk_index", 0)), int(row.get("data/file_index", 0)))
        if key != data_key:  # rows are sorted by episode: one data file at a time in memory
            data_key, table = key, _read_table(root / info["data_path"].format(chunk_index=key[0],
                                                                               file_index=key[1]))
        frames = _episode_frames(table, row, where)
        n_frames = frames.num_rows
        if n_frames < 2:
            raise LeRobotFormatError(f"{where}: {n_frames} frame(s); an irevla episode needs at least 2 "
                                     f"(one step and the final observation)")
        task_indices = set(frames.column("task_index").to_pylist()) if "task_index" in frames.column_names else set()
        if len(task_indices) > 1:
            raise LeRobotFormatError(f"{where}: frames carry {len(task_indices)} tasks {sorted(task_indices)}; an "
                                     f"irevla episode has one instruction")
        instruction = tasks.get(next(iter(task_indices)), "") if task_indices else (row.get("tasks") or [""])[0]
        images = {}
        for camera in cameras:
            ft = features[IMAGE_PREFIX + camera]
            if ft["dtype"] == "video":
                images[camera] = _episode_video(root, info, row, IMAGE_PREFIX + camera, n_frames, fps, where)
            else:
                images[camera] = _episode_images(frames, IMAGE_PREFIX + camera, where)
            if images[camera].shape[1:3] != camera_sizes[camera]:
                raise LeRobotFormatError(f"{where}: {IMAGE_PREFIX + camera} frames are "
                                         f"{images[camera].shape[1]}x{images[camera].shape[2]}, info.json says "
                                         f"{camera_sizes[camera][0]}x{camera_sizes[camera][1]}")
        proprio = _vectors(frames, STATE, where)
        actions = _vectors(frames, ACTION, where)[:-1]
        rewards = (_scalars(frames, "next.reward", where).astype(np.float32)[:-1] if "next.reward" in features
                   and "next.reward" not in ignored else np.zeros(n_frames - 1, np.float32))
        if "irevla/task_json" in row:
            task = TaskSpec.from_json(row["irevla/task_json"])
            success, ep_source, round_ = bool(row["irevla/success"]), row["irevla/source"], int(row["irevla/round"])
            created, metadata = row["irevla/created"], json.loads(row["irevla/metadata_json"])
        else:
            task = _task_spec(info, root, stats, instruction, camera_sizes, task_name or root.name,
                              max(int(r["length"]) - 1 for r in rows))
            success = (bool(_scalars(frames, "next.success", where).any()) if has_success else assume_success)
            ep_source, round_ = source, 0
            created = utc_now_iso()
            metadata = {"lerobot": {"dataset": root.name, "episode_index": int(row["episode_index"]),
                                    "robot_type": info.get("robot_type")}}
        timestamps = (_scalars(frames, "irevla.timestamp", where).astype(np.float64)
                      if "irevla.timestamp" in features and "irevla.timestamp" not in ignored else
                      _scalars(frames, "timestamp", where).astype(np.float64) if "timestamp" in features else None)
        interventions = (_scalars(frames, "irevla.intervention", where).astype(bool)[:-1]
                         if "irevla.intervention" in features and "irevla.intervention" not in ignored else None)
        if "irevla/has_interventions" in row and not row["irevla/has_interventions"]:
            interventions = None  # the exported episode had none; the column exists for its neighbours
        try:
            episode = Episode(images=images, proprio=proprio, actions=actions, rewards=rewards, success=success,
                              instruction=instruction, task=task, source=ep_source, round=round_, created=created,
                              timestamps=timestamps, interventions=interventions, metadata=metadata)
        except ContractError as exc:
            raise LeRobotFormatError(f"{where}: {exc}") from None
        written.append(store.write(episode))
        report.frames += n_frames
    return written


def _episode_frames(table, row: dict, where: str):
    start, stop = int(row["dataset_from_index"]), int(row["dataset_to_index"])
    index = table.column("index").to_numpy() if "index" in table.column_names else None
    if index is None:
        raise LeRobotFormatError(f"{where}: the data file has no 'index' column")
    lo, hi = np.searchsorted(index, start), np.searchsorted(index, stop)
    frames = table.slice(lo, hi - lo)
    if frames.num_rows != stop - start:
        raise LeRobotFormatError(f"{where}: meta/episodes says frames {start}..{stop - 1}, the data file has "
                                 f"{frames.num_rows} of them")
    return frames


def _vectors(frames, key: str, where: str) -> np.ndarray:
    column = frames.column(key)
    try:
        values = np.asarray(column.to_pylist(), dtype=np.float32)
    except ValueError as exc:
        raise LeRobotFormatError(f"{where}: feature {key!r} is not a fixed-length numeric vector: {exc}") from None
    if values.ndim == 1:
        values = values[:, None]
    if not np.all(np.isfinite(values)):
        raise LeRobotFormatError(f"{where}: feature {key!r} has NaN/inf values")
    return values


def _scalars(frames, key: str, where: str) -> np.ndarray:
    values = np.asarray(frames.column(key).to_pylist())
    return values.reshape(values.shape[0], -1)[:, 0]


def _episode_video(root: Path, info: dict, row: dict, key: str, n_frames: int, fps: float, where: str) -> np.ndarray:
    try:
        chunk, file_index = int(row[f"videos/{key}/chunk_index"]), int(row[f"videos/{key}/file_index"])
        start = float(row[f"videos/{key}/from_timestamp"])
    except KeyError as exc:
        raise LeRobotFormatError(f"{where}: meta/episodes lacks column {exc.args[0]!r}") from None
    template = info.get("video_path") or VIDEO_PATH
    path = root / template.format(video_key=key, chunk_index=chunk, file_index=file_index)
    return decode_video(path, start, n_frames, fps, f"{where}, {key}")


def _episode_images(frames, key: str, where: str) -> np.ndarray:
    import io

    from PIL import Image

    out = []
    for i, value in enumerate(frames.column(key).to_pylist()):
        data = value.get("bytes") if isinstance(value, dict) else None
        if not data:
            raise LeRobotFormatError(f"{where}: {key} frame {i} has no embedded image bytes")
        out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(out)


def run_import(args: argparse.Namespace) -> int:
    report = import_lerobot(args.path, args.out, task_name=args.task_name, source=args.source, ignore=args.ignore,
                            episodes=args.episodes, assume_success=not args.no_assume_success)
    print(report.format())
    return 0

