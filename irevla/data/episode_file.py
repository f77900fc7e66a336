"""The on-disk episode format: one HDF5 file per episode, written crash-safely, read back with full validation.

File format (schema version 1)
==============================
File name ``ep-<YYYYmmddTHHMMSSffffff>-<uuid8>.h5`` (UTC creation time of the episode to the microsecond, 8 random
hex digits; older files without microseconds are read too). Names that
start with ``.`` are never episodes: ``.tmp-<uuid>.h5`` is a file being written (or abandoned by a crashed writer).

Root attributes (scalars; strings are UTF-8 variable-length)
------------------------------------------------------------
==================  ========  =================================================================================
attribute           type      meaning
==================  ========  =================================================================================
format              str       always ``"irevla-episode"`` (tells an episode apart from any other HDF5 file)
schema_version      int64     ``irevla.spec.SCHEMA_VERSION`` (1); readers refuse versions they do not know
n_steps             int64     T, the number of actions (>= 1)
success             bool      did the episode end in success
source              str       one of ``script``, ``teleop``, ``rl``, ``intervention``
round               int64     iRe-VLA iteration that produced the episode (>= 0)
instruction         str       language instruction given to the policy
created             str       timezone-aware ISO-8601 creation time, e.g. ``2025-01-31T12:00:00.123456+00:00``
task_json           str       `irevla.spec.TaskSpec.to_json()`: name, family, action/observation specs, ...
metadata_json       str       small free-form JSON object (seed, variation, expert name, ...)
writer              str       ``irevla <version>`` that wrote the file (informational only)
==================  ========  =================================================================================

Datasets
--------
==================  =====================  ===================================================================
dataset             dtype, shape           notes
==================  =====================  ===================================================================
images/<camera>     uint8 (T+1, H, W, 3)   one group member per camera of ``task.observation_spec``; RGB,
                                           upright; one frame per chunk, compressed (lzf by default, or gzip)
proprio             float32 (T+1, P)       order = ``task.observation_spec.proprio_names``
actions             float32 (T, A)         A = ``task.action_spec.dim``
rewards             float32 (T,)
timestamps          float64 (T+1,)         optional; seconds, one per observation
interventions       bool (T,)              optional; True where a human overrode the action (HDF5 enum int8)
depth/<camera>      uint16 (T+1, H, W)     optional; millimetres, aligned to ``images/<camera>``; chunked and
                                           compressed like the images
==================  =====================  ===================================================================

Every dataset carries a Fletcher-32 checksum per chunk, so a flipped bit on disk is reported on read instead of
silently training on garbage. Readers ignore attributes and datasets they do not know (a writer of the same
schema version may add optional ones), and reject a missing or malformed required one.

Crash safety
------------
`write_episode_file` writes to ``.tmp-<uuid>.h5`` in the destination directory, closes it, ``fsync``s it,
``os.replace``s it to its final name and ``fsync``s the directory. A crash at any point leaves either nothing visible
or the complete file; abandoned temp files are invisible to readers and removed by `cleanup_stale_temp`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

import irevla
from irevla.atomic_io import commit_file
from irevla.data.episode import Episode, parse_created
from irevla.errors import MissingFileError, UserError
from irevla.spec import SCHEMA_VERSION, SOURCES, ContractError, TaskSpec

FORMAT_NAME = "irevla-episode"
EPISODE_GLOB = "ep-*.h5"
EPISODE_NAME = re.compile(r"^ep-\d{8}T\d{6}(?:\d{6})?-[0-9a-f]{8}\.h5$")
TEMP_PREFIX = ".tmp-"
TEMP_GLOB = f"{TEMP_PREFIX}*.h5"

Compression = Literal["lzf", "gzip", "none"]
COMPRESSIONS: tuple[str, ...] = ("lzf", "gzip", "none")
# lzf is the default: in bench/bench_dataset.py it writes 1.4-1.8x and reads 1.0-1.9x faster than gzip level 4;
# gzip files are 25 % (noisy camera images) to 55 % (clean sim renders) smaller. Pick gzip when disk space matters.
DEFAULT_COMPRESSION: Compression = "lzf"
GZIP_LEVEL = 4

REQUIRED_ATTRS: dict[str, tuple[type, ...]] = {
    "n_steps": (np.integer,), "success": (np.bool_, bool), "source": (str,), "round": (np.integer,),
    "instruction": (str,), "created": (str,), "task_json": (str,), "metadata_json": (str,),
}
# Non-image datasets; images are checked per camera of the task's observation_spec.
LOWDIM_DATASETS = ("actions", "proprio", "rewards")
OPTIONAL_DATASETS = ("timestamps", "interventions")
DATASET_DTYPES: dict[str, np.dtype] = {
    "proprio": np.dtype(np.float32), "actions": np.dtype(np.float32), "rewards": np.dtype(np.float32),
    "timestamps": np.dtype(np.float64), "interventions": np.dtype(np.bool_),
}


class EpisodeFormatError(UserError, ValueError):
    """An episode file is unreadable or does not match the format. `path` and `problem` are also attributes."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self) -> tuple:
        # Keeps the error intact when copied or sent between processes (e.g. from a DataLoader worker).
        return type(self), (self.path, self.problem)


@dataclass(frozen=True)
class EpisodeInfo:
    """What an index needs about one episode, read from attributes and dataset shapes (no array data)."""

    path: Path
    task: TaskSpec
    n_steps: int
    success: bool
    source: str
    round: int
    instruction: str
    cameras: tuple[str, ...]
    created: str
    size_bytes: int
    metadata: dict = field(default_factory=dict, compare=False)

    @property
    def task_name(self) -> str:
        return self.task.name

    @property
    def episode_id(self) -> str:
        """The file name: unique, independent of the directory the file lives in (used to split by episode)."""
        return self.path.name


# ----------------------------------------------------------------------------------------------------------- write
def episode_file_name(episode: Episode) -> str:
    created = parse_created(episode.created).astimezone(timezone.utc)
    # Microseconds, so that sorting by name is sorting by creation time even for many RL episodes per second.
    return f"ep-{created:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.h5"


def _compression_options(compression: str) -> dict[str, Any]:
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": GZIP_LEVEL}
    if compression == "none":
        return {}
    raise ValueError(f"compression: expected one of {COMPRESSIONS}, got {compression!r}")


def _write_contents(file: h5py.File, episode: Episode, compression: str) -> None:
    attrs = file.attrs
    attrs["format"] = FORMAT_NAME
    attrs["schema_version"] = np.int64(episode.schema_version)
    attrs["n_steps"] = np.int64(episode.n_steps)
    attrs["success"] = np.bool_(episode.success)
    attrs["source"] = episode.source
    attrs["round"] = np.int64(episode.round)
    attrs["instruction"] = episode.instruction
    attrs["created"] = episode.created
    attrs["task_json"] = episode.task.to_json()
    attrs["metadata_json"] = json.dumps(episode.metadata, sort_keys=True, allow_nan=False)
    attrs["writer"] = f"irevla {irevla.__version__}"

    images = file.create_group("images")
    image_options = _compression_options(compression)
    for camera, frames in episode.images.items():
        # One frame per chunk: a training sample reads (and decompresses) exactly the frame it needs.
        images.create_dataset(camera, data=frames, chunks=(1, *frames.shape[1:]), fletcher32=True, **image_options)
    if episode.depth:
        depth = file.create_group("depth")
        for camera, frames in episode.depth.items():
            depth.create_dataset(camera, data=frames, chunks=(1, *frames.shape[1:]), fletcher32=True,
                                 **image_options)
    arrays = {"proprio": episode.proprio, "actions": episode.actions, "rewards": episode.rewards,
              "timestamps": episode.timestamps, "interventions": episode.interventions}
    for name, array in arrays.items():
        if array is not None:
            # Small: one chunk each, uncompressed, but chunked so the Fletcher-32 checksum filter applies.
            file.create_dataset(name, data=array, chunks=array.shape, fletcher32=True)


def write_episode_file(episode: Episode, directory: str | Path, compression: str = DEFAULT_COMPRESSION) -> Path:
    """Write `episode` into `directory` crash-safely and return the final path (see the module docstring)."""
    if not isinstance(episode, Episode):
        raise TypeError(f"write_episode_file: expected an Episode, got {type(episode).__name__}")
    _compression_options(compression)  # fail on a bad name before touching the disk
    directory = Path(directory)
    temp_path = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}.h5"
    try:
        # No HDF5 file locking: the temp file is private to this writer, and locks fail on some NFS mounts.
        with h5py.File(temp_path, "w", locking=False) as file:
            _write_contents(file, episode, compression)
            file.flush()
        while True:
            final_path = directory / episode_file_name(episode)
            if not final_path.exists():  # 32 random bits per second of creation time: a repeat is a formality
                break
        # h5py does not expose its file descriptor: commit_file fsyncs the closed file, renames it, fsyncs the folder.
        commit_file(temp_path, final_path)
    except BaseException:
        # Best effort on ordinary errors (disk full, Ctrl-C); on SIGKILL the hidden temp file stays for cleanup.
        try:
            temp_path.unlink()
        except OSError:
            pass
        raise
    return final_path


def cleanup_stale_temp(directory: str | Path, older_than_s: float = 3600.0) -> list[Path]:
    """Delete temp files left by crashed writers, if not modified for `older_than_s` seconds; return them.

    The age threshold protects a writer that is still busy: only files nobody has touched for a while go.
    """
    now = time.time()
    removed = []
    for path in sorted(Path(directory).glob(TEMP_GLOB)):
        try:
            if now - path.stat().st_mtime >= older_than_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # its writer finished (renamed it) or another cleaner got there first
            continue
    return removed


def list_episode_files(directory: str | Path, recursive: bool = False) -> list[Path]:
    """Committed episode files in `directory`, sorted by name (= creation time). Hidden files are never listed."""
    directory = Path(directory)
    candidates = directory.rglob(EPISODE_GLOB) if recursive else directory.glob(EPISODE_GLOB)
    return sorted((p for p in candidates if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(directory).parts)), key=lambda p: (p.name, str(p)))


def list_temp_files(directory: str | Path, recursive: bool = False) -> list[Path]:
    directory = Path(directory)
    return sorted(directory.rglob(TEMP_GLOB) if recursive else directory.glob(TEMP_GLOB))


# ------------------------------------------------------------------------------------------------------------ read
def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise MissingFileError(f"{path}: no such episode file")
    try:
        # Committed episode files are immutable, so readers need no HDF5 file lock (locks also fail on some NFS).
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise EpisodeFormatError(path, f"not an HDF5 file (truncated or corrupt): {exc}") from None


def _attribute(path: Path, file: h5py.File, name: str, types: tuple[type, ...]) -> Any:
    if name not in file.attrs:
        raise EpisodeFormatError(path, f"missing attribute {name!r}")
    value = file.attrs[name]
    if not isinstance(value, types) or (np.integer in types and isinstance(value, (bool, np.bool_))):
        expected = " or ".join(t.__name__ for t in types)
        raise EpisodeFormatError(path, f"attribute {name!r} has type {type(value).__name__}, expected {expected}")
    return value


def _dataset(path: Path, file: h5py.File, name: str, dtype: np.dtype, shape: tuple[int, ...],
             meaning: str) -> h5py.Dataset:
    node = file.get(name)
    if node is None:
        raise EpisodeFormatError(path, f"missing dataset {name!r}")
    if not isinstance(node, h5py.Dataset):
        raise EpisodeFormatError(path, f"{name!r} is a {type(node).__name__}, expected a dataset")
    if node.dtype != dtype:
        raise EpisodeFormatError(path, f"{name!r} has dtype {node.dtype}, expected {dtype}")
    if node.shape != shape:
        raise EpisodeFormatError(path, f"{name!r} has shape {node.shape}, expected {shape} ({meaning})")
    return node


@dataclass
class _Layout:
    """Attributes and dataset handles of an open file, after every check that needs no array data."""

    info: EpisodeInfo
    metadata: dict
    datasets: dict[str, h5py.Dataset]  # "images/<camera>", "proprio", ... (optional ones only if present)


def _check_layout(path: Path, file: h5py.File) -> _Layout:
    if "format" not in file.attrs:
        raise EpisodeFormatError(path, "not an irevla episode file (no attribute 'format')")
    if file.attrs["format"] != FORMAT_NAME:
        raise EpisodeFormatError(path, f"not an irevla episode file (attribute 'format' is "
                                       f"{file.attrs['format']!r}, expected {FORMAT_NAME!r})")
    version = _attribute(path, file, "schema_version", (np.integer,))
    if int(version) != SCHEMA_VERSION:
        raise EpisodeFormatError(path, f"schema_version {int(version)} is not supported "
                                       f"(this irevla reads {SCHEMA_VERSION})")
    attrs = {name: _attribute(path, file, name, types) for name, types in REQUIRED_ATTRS.items()}
    try:
        task = TaskSpec.from_json(attrs["task_json"])
    except (ValueError, TypeError, AttributeError) as exc:  # JSONDecodeError and ContractError are ValueErrors
        raise EpisodeFormatError(path, f"attribute 'task_json' is not a valid TaskSpec: {exc}") from None
    try:
        metadata = json.loads(attrs["metadata_json"])
    except ValueError as exc:
        raise EpisodeFormatError(path, f"attribute 'metadata_json' is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise EpisodeFormatError(path, f"attribute 'metadata_json' is a JSON {type(metadata).__name__}, "
                                       f"expected an object")
    if attrs["source"] not in SOURCES:
        raise EpisodeFormatError(path, f"attribute 'source' is {attrs['source']!r}, expected one of {SOURCES}")
    n_steps = int(attrs["n_steps"])
    if n_steps < 1:
        raise EpisodeFormatError(path, f"attribute 'n_steps' is {n_steps}, expected >= 1")
    if int(attrs["round"]) < 0:
        raise EpisodeFormatError(path, f"attribute 'round' is {int(attrs['round'])}, expected >= 0")
    try:
        parse_created(attrs["created"], name="attribute 'created'")
    except ContractError as exc:
        raise EpisodeFormatError(path, str(exc)) from None

    action_dim = task.action_spec.dim
    proprio_dim = len(task.observation_spec.proprio_names)
    expected = {
        "proprio": ((n_steps + 1, proprio_dim), f"T+1 observations x {proprio_dim} proprio_names"),
        "actions": ((n_steps, action_dim), f"T={n_steps} from n_steps x A={action_dim} from the task's action_spec"),
        "rewards": ((n_steps,), f"T={n_steps} from n_steps"),
        "timestamps": ((n_steps + 1,), "T+1 observations"),
        "interventions": ((n_steps,), f"T={n_steps} from n_steps"),
    }
    datasets = {}
    for name in (*LOWDIM_DATASETS, *OPTIONAL_DATASETS):
        if name in OPTIONAL_DATASETS and name not in file:
            continue
        shape, meaning = expected[name]
        datasets[name] = _dataset(path, file, name, DATASET_DTYPES[name], shape, meaning)

    group = file.get("images")
    if not isinstance(group, h5py.Group):
        raise EpisodeFormatError(path, "missing group 'images'")
    cameras = task.observation_spec.cameras
    if set(group.keys()) != set(cameras):
        raise EpisodeFormatError(path, f"'images' holds cameras {sorted(group.keys())}, the task's "
                                       f"observation_spec has {sorted(cameras)}")
    for camera, (height, width) in cameras.items():
        name = f"images/{camera}"
        datasets[name] = _dataset(path, file, name, np.dtype(np.uint8), (n_steps + 1, height, width, 3),
                                  f"T+1 frames of {height}x{width} RGB")

    depth_group = file.get("depth")
    if depth_group is not None:
        if not isinstance(depth_group, h5py.Group):
            raise EpisodeFormatError(path, "'depth' is not a group of per-camera datasets")
        for camera in depth_group.keys():
            if camera not in cameras:
                raise EpisodeFormatError(path, f"'depth/{camera}' has no colour camera of that name "
                                               f"(the task's cameras: {sorted(cameras)})")
            height, width = cameras[camera]
            name = f"depth/{camera}"
            datasets[name] = _dataset(path, file, name, np.dtype(np.uint16), (n_steps + 1, height, width),
                                      f"T+1 depth frames aligned to the {height}x{width} colour camera")

    info = EpisodeInfo(path=path, task=task, n_steps=n_steps, success=bool(attrs["success"]),
                       source=str(attrs["source"]), round=int(attrs["round"]), instruction=attrs["instruction"],
                       cameras=tuple(cameras), created=attrs["created"], size_bytes=path.stat().st_size,
                       metadata=metadata)
    return _Layout(info=info, metadata=metadata, datasets=datasets)


def _read_array(path: Path, name: str, dataset: h5py.Dataset) -> np.ndarray:
    try:
        return dataset[()]
    except (OSError, RuntimeError, ValueError) as exc:  # checksum mismatch, broken chunk index, filter failure
        raise EpisodeFormatError(path, f"could not read dataset {name!r} (corrupt data): {exc}") from None


def _guard(path: Path, read: Any) -> Any:
    """Run `read()`, turning whatever a damaged file makes h5py raise into an EpisodeFormatError naming `path`."""
    try:
        return read()
    except (EpisodeFormatError, FileNotFoundError):
        raise
    except ContractError as exc:
        raise EpisodeFormatError(path, str(exc)) from None
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise EpisodeFormatError(path, f"unreadable ({type(exc).__name__}: {exc})") from None


def read_info(path: str | Path) -> EpisodeInfo:
    """Cheap: attributes and dataset shapes/dtypes only (no array data). Raises EpisodeFormatError."""
    path = Path(path)

    def read() -> EpisodeInfo:
        with _open(path) as file:
            return _check_layout(path, file).info

    return _guard(path, read)


def read_lowdim(path: str | Path) -> tuple[EpisodeInfo, dict[str, np.ndarray]]:
    """Info plus every non-image dataset (proprio, actions, rewards, optional ones): what statistics need."""
    path = Path(path)

    def read() -> tuple[EpisodeInfo, dict[str, np.ndarray]]:
        with _open(path) as file:
            layout = _check_layout(path, file)
            arrays = {name: _read_array(path, name, ds) for name, ds in layout.datasets.items()
                      if not name.startswith(("images/", "depth/"))}
            return layout.info, arrays

    return _guard(path, read)


def read_episode(path: str | Path) -> Episode:
    """Read and fully validate one episode file. Raises EpisodeFormatError naming the file and the problem."""
    path = Path(path)

    def read() -> Episode:
        with _open(path) as file:
            layout = _check_layout(path, file)
            arrays = {name: _read_array(path, name, ds) for name, ds in layout.datasets.items()}
            attrs = file.attrs
            info = layout.info
            return Episode(
                images={camera: arrays[f"images/{camera}"] for camera in info.cameras},
                proprio=arrays["proprio"], actions=arrays["actions"], rewards=arrays["rewards"],
                success=info.success, instruction=info.instruction, task=info.task, source=info.source,
                round=info.round, schema_version=int(attrs["schema_version"]), created=info.created,
                timestamps=arrays.get("timestamps"), interventions=arrays.get("interventions"),
                metadata=layout.metadata,
                depth={name[len("depth/"):]: array for name, array in arrays.items() if name.startswith("depth/")}
                or None)

    return _guard(path, read)


class FrameReader:
    """Random access to single frames of one episode file: what a training Dataset needs per sample.

    Opening is cheap: no layout validation and no array data (validate once with `read_lowdim`/`read_info`;
    committed files never change). HDF5's chunk cache is turned off because random sampling almost never reads the
    same frame twice, so the cache would only cost memory per open file. Use one reader per process: never carry an
    open reader across fork.
    """

    def __init__(self, path: str | Path, cameras: tuple[str, ...] | list[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"{self.path}: no such episode file")
        try:
            self._file = h5py.File(self.path, "r", locking=False, rdcc_nbytes=0)
        except OSError as exc:
            raise EpisodeFormatError(self.path, f"not an HDF5 file (truncated or corrupt): {exc}") from None
        try:
            self._frames = {camera: self._file[f"images/{camera}"] for camera in cameras}
        except KeyError as exc:
            self._file.close()
            raise EpisodeFormatError(self.path, f"missing dataset 'images/...': {exc}") from None

    def frame(self, camera: str, t: int) -> np.ndarray:
        """uint8 (H, W, 3) frame `t` (0 <= t <= T) of `camera`; raises EpisodeFormatError on a corrupt chunk."""
        try:
            return self._frames[camera][t]
        except (OSError, RuntimeError) as exc:
            raise EpisodeFormatError(self.path, f"could not read 'images/{camera}' frame {t} (corrupt data): "
                                                f"{exc}") from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
