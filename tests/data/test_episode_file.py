"""The HDF5 episode file: round trip, layout, crash-safe writing, and every kind of bad file."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from bad_episode_files import BAD_FILES, edit_file, make_bad_file
from episode_factory import make_episode, make_task

import irevla.data.episode_file as episode_file
from irevla.data.episode_file import (
    EPISODE_NAME,
    EpisodeFormatError,
    FrameReader,
    read_episode,
    read_info,
    read_lowdim,
    write_episode_file,
)


@pytest.mark.parametrize("compression", ["lzf", "gzip", "none"])
@pytest.mark.parametrize("optional_arrays", [True, False])
def test_round_trip_is_bit_identical(tmp_path: Path, compression: str, optional_arrays: bool) -> None:
    task = make_task(cameras={"front": (24, 32), "wrist": (8, 8)}, real_robot=True, variation="color:red")
    episode = make_episode(5, n_steps=7, task=task, source="teleop", round=3, optional_arrays=optional_arrays)
    path = write_episode_file(episode, tmp_path, compression=compression)

    assert EPISODE_NAME.match(path.name) and path.name.startswith("ep-20250101T000005000000-")
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temp file left behind
    back = read_episode(path)
    assert back == episode
    for camera in episode.images:
        assert back.images[camera].tobytes() == episode.images[camera].tobytes()
    assert back.metadata == episode.metadata and back.task == episode.task and back.created == episode.created
    assert (back.timestamps is None, back.interventions is None) == (not optional_arrays, not optional_arrays)

    info = read_info(path)
    assert (info.task, info.n_steps, info.success, info.source, info.round, info.instruction, info.cameras) == (
        task, 7, episode.success, "teleop", 3, episode.instruction, ("front", "wrist"))
    assert info.size_bytes == path.stat().st_size and info.episode_id == path.name

    with h5py.File(path, "r") as file:
        frames = file["images/front"]
        assert frames.chunks == (1, 24, 32, 3)  # one frame per chunk: a sample decompresses only its frame
        assert frames.compression == (None if compression == "none" else compression)
        assert frames.fletcher32 and file["actions"].fletcher32
        assert file.attrs["schema_version"] == 1 and file.attrs["format"] == "irevla-episode"


def test_lowdim_reader_and_frame_reader(tmp_path: Path) -> None:
    episode = make_episode(2, n_steps=6)
    path = write_episode_file(episode, tmp_path)
    info, arrays = read_lowdim(path)
    assert info.n_steps == 6 and set(arrays) == {"proprio", "actions", "rewards", "timestamps", "interventions"}
    assert np.array_equal(arrays["actions"], episode.actions)
    with FrameReader(path, ["corner2"]) as reader:
        assert np.array_equal(reader.frame("corner2", 6), episode.images["corner2"][6])
    with pytest.raises(EpisodeFormatError, match="missing dataset"):
        FrameReader(path, ["wrist"])


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_write(file, episode, compression):
        file.attrs["format"] = "half written"
        raise OSError("disk full")

    monkeypatch.setattr(episode_file, "_write_contents", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_episode_file(make_episode(1), tmp_path)
    assert os.listdir(tmp_path) == []


def test_unknown_compression_is_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression"):
        write_episode_file(make_episode(1), tmp_path, compression="zstd")
    assert os.listdir(tmp_path) == []


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_episode(tmp_path / "ep-nothing.h5")


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_raises_format_error_naming_file_and_problem(tmp_path: Path, kind: str) -> None:
    path = make_bad_file(tmp_path, kind)
    expected = BAD_FILES[kind][1]
    with pytest.raises(EpisodeFormatError) as error:
        read_episode(path)
    assert isinstance(error.value, ValueError)
    assert str(error.value).startswith(f"{path}: ")
    assert expected in error.value.problem, error.value.problem
    assert error.value.path == path
    assert copy.deepcopy(error.value).problem == error.value.problem  # survives crossing process boundaries


def test_info_checks_layout_without_reading_data(tmp_path: Path) -> None:
    # A flipped bit inside a frame is only found by reading the data: read_info (cheap) does not see it...
    path = make_bad_file(tmp_path, "flipped_bit")
    assert read_info(path).n_steps == 6
    # ... but layout problems are caught by read_info too.
    edit_file(path, lambda f: f.__delitem__("rewards"))
    with pytest.raises(EpisodeFormatError, match="missing dataset 'rewards'"):
        read_info(path)


def test_readers_ignore_unknown_extras(tmp_path: Path) -> None:
    episode = make_episode(4, n_steps=5)
    path = write_episode_file(episode, tmp_path)
    edit_file(path, lambda f: (f.create_dataset("thermal", data=np.zeros(3)), f.attrs.__setitem__("operator", "ann")))
    assert read_episode(path) == episode


def test_metadata_is_plain_json_in_the_file(tmp_path: Path) -> None:
    path = write_episode_file(make_episode(4), tmp_path)
    with h5py.File(path, "r") as file:
        assert json.loads(file.attrs["metadata_json"])["seed"] == 4
        assert json.loads(file.attrs["task_json"])["name"] == "button-press-v3"


def test_copied_file_reads_the_same(tmp_path: Path) -> None:
    episode = make_episode(8)
    path = write_episode_file(episode, tmp_path)
    copy = tmp_path / "sub"
    copy.mkdir()
    shutil.copy(path, copy / path.name)
    assert read_episode(copy / path.name) == episode


def test_depth_round_trips_and_is_checked(tmp_path: Path) -> None:
    """The optional depth stream (uint16 millimetres, aligned to a colour camera) is written and read bit-exact;
    a depth of the wrong dtype, shape or camera is refused naming the camera, in memory and in a file."""
    import dataclasses

    from irevla.spec import ContractError

    base = make_episode(5, n_steps=4, task=make_task(cameras={"front": (8, 10), "wrist": (6, 6)}))
    depth = np.random.default_rng(0).integers(0, 65535, (5, 8, 10), dtype=np.uint16)
    episode = dataclasses.replace(base, depth={"front": depth})
    path = write_episode_file(episode, tmp_path)
    back = read_episode(path)
    assert back == episode and back.depth["front"].tobytes() == depth.tobytes()
    assert back != base  # depth takes part in equality
    assert read_episode(write_episode_file(base, tmp_path)).depth is None
    with pytest.raises(ContractError, match=r"depth\['front'\].*uint16"):
        dataclasses.replace(base, depth={"front": depth.astype(np.float32)})
    with pytest.raises(ContractError, match=r"depth\['front'\].*\(5, 8, 10\)"):
        dataclasses.replace(base, depth={"front": depth[:, :4]})
    with pytest.raises(ContractError, match=r"depth\['side'\].*colour cameras"):
        dataclasses.replace(base, depth={"side": depth})
    with h5py.File(path, "a") as file:
        file["depth/side"] = file["depth/front"][()]
    with pytest.raises(EpisodeFormatError, match=r"depth/side.*no colour camera"):
        read_episode(path)
