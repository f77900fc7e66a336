"""Ways to damage an episode file, each with the text its EpisodeFormatError must contain (shared by tests)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from episode_factory import make_episode, make_task

from irevla.data.episode_file import write_episode_file


def edit_file(path: Path, edit) -> None:
    with h5py.File(path, "r+") as file:
        edit(file)


def _replace_dataset(name: str, make):
    def edit(file: h5py.File) -> None:
        data = file[name][()]
        del file[name]
        file.create_dataset(name, data=make(data))
    return edit


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())


def _flip_a_byte_in_frame_3(path: Path) -> None:
    with h5py.File(path, "r") as file:
        chunk = file["images/corner2"].id.get_chunk_info_by_coord((3, 0, 0, 0))
    with open(path, "r+b") as raw:
        raw.seek(chunk.byte_offset + chunk.size // 2)
        byte = raw.read(1)
        raw.seek(-1, os.SEEK_CUR)
        raw.write(bytes([byte[0] ^ 0x10]))


def _set_attr(name: str, value):
    return lambda path: edit_file(path, lambda f: f.attrs.__setitem__(name, value))


def _del(name: str):
    return lambda path: edit_file(path, lambda f: f.__delitem__(name))


def _del_attr(name: str):
    return lambda path: edit_file(path, lambda f: f.attrs.__delitem__(name))


# (corruption, expected text in the message)
BAD_FILES = {
    "truncated": (_truncate, "not an HDF5 file (truncated or corrupt)"),
    "random_bytes": (_random_bytes, "not an HDF5 file (truncated or corrupt)"),
    "empty": (lambda p: p.write_bytes(b""), "not an HDF5 file (truncated or corrupt)"),
    "schema_version": (_set_attr("schema_version", np.int64(7)),
                       "schema_version 7 is not supported (this irevla reads 1)"),
    "not_irevla": (_del_attr("format"), "not an irevla episode file"),
    "missing_proprio": (_del("proprio"), "missing dataset 'proprio'"),
    "missing_images": (_del("images"), "missing group 'images'"),
    "missing_attr": (_del_attr("success"), "missing attribute 'success'"),
    "attr_type": (_set_attr("round", "three"), "attribute 'round' has type str, expected integer"),
    "actions_float64": (lambda p: edit_file(p, _replace_dataset("actions", lambda a: a.astype(np.float64))),
                        "'actions' has dtype float64, expected float32"),
    "images_float": (lambda p: edit_file(p, _replace_dataset("images/corner2", lambda a: a.astype(np.float32))),
                     "'images/corner2' has dtype float32, expected uint8"),
    "actions_short": (lambda p: edit_file(p, _replace_dataset("actions", lambda a: a[:-1])),
                      "'actions' has shape (5, 4), expected (6, 4)"),
    "frame_size": (lambda p: edit_file(p, _replace_dataset("images/corner2", lambda a: a[:, :8])),
                   "'images/corner2' has shape (7, 8, 16, 3), expected (7, 16, 16, 3)"),
    "timestamps_shape": (lambda p: edit_file(p, _replace_dataset("timestamps", lambda a: a[:3])),
                         "'timestamps' has shape (3,), expected (7,)"),
    "n_steps": (_set_attr("n_steps", np.int64(9)), "'actions' has shape (6, 4), expected (9, 4)"),
    "extra_camera": (lambda p: edit_file(p, lambda f: f.create_dataset("images/wrist", data=np.zeros(3, np.uint8))),
                     "'images' holds cameras ['corner2', 'wrist']"),
    "task_json": (_set_attr("task_json", "{not json"), "attribute 'task_json' is not a valid TaskSpec"),
    "task_action_dim": (_set_attr("task_json", make_task(real_robot=True).to_json()),
                        "'actions' has shape (6, 4), expected (6, 7)"),
    "metadata_json": (_set_attr("metadata_json", "[1, 2]"), "attribute 'metadata_json' is a JSON list"),
    "source": (_set_attr("source", "human"), "attribute 'source' is 'human'"),
    "created": (_set_attr("created", "2025-01-01"), "attribute 'created': time '2025-01-01' has no timezone"),
    "nan_action": (lambda p: edit_file(p, _replace_dataset("actions", lambda a: np.full_like(a, np.nan))),
                   "Episode.actions: non-finite values"),
    "flipped_bit": (_flip_a_byte_in_frame_3, "could not read dataset 'images/corner2' (corrupt data)"),
}


def make_bad_file(directory: Path, kind: str) -> Path:
    path = write_episode_file(make_episode(3, n_steps=6), directory)
    corrupt, _ = BAD_FILES[kind]
    corrupt(path)
    return path
