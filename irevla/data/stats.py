"""Per-dimension statistics of actions and proprio, for normalisation; saved and loaded as JSON.

For each of ``action`` (over every step's action, T per episode) and ``proprio`` (over every observation, T + 1 per
episode, so next-observations used by RL are covered too): ``mean``, ``std`` (population, ddof=0), ``min``,
``max``, ``q01`` and ``q99`` (1st/99th percentiles, numpy's default linear interpolation), computed in float64
from the exact data (not a sketch). ``std`` may be 0 for a constant dimension: normalisers must guard against it.

JSON layout::

    {"format": "irevla-stats", "version": 1, "n_episodes": 20, "n_steps": 1000,
     "action":  {"names": ["dx", ...], "count": 1000, "mean": [...], "std": [...], "min": [...], "max": [...],
                 "q01": [...], "q99": [...]},
     "proprio": {"names": ["ee_x", ...], "count": 1020, ...}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irevla.atomic_io import atomic_write_text
from irevla.data.episode import Episode
from irevla.spec import ContractError

STATS_FORMAT = "irevla-stats"
STATS_VERSION = 1
STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")


@dataclass(frozen=True)
class ArrayStats:
    """Statistics of one (N, D) array, per dimension; every array is float64 of shape (D,)."""

    names: tuple[str, ...]
    count: int
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    @classmethod
    def from_samples(cls, samples: np.ndarray, names: Sequence[str]) -> ArrayStats:
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[0] == 0 or samples.shape[1] != len(names):
            raise ValueError(f"ArrayStats: expected a non-empty (N, {len(names)}) array, got {samples.shape}")
        q01, q99 = np.quantile(samples, [0.01, 0.99], axis=0)
        return cls(names=tuple(names), count=int(samples.shape[0]), mean=samples.mean(axis=0),
                   std=samples.std(axis=0), min=samples.min(axis=0), max=samples.max(axis=0), q01=q01, q99=q99)

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "count": self.count,
                **{stat: getattr(self, stat).tolist() for stat in STAT_NAMES}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stats") -> ArrayStats:
        missing = [key for key in ("names", "count", *STAT_NAMES) if key not in data]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}")
        names = tuple(str(n) for n in data["names"])
        values = {}
        for stat in STAT_NAMES:
            array = np.asarray(data[stat], dtype=np.float64)
            if array.shape != (len(names),):
                raise ValueError(f"{where}.{stat}: expected {len(names)} values (one per name), got {array.shape}")
            values[stat] = array
        return cls(names=names, count=int(data["count"]), **values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArrayStats):
            return NotImplemented
        return (self.names, self.count) == (other.names, other.count) and all(
            np.array_equal(getattr(self, s), getattr(other, s)) for s in STAT_NAMES)

    __hash__ = None


@dataclass(frozen=True)
class DatasetStats:
    action: ArrayStats
    proprio: ArrayStats
    n_episodes: int
    n_steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATS_FORMAT, "version": STATS_VERSION, "n_episodes": self.n_episodes,
                "n_steps": self.n_steps, "action": self.action.to_dict(), "proprio": self.proprio.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stats") -> DatasetStats:
        if not isinstance(data, Mapping) or data.get("format") != STATS_FORMAT:
            raise ValueError(f"{where}: not an irevla statistics file (expected format {STATS_FORMAT!r})")
        if data.get("version") != STATS_VERSION:
            raise ValueError(f"{where}: statistics version {data.get('version')!r} is not supported "
                             f"(this irevla reads {STATS_VERSION})")
        for key in ("action", "proprio", "n_episodes", "n_steps"):
            if key not in data:
                raise ValueError(f"{where}: missing key {key!r}")
        return cls(action=ArrayStats.from_dict(data["action"], f"{where}: action"),
                   proprio=ArrayStats.from_dict(data["proprio"], f"{where}: proprio"),
                   n_episodes=int(data["n_episodes"]), n_steps=int(data["n_steps"]))

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (temp file + fsync + rename), so a crash never leaves half a stats file."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> DatasetStats:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        return cls.from_dict(data, where=str(path))


def compute_stats(episodes: Sequence[Any]) -> DatasetStats:
    """Statistics over `episodes`: paths, EpisodeInfo records (anything with `.path`) or in-memory Episodes.

    Only the small datasets are read from files (never images). All episodes must share action and proprio
    names: per-dimension statistics over mixed action spaces would mean nothing.
    """
    if not episodes:
        raise ValueError("compute_stats: no episodes given")
    actions, proprios = [], []
    action_names = proprio_names = None
    for item in episodes:
        if isinstance(item, Episode):
            task, where = item.task, repr(item)
            episode_actions, episode_proprio = item.actions, item.proprio
        else:
            path = Path(getattr(item, "path", item))
            from irevla.data.episode_file import read_lowdim  # h5py: only when reading episode files

            info, arrays = read_lowdim(path)
            task, where = info.task, str(path)
            episode_actions, episode_proprio = arrays["actions"], arrays["proprio"]
        names = (task.action_spec.names, task.observation_spec.proprio_names)
        if action_names is None:
            action_names, proprio_names = names
        elif names != (action_names, proprio_names):
            raise ContractError(f"{where}: action/proprio names {names} differ from the first episode's "
                                f"{(action_names, proprio_names)}; compute statistics per action space")
        actions.append(episode_actions)
        proprios.append(episode_proprio)
    return stats_from_arrays(actions, proprios, action_names, proprio_names)


def stats_from_arrays(actions: Sequence[np.ndarray], proprios: Sequence[np.ndarray], action_names: Sequence[str],
                      proprio_names: Sequence[str]) -> DatasetStats:
    """Statistics from per-episode arrays already in memory: actions (T_i, A) and proprio (T_i + 1, P)."""
    if not actions or len(actions) != len(proprios):
        raise ValueError(f"stats_from_arrays: need one actions and one proprio array per episode, got "
                         f"{len(actions)} and {len(proprios)}")
    return DatasetStats(action=ArrayStats.from_samples(np.concatenate(actions), action_names),
                        proprio=ArrayStats.from_samples(np.concatenate(proprios), proprio_names),
                        n_episodes=len(actions), n_steps=sum(len(a) for a in actions))
