"""``irevla data view DIR|FILE``: look at episodes in the rerun viewer, as a ``.rrd`` recording, a PNG contact sheet
or an MP4.

Three outputs, any combination in one run (each episode is read once):

* rerun (``--save out.rrd``, or no output option at all to spawn the viewer): one recording, every episode under its
  own entity path ``episodes/<index>_<task>/`` with

  ======================  =================================================================================
  entity                  what
  ======================  =================================================================================
  ``info``                static Markdown: task, instruction, T, success, source, round, file, metadata
  ``instruction``         the instruction as a text log at step 0
  ``cameras/<camera>``    the RGB frame, steps 0..T
  ``depth/<camera>``      the depth frame (uint16 mm, ``meter=1000``), when the episode has ``depth``
  ``action/<name>``       one scalar series per action dimension (``task.action_spec.names``), steps 0..T-1
  ``proprio/<name>``      one scalar series per ``task.observation_spec.proprio_names`` entry, steps 0..T
  ``reward``              the reward after action t, steps 0..T-1
  ``intervention``        1 where a human overrode the policy, steps 0..T-1 (only when recorded)
  ``success``             1 / 0 at step T, plus a text log ``success`` / ``failure`` under ``outcome``
  ======================  =================================================================================

  Time lines: ``step`` (sequence, observation/action index) and, when the episode has timestamps, ``time``: seconds
  since the episode's first observation (so episodes line up; the absolute start is in ``info``).
* ``--sheet out.png`` (Pillow; matplotlib for the plot, skipped if it is missing): one PNG per episode: a header
  (task, instruction, T, success, source, file), then per camera a row of frames sampled evenly over the episode
  (``--frames``, always including the first and the final observation), each labelled ``t=<step>``, depth rows when
  present, and a plot of the actions and the reward (interventions shaded) over time.
* ``--mp4 out.mp4`` (PyAV, libx264): the cameras side by side, one video frame per observation at
  ``task.control_hz``; written to a temporary file and renamed, so an error never leaves half a video behind.

With several episodes selected, ``--sheet`` and ``--mp4`` write one file per episode, numbered with the episode's
index: ``out-000.png``, ``out-001.png``, ... (one exactly named file when one episode is selected). The index counts
the episodes that pass the filters, in file-name (= creation) order, from 0; it is also what ``--episode INDEX``
takes and what names the rerun entity path.

Nothing heavy (rerun, Pillow, PyAV, matplotlib, h5py) is imported until a command runs. The only network traffic
is the SDK streaming to a viewer it spawned, which listens on 127.0.0.1 only and is started with ``CI=1`` in its
environment (that turns off rerun's usage analytics).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irevla.errors import MissingFileError, UserError

if TYPE_CHECKING:
    import numpy as np
    import rerun as rr
    from PIL import Image

    from irevla.data.episode import Episode

DESCRIPTION = (
    "Look at recorded episodes: camera images, actions, proprio, reward and success over time. With rerun "
    "(--save out.rrd for a recording to open later with `rerun out.rrd`; no output option spawns the viewer), "
    "or without it: --sheet out.png (contact sheet of frames sampled over the episode plus an action/reward plot) "
    "and --mp4 out.mp4 (cameras side by side at the task's control rate). DIR|FILE is a directory of episode files "
    "(filter with --task/--success/--failure/--source/--round, pick with --episode, cap with --limit) or one "
    ".h5 episode file. With several episodes, --sheet/--mp4 write one file per episode: out-000.png, out-001.png, "
    "... numbered by episode index."
)

EPILOG = """\
examples:
  irevla data view data/expert --save expert.rrd                 # every episode into one rerun recording
  rerun expert.rrd                                               # ... and look at it on a machine with a display
  irevla data view data/expert                                   # spawn the rerun viewer directly
  irevla data view data/rl --failure --limit 10 --save fails.rrd # the first 10 failed RL episodes
  irevla data view data/expert --episode 3 --sheet ep3.png       # contact sheet of episode 3 (0-based)
  irevla data view data/expert/ep-20250101T120000123456-1a2b3c4d.h5 --mp4 ep.mp4
  irevla data view data/expert --task button-press-v3 --limit 5 --sheet sheets/bp.png   # bp-000.png ... bp-004.png

--episode INDEX counts the episodes that pass the filters, in file-name (= creation) order, from 0;
--episode FILENAME picks the file with that name (with or without .h5).
"""

APPLICATION_ID = "irevla_data_view"
DEFAULT_FRAMES = 8
MIN_TILE = 96  # smaller frames are enlarged by a whole factor (nearest neighbour: every pixel stays exact)
MAX_TILE = 240  # taller frames are shrunk to this height
MARGIN = 8
GAP = 4
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


# --------------------------------------------------------------------------------------------------- the arguments
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _jpeg_quality(text: str) -> int:
    value = _positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected 1..100, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``irevla data view``."""
    from irevla.spec import SOURCES  # small module, no numpy work at import

    parser.add_argument("path", metavar="DIR|FILE", help="a directory of episode files or one .h5 episode file")
    select = parser.add_argument_group("which episodes (of a directory)")
    select.add_argument("--task", action="append", metavar="NAME",
                        help="task name or full name (family/name@variation#seed); repeat for several")
    outcome = select.add_mutually_exclusive_group()
    outcome.add_argument("--success", dest="success", action="store_const", const=True, default=None,
                         help="successful episodes only")
    outcome.add_argument("--failure", dest="success", action="store_const", const=False,
                         help="failed episodes only")
    select.add_argument("--source", action="append", choices=SOURCES, help="recorded by; repeat for several")
    select.add_argument("--round", action="append", type=int, metavar="N", help="iRe-VLA round; repeat for several")
    select.add_argument("--episode", metavar="INDEX|FILENAME",
                        help="one episode: its index among those that pass the filters (from 0), or its file name")
    select.add_argument("--limit", type=_positive_int, metavar="N", help="at most the first N episodes")
    select.add_argument("--recursive", "-r", action="store_true", help="also look in subdirectories")
    out = parser.add_argument_group("outputs (none given: spawn the rerun viewer)")
    out.add_argument("--save", metavar="OUT.rrd", type=Path,
                     help="write a rerun recording (works headless); open it with `rerun OUT.rrd`")
    out.add_argument("--sheet", metavar="OUT.png", type=Path,
                     help="PNG contact sheet (frames, labels, action/reward plot); no rerun needed")
    out.add_argument("--mp4", metavar="OUT.mp4", type=Path,
                     help="H.264 video of the cameras side by side at task.control_hz; no rerun needed")
    out.add_argument("--frames", type=_positive_int, default=DEFAULT_FRAMES, metavar="N",
                     help=f"frames per camera on a contact sheet, spread evenly over the episode "
                          f"(default {DEFAULT_FRAMES})")
    out.add_argument("--no-plot", dest="plot", action="store_false", help="contact sheet without the plot")
    out.add_argument("--jpeg", type=_jpeg_quality, metavar="QUALITY",
                     help="store rerun images as JPEG of this quality (1-100) instead of raw (lossy; a much smaller .rrd)")


# --------------------------------------------------------------------------------------------------- the selection
@dataclass(frozen=True)
class Selected:
    """One episode to show: its index (among the episodes that passed the filters) and its file."""

    index: int
    path: Path


def select_episodes(path: str | Path, task: Sequence[str] | str | None = None, success: bool | None = None,
                    source: Sequence[str] | str | None = None, round: Sequence[int] | int | None = None,
                    episode: str | int | None = None, limit: int | None = None,
                    recursive: bool = False) -> list[Selected]:
    """The episodes of `path` (a directory or one .h5 file) to show, in file-name order; a clear `UserError` when
    `path` is missing, holds no episodes, nothing passes the filters or `episode` names none of them."""
    from irevla.data.episode_file import read_info
    from irevla.data.store import EpisodeCollection, matches

    path = Path(path)
    filters = {"task": _listed(task), "success": success, "source": _listed(source), "round": _listed(round)}
    described = _describe_filters(filters)
    if not path.exists():
        raise MissingFileError(f"{path}: no such episode directory or file")
    if path.is_file():
        if episode is not None:
            raise UserError(f"--episode selects an episode of a directory; {path} is already one episode file")
        if not matches(read_info(path), **filters):
            raise UserError(f"{path}: the episode does not match {described}")
        return [Selected(0, path)]

    collection = EpisodeCollection(path, recursive=recursive)
    n_files = len(collection.paths())
    if n_files == 0:
        hint = "" if recursive else " (add --recursive to look in subdirectories)"
        raise UserError(f"{path}: no episode files (ep-*.h5) in this directory{hint}")
    infos = collection.index(**filters)
    if not infos:
        why = f"none of its {n_files} episode file(s) match {described}" if described else \
            f"none of its {n_files} episode file(s) could be read (run `irevla data check {path}`)"
        raise UserError(f"{path}: {why}")
    selected = [Selected(i, info.path) for i, info in enumerate(infos)]
    if episode is not None:
        return [_pick(selected, str(episode), path, described)]
    return selected[:limit] if limit else selected


def _listed(value: Any) -> Any:
    """None, one value, or a non-empty list (an empty list from argparse means no filter)."""
    if isinstance(value, (list, tuple)):
        return list(value) or None
    return value


def _describe_filters(filters: dict[str, Any]) -> str:
    parts = []
    for name, value in filters.items():
        if value is None:
            continue
        if name == "success":
            parts.append("--success" if value else "--failure")
        else:
            for item in value if isinstance(value, list) else [value]:
                parts.append(f"--{name} {item}")
    return " ".join(parts)


def _pick(selected: list[Selected], wanted: str, directory: Path, described: str) -> Selected:
    among = f"the {len(selected)} episode(s) in {directory}" + (f" that match {described}" if described else "")
    try:
        index = int(wanted)
    except ValueError:
        for item in selected:
            if wanted in (item.path.name, item.path.stem) or Path(wanted).name == item.path.name:
                return item
        raise UserError(f"--episode {wanted}: no file of that name among {among}") from None
    if not 0 <= index < len(selected):
        raise UserError(f"--episode {index}: out of range; {among} have indexes 0..{len(selected) - 1}")
    return selected[index]


def numbered(path: str | Path, index: int, many: bool) -> Path:
    """`path` itself for a single episode; ``<stem>-<index:03d><suffix>`` when there are several."""
    path = Path(path)
    return path.with_name(f"{path.stem}-{index:03d}{path.suffix}") if many else path


# ------------------------------------------------------------------------------------------------------------ rerun
def entity_root(episode: Episode, index: int) -> str:
    """``episodes/<index>_<task name>`` (the task part escaped for rerun's entity paths)."""
    import rerun as rr

    return f"episodes/{rr.escape_entity_path_part(f'{index:03d}_{episode.task.name}')}"


def _info_markdown(episode: Episode, path: Path | None) -> str:
    import json

    rows = [("task", episode.task.full_name), ("instruction", episode.instruction), ("steps (T)", episode.n_steps),
            ("success", episode.success), ("source", episode.source), ("round", episode.round),
            ("created", episode.created), ("cameras", ", ".join(episode.cameras)),
            ("control rate", f"{episode.task.control_hz:g} Hz")]
    if episode.timestamps is not None:
        rows.append(("first timestamp", f"{float(episode.timestamps[0]):.6f} s"))
    if path is not None:
        rows.append(("file", str(path)))
    lines = [f"# {episode.task.full_name}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {str(value).replace('|', '/')} |" for name, value in rows]
    lines += ["", "metadata:", "", "```json", json.dumps(episode.metadata, indent=2, sort_keys=True), "```"]
    return "\n".join(lines)


def log_episode(recording: rr.RecordingStream, episode: Episode, index: int, path: Path | None = None,
                jpeg_quality: int | None = None) -> str:
    """Log one episode into `recording` under ``episodes/<index>_<task>``; returns that entity path."""
    import numpy as np
    import rerun as rr

    root = entity_root(episode, index)
    n_steps = episode.n_steps
    task = episode.task

    def part(name: str) -> str:
        return rr.escape_entity_path_part(name)

    def indexes(count: int) -> list[rr.TimeColumn]:
        columns = [rr.TimeColumn("step", sequence=np.arange(count))]
        if episode.timestamps is not None:
            since_start = episode.timestamps[:count] - episode.timestamps[0]
            columns.append(rr.TimeColumn("time", duration=since_start))
        return columns

    def scalars(entity: str, values: np.ndarray) -> None:
        recording.send_columns(entity, indexes=indexes(len(values)),
                               columns=rr.Scalars.columns(scalars=np.asarray(values, dtype=np.float64)), strict=True)

    def set_step(t: int) -> None:
        recording.set_time("step", sequence=t)
        if episode.timestamps is not None:
            recording.set_time("time", duration=float(episode.timestamps[t] - episode.timestamps[0]))

    recording.log(f"{root}/info", rr.TextDocument(_info_markdown(episode, path), media_type=rr.MediaType.MARKDOWN),
                  static=True, strict=True)
    for i, name in enumerate(task.action_spec.names):
        scalars(f"{root}/action/{part(name)}", episode.actions[:, i])
    for i, name in enumerate(task.observation_spec.proprio_names):
        scalars(f"{root}/proprio/{part(name)}", episode.proprio[:, i])
    scalars(f"{root}/reward", episode.rewards)
    if episode.interventions is not None:
        scalars(f"{root}/intervention", episode.interventions.astype(np.float64))

    depth = getattr(episode, "depth", None) or {}
    for t in range(n_steps + 1):
        set_step(t)
        if t == 0:
            recording.log(f"{root}/instruction", rr.TextLog(episode.instruction), strict=True)
        for camera, frames in episode.images.items():
            image = rr.Image(frames[t])
            if jpeg_quality:
                image = image.compress(jpeg_quality=jpeg_quality)
            recording.log(f"{root}/cameras/{part(camera)}", image, strict=True)
        for camera, frames in depth.items():
            recording.log(f"{root}/depth/{part(camera)}", rr.DepthImage(frames[t], meter=1000.0), strict=True)
    set_step(n_steps)
    recording.log(f"{root}/success", rr.Scalars(1.0 if episode.success else 0.0), strict=True)
    recording.log(f"{root}/outcome", rr.TextLog("success" if episode.success else "failure",
                                                level=rr.TextLogLevel.INFO if episode.success
                                                else rr.TextLogLevel.WARN), strict=True)
    return root


def new_recording(name: str) -> rr.RecordingStream:
    import uuid

    import rerun as rr

    recording = rr.RecordingStream(APPLICATION_ID, recording_id=str(uuid.uuid4()))
    recording.send_recording_name(name)
    return recording


def viewer_executable() -> str:
    """The rerun viewer to spawn: next to this Python (a venv that is not activated) or on PATH."""
    import shutil

    beside = Path(sys.executable).parent / "rerun"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rerun")
    if found is None:
        raise UserError("cannot show episodes: the rerun viewer (`rerun`) is not installed here; "
                        "write a recording with --save out.rrd and open it elsewhere with `rerun out.rrd`")
    return found


def check_display() -> None:
    """On Linux a viewer window needs X11 or Wayland; fail early, before reading any episode."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("cannot show episodes: no display (neither DISPLAY nor WAYLAND_DISPLAY is set); "
                        "write a recording with --save out.rrd and open it with `rerun out.rrd` on a machine "
                        "with a display (or use --sheet out.png / --mp4 out.mp4)")


def open_viewer(rrd: Path, wait_s: float = 2.0) -> subprocess.Popen:
    """Open a saved recording in the rerun viewer, a process of its own: nothing is streamed over a socket, the
    viewer is told to bind 127.0.0.1 should it serve anything, and ``CI=1`` in its environment turns rerun's usage
    analytics off. A viewer that exits at once (no display it can use, a broken install) is a `UserError`."""
    executable = viewer_executable()
    env = {**os.environ, "CI": "1"}
    process = subprocess.Popen([executable, "--new", "--bind", "127.0.0.1", str(rrd)], env=env, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        code = process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        return process  # running: the window is up
    raise UserError(f"the rerun viewer ({executable}) exited at once with status {code} (its messages are above); "
                    f"the recording stays at {rrd}: open it on a machine with a display with `rerun {rrd}`, or use "
                    f"--sheet out.png / --mp4 out.mp4")


# ------------------------------------------------------------------------------------------------ contact sheet
@dataclass(frozen=True)
class Tile:
    """Where frame `step` of `camera` sits on a contact sheet: box = (left, top, right, bottom), right/bottom
    exclusive (PIL's crop box). `kind` is ``rgb`` or ``depth``."""

    camera: str
    step: int
    box: tuple[int, int, int, int]
    kind: str = "rgb"


@dataclass
class Sheet:
    image: Image.Image
    steps: list[int]
    tiles: list[Tile] = field(default_factory=list)
    plotted: bool = False


def sample_steps(n_steps: int, frames: int) -> list[int]:
    """`frames` observation indexes spread evenly over 0..n_steps, first and last included, no repeats."""
    if frames <= 1:
        return [0]
    count = min(frames, n_steps + 1)
    return sorted({round(i * n_steps / (count - 1)) for i in range(count)})


def _font(size: int = 12) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _tile_size(height: int, width: int) -> tuple[int, int]:
    if height < MIN_TILE:
        factor = -(-MIN_TILE // height)
        return width * factor, height * factor
    if height > MAX_TILE:
        return max(1, round(width * MAX_TILE / height)), MAX_TILE
    return width, height


def depth_to_rgb(depth: np.ndarray) -> np.ndarray:
    """uint16 millimetres (..., H, W) -> uint8 RGB grey, near = bright; 0 (no reading) stays black. One scale for
    all frames, from the 1st to the 99th percentile of the valid readings."""
    import numpy as np

    valid = depth[depth > 0]
    if valid.size == 0:
        grey = np.zeros(depth.shape, dtype=np.uint8)
    else:
        near, far = np.percentile(valid, [1, 99])
        span = max(float(far - near), 1.0)
        grey = (255 * (1 - np.clip((depth.astype(np.float32) - near) / span, 0, 1))).astype(np.uint8)
        grey[depth == 0] = 0
    return np.repeat(grey[..., None], 3, axis=-1)


def _wrap(text: str, font: Any, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line] if line else lines


def _plot(episode: Episode, width: int, height: int, steps: Sequence[int]) -> np.ndarray | None:
    """Actions (one line per dimension) and reward / interventions over time as an RGB array; None without
    matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    import numpy as np

    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    steps_axis = np.arange(episode.n_steps)
    for i, name in enumerate(episode.task.action_spec.names):
        top.plot(steps_axis, episode.actions[:, i], lw=1, label=name)
    top.set_ylabel("action", fontsize=8)
    top.legend(fontsize=7, ncol=min(len(episode.task.action_spec.names), 8), loc="upper left", frameon=False)
    bottom.plot(steps_axis, episode.rewards, lw=1, color="tab:green", label="reward")
    if episode.interventions is not None:
        for n, t in enumerate(np.flatnonzero(episode.interventions)):  # action t spans [t, t + 1)
            bottom.axvspan(t, t + 1, alpha=0.25, color="tab:red", lw=0, label=None if n else "intervention")
    outcome = "success" if episode.success else "failure"
    bottom.annotate(outcome, (episode.n_steps, 0.5), xycoords=("data", "axes fraction"), ha="right", fontsize=8,
                    color="tab:green" if episode.success else "tab:red")
    bottom.set_ylabel("reward", fontsize=8)
    bottom.set_xlabel("step t", fontsize=8)
    bottom.legend(fontsize=7, loc="upper left", frameon=False)
    for axis in (top, bottom):
        axis.tick_params(labelsize=7)
        axis.set_xlim(0, max(episode.n_steps, 1))
        for t in steps:
            axis.axvline(t, color="0.8", lw=0.6, zorder=0)
    figure.subplots_adjust(left=0.07, right=0.99, top=0.97, bottom=0.16, hspace=0.08)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def render_sheet(episode: Episode, frames: int = DEFAULT_FRAMES, plot: bool = True, path: Path | None = None,
                 plot_height: int = 260) -> Sheet:
    """A contact sheet of `episode`: header, one row of `frames` evenly sampled frames per camera (and per depth
    camera), each tile labelled ``t=<step>``, and (with matplotlib) an action/reward plot. Tiles show the frames
    pixel for pixel when they are enlarged (nearest neighbour, whole factors)."""
    from PIL import Image, ImageDraw

    font = _font(12)
    line = int(font.getbbox("Ag t=0")[3]) + 4
    steps = sample_steps(episode.n_steps, frames)
    rows: list[tuple[str, str, np.ndarray]] = [(camera, "rgb", array) for camera, array in episode.images.items()]
    depth = getattr(episode, "depth", None) or {}
    rows += [(camera, "depth", depth_to_rgb(array)) for camera, array in depth.items()]

    sizes = [_tile_size(*array.shape[1:3]) for _, _, array in rows]
    width = max(2 * MARGIN + len(steps) * w + (len(steps) - 1) * GAP for w, _ in sizes)
    width = max(width, 480)
    header = [f"{episode.task.full_name} | T={episode.n_steps} | success={'yes' if episode.success else 'no'} | "
              f"source={episode.source} | round={episode.round}",
              f"instruction: {episode.instruction!r}"]
    if path is not None:
        header.append(f"file: {path.name} | created {episode.created}")
    header_lines = [wrapped for text in header for wrapped in _wrap(text, font, width - 2 * MARGIN)]
    plot_array = _plot(episode, width - 2 * MARGIN, plot_height, steps) if plot else None

    height = MARGIN + len(header_lines) * line + GAP
    height += sum(2 * line + h + GAP for _, h in sizes)
    if plot_array is not None:
        height += plot_array.shape[0] + GAP
    height += MARGIN

    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = MARGIN
    for text in header_lines:
        draw.text((MARGIN, y), text, fill=TEXT, font=font)
        y += line
    y += GAP
    tiles = []
    for (camera, kind, array), (w, h) in zip(rows, sizes):
        draw.text((MARGIN, y), f"{camera}{' (depth)' if kind == 'depth' else ''}  {array.shape[2]}x{array.shape[1]}",
                  fill=TEXT, font=font)
        y += line
        for j, t in enumerate(steps):
            x = MARGIN + j * (w + GAP)
            draw.text((x, y), f"t={t}", fill=TEXT, font=font)
            frame = Image.fromarray(array[t])
            if frame.size != (w, h):
                shrink = h < array.shape[1]
                frame = frame.resize((w, h), Image.Resampling.BILINEAR if shrink else Image.Resampling.NEAREST)
            sheet.paste(frame, (x, y + line))
            tiles.append(Tile(camera, t, (x, y + line, x + w, y + line + h), kind))
        y += line + h + GAP
    if plot_array is not None:
        sheet.paste(Image.fromarray(plot_array), (MARGIN, y))
    return Sheet(image=sheet, steps=steps, tiles=tiles, plotted=plot_array is not None)


def write_sheet(episode: Episode, out: str | Path, frames: int = DEFAULT_FRAMES, plot: bool = True,
                path: Path | None = None) -> Path:
    """Render and write the contact sheet as a PNG, atomically."""
    import io

    from irevla.atomic_io import atomic_write_bytes

    buffer = io.BytesIO()
    render_sheet(episode, frames=frames, plot=plot, path=path).image.save(buffer, format="PNG", optimize=False)
    return atomic_write_bytes(out, buffer.getvalue())


# ----------------------------------------------------------------------------------------------------------- video
def side_by_side(episode: Episode) -> np.ndarray:
    """uint8 (T+1, H, W, 3): the cameras left to right (in task order), shorter ones padded black at the bottom,
    H and W rounded up to even numbers (H.264 with 4:2:0 chroma needs them)."""
    import numpy as np

    arrays = list(episode.images.values())
    height = max(a.shape[1] for a in arrays)
    width = sum(a.shape[2] for a in arrays)
    out = np.zeros((episode.n_steps + 1, height + height % 2, width + width % 2, 3), dtype=np.uint8)
    x = 0
    for array in arrays:
        out[:, :array.shape[1], x:x + array.shape[2]] = array
        x += array.shape[2]
    return out


def write_mp4(episode: Episode, out: str | Path, crf: int = 18) -> Path:
    """The cameras side by side as H.264 (yuv420p) at ``task.control_hz``, one frame per observation. Written to
    a temporary file in the target folder and renamed into place: on any error nothing is left behind."""
    import tempfile
    from fractions import Fraction

    import av

    from irevla.atomic_io import commit_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    video = side_by_side(episode)
    rate = Fraction(episode.task.control_hz).limit_denominator(1001)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    try:
        with av.open(temporary, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height = video.shape[2], video.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "medium"}
            for frame in video:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        os.chmod(temporary, 0o666 & ~_umask())
        return commit_file(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------------------- command
@dataclass
class Written:
    rrd: Path | None = None
    sheets: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    episodes: int = 0


def _episodes(selection: Sequence[Selected], progress: bool) -> Iterator[tuple[Selected, Episode]]:
    from tqdm.auto import tqdm

    from irevla.data.episode_file import read_episode

    for item in tqdm(selection, desc="viewing episodes", unit="episode", disable=not progress, leave=False):
        yield item, read_episode(item.path)


def view(selection: Sequence[Selected], save: Path | None = None, sheet: Path | None = None,
         mp4: Path | None = None, spawn: bool = False, frames: int = DEFAULT_FRAMES, plot: bool = True,
         jpeg_quality: int | None = None, progress: bool = True) -> Written:
    """Read each selected episode once and write every requested output; `spawn` streams to a new local viewer."""
    written = Written()
    many = len(selection) > 1
    recording = None
    temporary = None
    if spawn and save is None:  # the viewer opens a recording written here first
        import tempfile

        save = Path(tempfile.mkdtemp(prefix="irevla-view-")) / "episodes.rrd"
    if save is not None:
        recording = new_recording(save.name)
        if save is not None:
            save = Path(save)
            save.parent.mkdir(parents=True, exist_ok=True)
            temporary = save.with_name(f".{save.name}.tmp-{os.getpid()}")
            recording.save(temporary)
    try:
        for item, episode in _episodes(selection, progress and many):
            if recording is not None:
                log_episode(recording, episode, item.index, path=item.path, jpeg_quality=jpeg_quality)
            if sheet is not None:
                written.sheets.append(write_sheet(episode, numbered(sheet, item.index, many), frames=frames,
                                                  plot=plot, path=item.path))
            if mp4 is not None:
                written.videos.append(write_mp4(episode, numbered(mp4, item.index, many)))
            written.episodes += 1
        if recording is not None:
            try:
                recording.flush()
            except RuntimeError as exc:
                raise UserError(f"rerun could not write the recording: {exc}") from None
            recording.disconnect()  # writes the .rrd footer and closes the file
        if temporary is not None:
            from irevla.atomic_io import commit_file

            written.rrd = commit_file(temporary, save)
            temporary = None
        if spawn:
            open_viewer(written.rrd)
    finally:
        if temporary is not None:
            if recording is not None:
                recording.disconnect()
            Path(temporary).unlink(missing_ok=True)
    return written


def _size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _list(paths: list[Path]) -> str:
    if len(paths) <= 3:
        return ", ".join(str(p) for p in paths)
    return f"{paths[0]}, {paths[1]} ... {paths[-1]}"


def run(args: argparse.Namespace) -> int:
    """``irevla data view``: select, then write .rrd / PNG / MP4, or spawn the rerun viewer."""
    spawn = args.save is None and args.sheet is None and args.mp4 is None
    if spawn:
        check_display()  # before reading anything: the usual headless mistake gets its answer at once
        viewer_executable()
    selection = select_episodes(args.path, task=args.task, success=args.success, source=args.source,
                                round=args.round, episode=args.episode, limit=args.limit,
                                recursive=args.recursive)
    written = view(selection, save=args.save, sheet=args.sheet, mp4=args.mp4, spawn=spawn, frames=args.frames,
                   plot=args.plot, jpeg_quality=args.jpeg)
    noun = "episode" if written.episodes == 1 else "episodes"
    if written.rrd is not None and not spawn:
        print(f"wrote {written.rrd} ({written.episodes} {noun}, {_size(written.rrd)}); open it with "
              f"`rerun {written.rrd}`")
    if written.sheets:
        print(f"wrote {len(written.sheets)} contact sheet(s): {_list(written.sheets)}")
    if written.videos:
        print(f"wrote {len(written.videos)} video(s): {_list(written.videos)}")
    if spawn:
        print(f"opened {written.episodes} {noun} in the rerun viewer (recording: {written.rrd})")
    return 0
