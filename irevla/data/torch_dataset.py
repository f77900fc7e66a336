"""A torch `Dataset` of training samples, one per (episode, step), over many episode files.

This is the only module of `irevla.data` that imports torch; the rest works without it.

Each sample is a dict:

================  ===========================================  =====================================================
key               value                                        notes
================  ===========================================  =====================================================
images            {camera: torch.uint8 tensor}                 (H, W, 3) with ``image_layout="hwc"`` (default, as in
                                                               the contract) or (3, H, W) with ``"chw"``; RGB, 0..255
proprio           torch.float32 (P,)                           observation t
action            torch.float32 (A,)  or (k, A)                action t; with ``action_chunk=k`` the actions
                                                               t .. t+k-1, past the end padded by repeating the last
action_mask       torch.bool (k,)                              only with ``action_chunk``: True = real, False = pad
instruction       str
task              str                                          ``task.name`` (e.g. ``button-press-v3``)
episode           int                                          index into ``dataset.infos``
step              int                                          t, 0 <= t < T (the final observation has no action)
================  ===========================================  =====================================================

The default collate function batches these (tensors stacked, strings into lists, ints into a tensor).

Access pattern: random (episode, step) reads. At construction the dataset validates every file and keeps its
small arrays (proprio, actions: a few KB per episode) in memory, so a sample reads exactly one compressed frame chunk
per camera from disk. Each worker process opens episode files lazily on first use and keeps them open (LRU,
`max_open_files`). HDF5 handles are never shared across fork: a process that finds handles opened under another
process id (its parent, before the DataLoader forked it) drops them and opens its own. ``cache=True`` also reads
every frame into memory up front, which forked workers then share copy-on-write: use it for small datasets.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from irevla.data.episode_file import EpisodeInfo, FrameReader, read_episode, read_lowdim
from irevla.data.stats import DatasetStats, stats_from_arrays
from irevla.data.store import EpisodeCollection
from irevla.spec import ContractError


@dataclass
class _CachedFrames:
    """In-memory stand-in for a FrameReader (``cache=True``)."""

    images: Mapping[str, np.ndarray]

    def frame(self, camera: str, t: int) -> np.ndarray:
        return self.images[camera][t]

    def close(self) -> None:
        pass


class EpisodeStepDataset(Dataset):
    """Samples (episode, step) from episode files; see the module docstring for the sample layout."""

    def __init__(self, episodes: Sequence[str | Path | EpisodeInfo], *, action_chunk: int | None = None,
                 image_layout: Literal["hwc", "chw"] = "hwc", cameras: Sequence[str] | None = None,
                 cache: bool = False, max_open_files: int = 128) -> None:
        if action_chunk is not None and action_chunk < 1:
            raise ValueError(f"action_chunk: expected None or >= 1, got {action_chunk}")
        if image_layout not in ("hwc", "chw"):
            raise ValueError(f"image_layout: expected 'hwc' or 'chw', got {image_layout!r}")
        if max_open_files < 1:
            raise ValueError(f"max_open_files: expected >= 1, got {max_open_files}")
        self.infos: list[EpisodeInfo] = []
        self._proprio: list[np.ndarray] = []  # per episode, (T+1, P)
        self._actions: list[np.ndarray] = []  # per episode, (T, A)
        for item in episodes:
            # Validates the file's layout (and the small arrays' values) once, here, instead of in every worker.
            info, arrays = read_lowdim(getattr(item, "path", item))
            self.infos.append(info)
            self._proprio.append(arrays["proprio"])
            self._actions.append(arrays["actions"])
        if not self.infos:
            raise ValueError("EpisodeStepDataset: no episodes given")
        self.cameras: tuple[str, ...] = tuple(cameras) if cameras is not None else self.infos[0].cameras
        self._check_batchable()
        self.action_chunk = action_chunk
        self.image_layout = image_layout
        self.max_open_files = max_open_files
        # Sample i is step i - offsets[e] of episode e, where offsets[e] <= i < offsets[e + 1].
        self._offsets = np.cumsum([0] + [info.n_steps for info in self.infos], dtype=np.int64)
        self._cache: list[_CachedFrames] | None = None
        if cache:
            self._cache = []
            for info in self.infos:
                episode = read_episode(info.path)
                self._cache.append(_CachedFrames({c: episode.images[c] for c in self.cameras}))
        self._readers: OrderedDict[int, FrameReader] = OrderedDict()
        self._readers_pid = os.getpid()

    def _check_batchable(self) -> None:
        """Every sample must have the same shapes, or the DataLoader fails later with a less helpful message."""
        def shapes(info: EpisodeInfo) -> dict[str, Any]:
            spec = info.task.observation_spec
            return {"action dim": info.task.action_spec.dim, "proprio dim": len(spec.proprio_names),
                    **{f"camera {c!r} size": spec.cameras.get(c) for c in self.cameras}}

        first = self.infos[0]
        for info in self.infos:
            missing = set(self.cameras) - set(info.cameras)
            if missing:
                raise ContractError(f"{info.path}: has no camera(s) {sorted(missing)} (it has {list(info.cameras)}); "
                                    f"pass cameras= to use the ones every episode has")
            for name, value in shapes(info).items():
                if value != shapes(first)[name]:
                    raise ContractError(f"{info.path}: {name} is {value}, but {shapes(first)[name]} in "
                                        f"{first.path}; samples of one dataset must have the same shapes")

    @classmethod
    def from_dirs(cls, dirs: str | Path | Sequence[str | Path], *, task: Any = None, source: Any = None,
                  success: bool | None = None, round: Any = None, **options: Any) -> EpisodeStepDataset:
        """All episodes in `dirs` passing `EpisodeCollection.index`'s filters, e.g. ``success=True``."""
        infos = EpisodeCollection(dirs).index(task=task, source=source, success=success, round=round)
        return cls(infos, **options)

    # ------------------------------------------------------------------------------------------------- indexing
    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def n_episodes(self) -> int:
        return len(self.infos)

    def locate(self, index: int) -> tuple[int, int]:
        """(episode, step) of sample `index`."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"sample {index} out of range (dataset has {n})")
        episode = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return episode, index - int(self._offsets[episode])

    def _frames(self, episode: int) -> FrameReader | _CachedFrames:
        if self._cache is not None:
            return self._cache[episode]
        if self._readers_pid != os.getpid():
            # We are a forked DataLoader worker holding copies of the parent's HDF5 handles. Forget them (they are
            # read-only, so dropping them cannot harm the parent's copies) and open files of our own.
            self._readers = OrderedDict()
            self._readers_pid = os.getpid()
        reader = self._readers.get(episode)
        if reader is None:
            reader = FrameReader(self.infos[episode].path, self.cameras)
            self._readers[episode] = reader
            if len(self._readers) > self.max_open_files:
                _, oldest = self._readers.popitem(last=False)
                oldest.close()
        else:
            self._readers.move_to_end(episode)
        return reader

    def __getitem__(self, index: int) -> dict[str, Any]:
        episode, step = self.locate(index)
        frames = self._frames(episode)
        info = self.infos[episode]
        images = {}
        for camera in self.cameras:
            # A copy: the sample must not alias the cache (in-place augmentation would corrupt it).
            frame = torch.from_numpy(np.array(frames.frame(camera, step), copy=True))
            images[camera] = frame.permute(2, 0, 1).contiguous() if self.image_layout == "chw" else frame
        sample: dict[str, Any] = {
            "images": images,
            "proprio": torch.from_numpy(self._proprio[episode][step].copy()),
            "instruction": info.instruction,
            "task": info.task.name,
            "episode": episode,
            "step": step,
        }
        if self.action_chunk is None:
            sample["action"] = torch.from_numpy(self._actions[episode][step].copy())
        else:
            n_steps = info.n_steps
            wanted = np.arange(step, step + self.action_chunk)
            sample["action"] = torch.from_numpy(self._actions[episode][np.minimum(wanted, n_steps - 1)])
            sample["action_mask"] = torch.from_numpy(wanted < n_steps)
        return sample

    # ------------------------------------------------------------------------------------------------ utilities
    def statistics(self) -> DatasetStats:
        """Action/proprio statistics over this dataset's episodes (use the TRAIN split's for normalisation)."""
        first = self.infos[0].task
        for info in self.infos:
            if (info.task.action_spec.names, info.task.observation_spec.proprio_names) != (
                    first.action_spec.names, first.observation_spec.proprio_names):
                raise ContractError(f"{info.path}: action/proprio names differ from {self.infos[0].path}'s; "
                                    f"compute statistics per action space")
        return stats_from_arrays(self._actions, self._proprio, first.action_spec.names,
                                 first.observation_spec.proprio_names)

    def close(self) -> None:
        """Close this process's open files (they reopen lazily on the next access)."""
        if self._readers_pid == os.getpid():
            for reader in self._readers.values():
                reader.close()
        self._readers = OrderedDict()
        self._readers_pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        # Spawned DataLoader workers receive a copy of the dataset: send it without open HDF5 handles.
        state = dict(self.__dict__)
        state["_readers"] = OrderedDict()
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass
