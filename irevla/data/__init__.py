"""Episode store: one crash-safe HDF5 file per episode, validating reader, statistics, torch Dataset.

Modules (the torch Dataset is imported on its own so the rest works without torch):

* `irevla.data.episode`       -- `Episode` (validated, in memory) and `EpisodeBuilder` (step-by-step recorder)
* `irevla.data.episode_file`  -- the HDF5 file format (documented there), crash-safe writer, validating readers
* `irevla.data.store`         -- `EpisodeStore` / `EpisodeCollection`: directories of episodes, index, check, summary
* `irevla.data.split`         -- deterministic train/val split by episode
* `irevla.data.stats`         -- per-dimension action/proprio statistics, JSON save/load
* `irevla.data.torch_dataset` -- `EpisodeStepDataset` (imports torch)
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562): importing one submodule -- irevla.data.stats, which the policy needs --
# does not pull in h5py with the episode file format (a GPU image that only runs the policy has no h5py).
_SOURCES = {
    "Episode": "episode", "EpisodeBuilder": "episode",
    "EpisodeFormatError": "episode_file", "EpisodeInfo": "episode_file", "FrameReader": "episode_file",
    "cleanup_stale_temp": "episode_file", "read_episode": "episode_file", "read_info": "episode_file",
    "write_episode_file": "episode_file",
    "split_by_episode": "split",
    "ArrayStats": "stats", "DatasetStats": "stats", "compute_stats": "stats",
    "EpisodeCollection": "store", "EpisodeStore": "store", "check_directories": "store", "format_summary": "store",
}
__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'irevla.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"irevla.data.{_SOURCES[name]}"), name)
