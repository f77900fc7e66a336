"""Directories of episode files: write, index, filter, check and summarise.

There is no index file. The index is rebuilt by scanning the directories for ``ep-*.h5`` and reading each file's
attributes (`read_info`, no array data), so it cannot go stale or lose an episode, and copying or deleting files is
all the bookkeeping there is. Several directories combine into one collection: stage 2 of iRe-VLA trains on
``EpisodeCollection([expert_dir, rl_dir])`` (D_e ∪ D_RL).

>>> store = EpisodeStore("runs/demo/expert")
>>> path = store.write(episode)                         # crash-safe, see irevla.data.episode_file
>>> infos = store.index(task="button-press-v3", success=True)
>>> print(format_summary(["runs/demo/expert", "runs/demo/rl"]))
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from irevla.data.episode import Episode
from irevla.data.episode_file import (
    DEFAULT_COMPRESSION,
    EpisodeFormatError,
    EpisodeInfo,
    cleanup_stale_temp,
    list_episode_files,
    list_temp_files,
    read_episode,
    read_info,
    write_episode_file,
)
from irevla.errors import MissingFileError

log = logging.getLogger(__name__)

PathLike = str | Path
Problem = tuple[Path, str]


def _wanted(value: object, wanted: object) -> bool:
    """`wanted` is None (anything), one value, or a collection of accepted values."""
    if wanted is None:
        return True
    if isinstance(wanted, Collection) and not isinstance(wanted, str):
        return value in wanted
    return value == wanted


def matches(info: EpisodeInfo, task: str | Collection[str] | None = None, source: str | Collection[str] | None = None,
            success: bool | None = None, round: int | Collection[int] | None = None) -> bool:
    """Filter used by `index`: `task` matches the task's `name` or its `full_name` (family/name@variation#seed)."""
    task_ok = _wanted(info.task.name, task) or _wanted(info.task.full_name, task)
    return task_ok and _wanted(info.source, source) and _wanted(info.success, success) and _wanted(info.round, round)


@dataclass
class TaskSummary:
    task: str
    episodes: int = 0
    successes: int = 0
    steps: int = 0
    sources: Counter = field(default_factory=Counter)
    rounds: Counter = field(default_factory=Counter)


@dataclass
class StoreSummary:
    """Counts over a collection; `format()` renders the table `irevla data info` prints."""

    dirs: tuple[Path, ...]
    tasks: dict[str, TaskSummary] = field(default_factory=dict)
    bytes_on_disk: int = 0
    unreadable: list[Problem] = field(default_factory=list)
    temp_files: int = 0

    @property
    def episodes(self) -> int:
        return sum(t.episodes for t in self.tasks.values())

    @property
    def successes(self) -> int:
        return sum(t.successes for t in self.tasks.values())

    @property
    def steps(self) -> int:
        return sum(t.steps for t in self.tasks.values())

    @property
    def sources(self) -> Counter:
        return sum((t.sources for t in self.tasks.values()), Counter())

    @property
    def rounds(self) -> Counter:
        return sum((t.rounds for t in self.tasks.values()), Counter())

    def format(self) -> str:
        header = ("task", "episodes", "success", "rate", "steps", "sources", "rounds")
        rows = [(t.task, str(t.episodes), str(t.successes), _rate(t.successes, t.episodes), str(t.steps),
                 _counts(t.sources), _counts(t.rounds)) for t in sorted(self.tasks.values(), key=lambda t: t.task)]
        total = ("total", str(self.episodes), str(self.successes), _rate(self.successes, self.episodes),
                 str(self.steps), _counts(self.sources), _counts(self.rounds))
        widths = [max(len(row[i]) for row in (header, *rows, total)) for i in range(len(header))]

        def line(row: Sequence[str]) -> str:
            # Text columns left-aligned, numbers right-aligned.
            return "  ".join(c.ljust(w) if i in (0, 5, 6) else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

        rule = "-" * len(line(header))
        lines = [f"episodes in {', '.join(str(d) for d in self.dirs)}: {self.episodes} "
                 f"({_human_bytes(self.bytes_on_disk)} on disk)", line(header), rule, *map(line, rows)]
        if rows:
            lines += [rule, line(total)]
        else:
            lines.append("(no episodes)")
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} unreadable episode file(s), not counted above; "
                         f"`irevla data check` lists them:")
            lines += [f"  {path}: {problem}" for path, problem in self.unreadable[:10]]
            if len(self.unreadable) > 10:
                lines.append(f"  ... and {len(self.unreadable) - 10} more")
        if self.temp_files:
            lines.append(f"{self.temp_files} temp file(s) from interrupted writes (hidden from readers; "
                         f"EpisodeStore.cleanup_stale_temp removes them)")
        return "\n".join(lines)


def _rate(successes: int, episodes: int) -> str:
    return f"{100.0 * successes / episodes:.0f}%" if episodes else "-"


def _counts(counter: Counter) -> str:
    return " ".join(f"{key}:{n}" for key, n in sorted(counter.items(), key=lambda kv: str(kv[0])))


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def check_files(paths: Sequence[Path], deep: bool = True, progress: bool = False) -> list[Problem]:
    """(path, problem) for every file in `paths` that does not read back as a valid episode; never stops early.

    `progress` shows a bar on stderr: a deep check reads every frame, minutes for a large dataset.
    """
    problems = []
    for path in tqdm(paths, desc="checking episodes", unit="file", disable=not progress, leave=False):
        try:
            read_episode(path) if deep else read_info(path)
        except FileNotFoundError:
            problems.append((path, "file disappeared while checking"))
        except EpisodeFormatError as exc:
            problems.append((path, exc.problem))
    return problems


class EpisodeCollection:
    """Read-only view over the episode files in one or more directories."""

    def __init__(self, dirs: PathLike | Sequence[PathLike], recursive: bool = False) -> None:
        dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
        if not dirs:
            raise ValueError("EpisodeCollection: give at least one directory")
        unique: dict[Path, Path] = {}
        for directory in map(Path, dirs):
            if not directory.is_dir():
                raise MissingFileError(f"{directory}: episode directory does not exist")
            unique.setdefault(directory.resolve(), directory)  # the same directory twice would double-count
        self.dirs: tuple[Path, ...] = tuple(unique.values())
        self.recursive = recursive

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[str(d) for d in self.dirs]})"

    def paths(self) -> list[Path]:
        """Every committed episode file, sorted by directory then name (= creation time)."""
        return [path for directory in self.dirs for path in list_episode_files(directory, self.recursive)]

    def temp_files(self) -> list[Path]:
        return [path for directory in self.dirs for path in list_temp_files(directory, self.recursive)]

    def index(self, task: str | Collection[str] | None = None, source: str | Collection[str] | None = None,
              success: bool | None = None, round: int | Collection[int] | None = None) -> list[EpisodeInfo]:
        """Info records of the readable episodes that pass the filters; unreadable files are logged and skipped."""
        infos = []
        for path in self.paths():
            try:
                info = read_info(path)
            except FileNotFoundError:  # deleted between listing and reading
                continue
            except EpisodeFormatError as exc:
                log.warning("skipping unreadable episode %s (run `irevla data check`)", exc)
                continue
            if matches(info, task=task, source=source, success=success, round=round):
                infos.append(info)
        return infos

    def episodes(self, **filters: object) -> Iterator[Episode]:
        """Read the episodes that pass `index`'s filters, one at a time."""
        for info in self.index(**filters):  # type: ignore[arg-type]
            yield read_episode(info.path)

    def check(self, deep: bool = True) -> list[Problem]:
        """(path, problem) for EVERY bad episode file. `deep` reads all array data (verifying checksums);
        otherwise only attributes and dataset shapes are checked."""
        return check_files(self.paths(), deep=deep)

    def summary(self) -> StoreSummary:
        """Episodes per task (full name), successes, steps, sources, rounds, bytes; from attributes only."""
        summary = StoreSummary(dirs=self.dirs, temp_files=len(self.temp_files()))
        for path in self.paths():
            try:
                summary.bytes_on_disk += path.stat().st_size
                info = read_info(path)
            except FileNotFoundError:
                continue
            except EpisodeFormatError as exc:
                summary.unreadable.append((path, exc.problem))
                continue
            name = info.task.full_name
            task = summary.tasks.setdefault(name, TaskSummary(task=name))
            task.episodes += 1
            task.successes += int(info.success)
            task.steps += info.n_steps
            task.sources[info.source] += 1
            task.rounds[info.round] += 1
        return summary


class EpisodeStore(EpisodeCollection):
    """One directory that episodes are written to (created if missing)."""

    def __init__(self, root: PathLike, compression: str = DEFAULT_COMPRESSION, create: bool = True) -> None:
        root = Path(root)
        if create:
            root.mkdir(parents=True, exist_ok=True)
        super().__init__([root])
        self.root = root
        self.compression = compression

    def write(self, episode: Episode) -> Path:
        """Write crash-safely; the episode is visible to readers only once complete. Returns its path."""
        return write_episode_file(episode, self.root, self.compression)

    def cleanup_stale_temp(self, older_than_s: float = 3600.0) -> list[Path]:
        """Remove temp files abandoned by crashed writers (see `irevla.data.episode_file.cleanup_stale_temp`)."""
        return cleanup_stale_temp(self.root, older_than_s)


# ------------------------------------------------------------------------------------------------ CLI entry points
def check_directories(dirs: Sequence[PathLike], deep: bool = True, progress: bool = False
                      ) -> tuple[int, list[Problem]]:
    """For `irevla data check DIR...`: (number of good episode files, [(path, problem)] for every bad one).

    A directory that does not exist is reported as a problem too, so the caller exits non-zero for it.
    """
    n_ok = 0
    problems: list[Problem] = []
    for directory in map(Path, dirs):
        if not directory.is_dir():
            problems.append((directory, "not a directory (no episodes checked)"))
            continue
        paths = EpisodeCollection([directory]).paths()
        bad = check_files(paths, deep=deep, progress=progress)
        n_ok += len(paths) - len(bad)
        problems.extend(bad)
    return n_ok, problems


def format_summary(dirs: Sequence[PathLike]) -> str:
    """For `irevla data info DIR...`: a table of episodes per task over all `dirs` together.

    Raises FileNotFoundError naming a directory that does not exist.
    """
    return EpisodeCollection(dirs).summary().format()
