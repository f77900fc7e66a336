"""``irevla data view``: the rerun recording (written and read back), the PNG contact sheet (its tiles are the
episode's frames), the MP4 (decodes to the frames), the selection and its errors. Headless and offline."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from episode_factory import make_episode, make_task

from irevla.data import view
from irevla.data.episode import Episode
from irevla.data.store import EpisodeStore
from irevla.errors import UserError

CAMERAS = {"corner2": (16, 16), "wrist": (12, 20)}


def colour(camera_index: int, t: int) -> tuple[int, int, int]:
    """A distinct solid colour per camera and frame index (far apart, so codec error cannot confuse them)."""
    return ((40 * t + 17) % 256, (90 + 60 * camera_index) % 256, (200 - 30 * t) % 256)


def coloured_episode(seed: int, n_steps: int, name: str = "button-press-v3", success: bool = True,
                     source: str = "script", cameras: dict | None = None, depth: bool = False) -> Episode:
    cameras = cameras or CAMERAS
    episode = make_episode(seed, n_steps=n_steps, task=make_task(name, cameras=cameras), source=source,
                           success=success)
    images = {}
    for c, (camera, (h, w)) in enumerate(cameras.items()):
        frames = np.empty((n_steps + 1, h, w, 3), dtype=np.uint8)
        for t in range(n_steps + 1):
            frames[t] = colour(c, t)
        images[camera] = frames
    episode = dataclasses.replace(episode, images=images)
    if depth:  # the optional field a teammate is adding; set it directly so this works before and after
        depth_frames = {"corner2": np.stack([np.full((16, 16), 500 + 100 * t, np.uint16)
                                             for t in range(n_steps + 1)])}
        object.__setattr__(episode, "depth", depth_frames)
    return episode


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    store = EpisodeStore(tmp_path / "expert")
    store.write(coloured_episode(1, 6, success=True))
    store.write(coloured_episode(2, 4, success=False, source="rl"))
    store.write(coloured_episode(3, 5, name="drawer-open-v3", success=True))
    return store.root


def test_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = ("import sys, irevla.data.view; heavy = [m for m in ('rerun', 'PIL', 'av', 'matplotlib', 'h5py') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------------------- selection
def test_select_filters_and_episode(dataset: Path) -> None:
    assert [s.index for s in view.select_episodes(dataset)] == [0, 1, 2]
    assert len(view.select_episodes(dataset, success=True)) == 2
    assert len(view.select_episodes(dataset, success=False, source=["rl"])) == 1
    assert len(view.select_episodes(dataset, task=["drawer-open-v3"])) == 1
    assert len(view.select_episodes(dataset, limit=2)) == 2
    every = view.select_episodes(dataset)
    assert view.select_episodes(dataset, episode="2") == [every[2]]
    assert view.select_episodes(dataset, episode=every[1].path.name) == [every[1]]
    assert view.select_episodes(dataset, episode=every[1].path.stem) == [every[1]]
    assert view.select_episodes(every[0].path) == [view.Selected(0, every[0].path)]


def test_selection_errors_are_clear(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such episode directory or file"):
        view.select_episodes(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no episode files"):
        view.select_episodes(tmp_path / "empty")
    with pytest.raises(UserError, match=r"--episode 3: out of range.*indexes 0\.\.2"):
        view.select_episodes(dataset, episode="3")
    with pytest.raises(UserError, match="--episode ep-missing.h5: no file of that name"):
        view.select_episodes(dataset, episode="ep-missing.h5")
    with pytest.raises(UserError, match="match --task pick-place-v3"):
        view.select_episodes(dataset, task=["pick-place-v3"])
    one_file = view.select_episodes(dataset)[0].path
    with pytest.raises(UserError, match="already one episode file"):
        view.select_episodes(one_file, episode="0")


def test_sample_steps_cover_the_episode() -> None:
    assert view.sample_steps(6, 8) == [0, 1, 2, 3, 4, 5, 6]
    assert view.sample_steps(100, 5) == [0, 25, 50, 75, 100]
    assert view.sample_steps(10, 1) == [0]
    assert view.numbered("a/out.png", 3, many=True) == Path("a/out-003.png")
    assert view.numbered("a/out.png", 3, many=False) == Path("a/out.png")


# -------------------------------------------------------------------------------------------------- contact sheet
def test_sheet_tiles_are_the_episode_frames(tmp_path: Path) -> None:
    from PIL import Image

    episode = coloured_episode(5, 20, depth=True)
    out = view.write_sheet(episode, tmp_path / "sheet.png", frames=5)
    image = np.asarray(Image.open(out).convert("RGB"))
    sheet = view.render_sheet(episode, frames=5)
    assert sheet.steps == [0, 5, 10, 15, 20]
    assert sheet.plotted  # matplotlib is installed
    assert image.shape[:2] == (sheet.image.height, sheet.image.width)
    rgb = [tile for tile in sheet.tiles if tile.kind == "rgb"]
    assert [(tile.camera, tile.step) for tile in rgb] == [(c, t) for c in CAMERAS for t in sheet.steps]
    for tile in rgb:
        left, top, right, bottom = tile.box
        crop = image[top:bottom, left:right]
        assert bottom - top >= view.MIN_TILE  # small frames are enlarged
        assert (crop == colour(list(CAMERAS).index(tile.camera), tile.step)).all(), tile
    depth_tiles = [tile for tile in sheet.tiles if tile.kind == "depth"]
    assert [tile.step for tile in depth_tiles] == sheet.steps
    greys = [image[tile.box[1], tile.box[0], 0] for tile in depth_tiles]
    assert greys == sorted(greys, reverse=True)  # farther (larger mm) is darker


def test_sheet_without_plot_is_smaller(tmp_path: Path) -> None:
    episode = coloured_episode(6, 3)
    with_plot, without = view.render_sheet(episode), view.render_sheet(episode, plot=False)
    assert not without.plotted and without.image.height < with_plot.image.height


# ----------------------------------------------------------------------------------------------------------- video
def test_mp4_decodes_to_the_frames(tmp_path: Path) -> None:
    import av

    task = dataclasses.replace(make_task(cameras=CAMERAS), control_hz=15.0)
    episode = dataclasses.replace(coloured_episode(7, 9), task=task)
    out = view.write_mp4(episode, tmp_path / "videos" / "ep.mp4")
    assert out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert float(stream.average_rate) == pytest.approx(15.0)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(frames) == episode.n_steps + 1
    assert frames[0].shape == (16, 36, 3)  # 16 + 20 wide, max(16, 12) high
    for t, frame in enumerate(frames):
        for c, (x0, x1, h) in enumerate([(0, 16, 16), (16, 36, 12)]):
            patch = frame[2:h - 2, x0 + 2:x1 - 2].astype(int)  # away from edges: chroma subsampling bleeds
            assert np.abs(patch - np.array(colour(c, t))).max() <= 12, (t, c)


def test_mp4_error_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        view.write_mp4(coloured_episode(8, 3), tmp_path / "ep.mp4")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------- rerun
def read_rrd(path: Path) -> dict[str, list]:
    """entity path -> its (non-static) chunks' record batches."""
    from rerun.chunk import RrdReader

    store = RrdReader(path).store()  # needs the footer: the file was finished properly
    batches: dict[str, list] = {}
    for chunk in store.stream():
        batches.setdefault(chunk.entity_path, []).append(chunk.to_record_batch())
    return batches


def column(batches: list, name: str) -> list:
    return [value for batch in batches for value in batch.column(name).to_pylist()]


def test_rrd_is_written_and_read_back(dataset: Path, tmp_path: Path) -> None:
    import pyarrow as pa

    from irevla.data.episode_file import read_episode

    selection = view.select_episodes(dataset)
    out = tmp_path / "out" / "all.rrd"
    written = view.view(selection, save=out, progress=False)
    assert written.rrd == out and written.episodes == 3
    assert [p.name for p in out.parent.iterdir()] == ["all.rrd"]  # the temporary file was renamed
    entities = read_rrd(out)
    first = read_episode(selection[0].path)
    root = "/episodes/000_button-press-v3"
    assert {f"{root}/cameras/corner2", f"{root}/cameras/wrist", f"{root}/info", f"{root}/reward",
            f"{root}/success", f"{root}/instruction", f"{root}/intervention",
            "/episodes/001_button-press-v3/cameras/wrist", "/episodes/002_drawer-open-v3/cameras/wrist"} \
        <= set(entities)
    images = entities[f"{root}/cameras/corner2"]
    assert sorted(column(images, "step")) == list(range(first.n_steps + 1))
    buffers = column(images, "Image:buffer")
    steps = column(images, "step")
    frame3 = np.asarray(buffers[steps.index(3)][0], dtype=np.uint8).reshape(16, 16, 3)
    assert (frame3 == first.images["corner2"][3]).all()
    for i, name in enumerate(first.task.action_spec.names):
        batches = entities[f"{root}/action/{name}"]
        assert column(batches, "step") == list(range(first.n_steps))
        values = [v[0] for v in column(batches, "Scalars:scalars")]
        assert np.allclose(values, first.actions[:, i])
        nanos = [v for batch in batches for v in batch.column("time").cast(pa.int64()).to_pylist()]
        assert nanos[0] == 0 and nanos[-1] / 1e9 == pytest.approx(0.1 * (first.n_steps - 1))
    for i, name in enumerate(first.task.observation_spec.proprio_names):
        values = [v[0] for v in column(entities[f"{root}/proprio/{name}"], "Scalars:scalars")]
        assert np.allclose(values, first.proprio[:, i])
    assert column(entities[f"{root}/success"], "step") == [first.n_steps]
    assert column(entities[f"{root}/success"], "Scalars:scalars") == [[1.0]]
    assert column(entities["/episodes/001_button-press-v3/success"], "Scalars:scalars") == [[0.0]]
    assert column(entities[f"{root}/instruction"], "TextLog:text") == [["do button-press-v3"]]
    assert "button-press-v3" in column(entities[f"{root}/info"], "TextDocument:text")[0][0]


def test_rrd_with_depth_and_jpeg(tmp_path: Path) -> None:
    episode = coloured_episode(9, 3, depth=True)
    out = tmp_path / "one.rrd"
    recording = view.new_recording("test")
    recording.save(out)
    root = view.log_episode(recording, episode, 4, jpeg_quality=90)
    recording.flush()
    recording.disconnect()
    assert root == "episodes/004_button-press-v3"
    entities = read_rrd(out)
    depth = entities[f"/{root}/depth/corner2"]
    assert column(depth, "DepthImage:meter") == [[1000.0]] * 4
    steps = column(depth, "step")
    buffer = column(depth, "DepthImage:buffer")[steps.index(2)]
    assert (np.asarray(buffer[0], dtype=np.uint8).view(np.uint16) == 700).all()
    assert "EncodedImage:blob" in entities[f"/{root}/cameras/corner2"][0].schema.names


# -------------------------------------------------------------------------------------------------------- the CLI
def irevla_main(argv: list[str]) -> int:
    """``irevla data view ...`` through the real entry point (skipped while a sibling command module is missing)."""
    for sibling in ("lerobot", "rosbag"):  # irevla.data.cli wires these in next to view
        pytest.importorskip(f"irevla.data.{sibling}", reason="irevla data CLI: a sibling module is not there yet")
    from irevla.cli import main

    return main(["data", "view", *argv])


def test_own_parser_runs(dataset: Path, tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    view.add_arguments(parser)
    args = parser.parse_args([str(dataset), "--failure", "--sheet", str(tmp_path / "f.png"), "--no-plot"])
    assert view.run(args) == 0
    assert [p.name for p in tmp_path.glob("f*.png")] == ["f.png"]  # one episode selected: no number
    assert "examples:" in view.EPILOG and view.DESCRIPTION


def test_cli_writes_everything(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    code = irevla_main([str(dataset), "--task", "button-press-v3", "--save", str(out / "bp.rrd"),
                 "--sheet", str(out / "bp.png"), "--mp4", str(out / "bp.mp4"), "--frames", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'bp.rrd'} (2 episodes" in printed
    assert "wrote 2 contact sheet(s)" in printed and "wrote 2 video(s)" in printed
    assert sorted(p.name for p in out.iterdir()) == ["bp-000.mp4", "bp-000.png", "bp-001.mp4", "bp-001.png",
                                                     "bp.rrd"]

    code = irevla_main([str(dataset), "--episode", "1", "--no-plot", "--sheet", str(out / "one.png")])
    assert code == 0 and (out / "one.png").exists()


def test_cli_errors_are_one_line(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert irevla_main([str(tmp_path / "missing"), "--save", str(tmp_path / "x.rrd")]) == 2
    assert "no such episode directory or file" in capsys.readouterr().err
    assert irevla_main([str(dataset), "--episode", "9", "--sheet", str(tmp_path / "x.png")]) == 2
    assert "out of range" in capsys.readouterr().err
    assert not list(tmp_path.glob("x.*"))

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(view.sys, "platform", "linux")
    assert irevla_main([str(dataset)]) == 2
    err = capsys.readouterr().err
    assert "no display" in err and "--save out.rrd" in err and err.count("\n") == 1


def test_viewer_opens_the_saved_recording_on_loopback_and_failure_is_clear(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No display here, so the `rerun` executable is a stand-in script that records how it was started: the viewer
    gets a saved .rrd (nothing is streamed), --bind 127.0.0.1, and CI=1 (no usage analytics)."""
    seen = tmp_path / "seen.txt"
    for name, body in (("dies", "exit 3"), ("runs", "sleep 30")):
        script = tmp_path / name
        script.write_text(f'#!/bin/sh\necho "$@" CI=$CI > {seen}\n{body}\n')
        script.chmod(0o755)
    rrd = tmp_path / "x.rrd"
    rrd.write_bytes(b"")
    monkeypatch.setattr(view, "viewer_executable", lambda: str(tmp_path / "dies"))
    with pytest.raises(UserError, match=r"exited at once with status 3.*x\.rrd.*--sheet"):
        view.open_viewer(rrd, wait_s=5)
    assert seen.read_text().split() == ["--new", "--bind", "127.0.0.1", str(rrd), "CI=1"]
    monkeypatch.setattr(view, "viewer_executable", lambda: str(tmp_path / "runs"))
    process = view.open_viewer(rrd, wait_s=0.5)
    try:
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
