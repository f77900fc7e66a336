"""Crash-safe writes, the one place that does them: write to a temporary name in the target folder, fsync, then
rename over the target.

A reader therefore sees either the old file or the complete new one, never half of it; when anything fails before
the rename, the temporary file is removed and the target is untouched ("nothing written").

* `atomic_write_bytes` / `_text` / `_yaml`: a whole file from memory. `atomic_write_yaml` also turns numpy
  scalars/arrays into plain Python first (yaml.safe_dump refuses them).
* `commit_file(temp, target)`: a file some library wrote itself (HDF5, safetensors) under a temporary name in the
  target's folder: fsync it, rename it into place, fsync the folder.
* `new_temp_directory` + `replace_directory`: a whole directory (a checkpoint). Directories cannot be swapped in one
  atomic step; see `replace_directory` for what a crash in between leaves.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600 files; teammates must be able to read results
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_yaml(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(plain(data), sort_keys=False))


def plain(data: Any) -> Any:
    """`data` with numpy scalars/arrays and tuples replaced by Python floats/ints/lists, recursively."""
    if isinstance(data, dict):
        return {str(k): plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain(v) for v in data]
    if isinstance(data, np.ndarray):
        return plain(data.tolist())
    if isinstance(data, np.bool_):
        return bool(data)
    if isinstance(data, np.integer):
        return int(data)
    if isinstance(data, np.floating):
        return float(data)
    return data


def commit_file(temporary: str | Path, target: str | Path) -> Path:
    """Make the finished file `temporary` (in `target`'s folder, closed by its writer) durable and rename it to
    `target`. On failure `temporary` stays for the caller to remove; `target` is untouched."""
    temporary, target = Path(temporary), Path(target)
    fsync_file(temporary)  # closing flushed the writer's buffers to the OS; fsync makes them durable
    os.replace(temporary, target)
    fsync_directory(target.parent)
    return target


def new_temp_directory(target: str | Path) -> Path:
    """An empty ``.<name>.tmp-<pid>`` next to `target` (removed first if a crashed run left one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir()
    return temp


def replace_directory(temp: str | Path, target: str | Path) -> None:
    """Move the finished directory `temp` (its files fsynced, e.g. with `fsync_file`) to `target`, replacing an older
    `target`.

    Directories cannot be swapped in one atomic step: the old one is first renamed aside, so a crash in between
    leaves the complete new directory under its temporary name and the complete old one under ``.<name>.old-*``.
    """
    temp, target = Path(temp), Path(target)
    fsync_directory(temp)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(temp, target)
    fsync_directory(target.parent)
    if old.exists():
        shutil.rmtree(old)


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's data to disk (for files a library wrote and closed itself)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(directory: str | Path) -> None:
    """Make renames in `directory` durable; not every platform lets a directory be opened or fsynced, which is fine
    to skip."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def make_readable_by_all(path: str | Path) -> None:
    """Permissions 0666 minus the umask: libraries and mkstemp create owner-only files, but results (checkpoints,
    episodes) move between users (training vs robot)."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
