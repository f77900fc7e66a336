"""Episode store: one crash-safe HDF5 file per episode, validating reader, statistics, torch Dataset.

Modules (the torch Dataset is imported on its own so the rest works without torch):

* `irevla.data.episode`       -- `Episode` (validated, in memory) and `EpisodeBuilder` (step-by-step recorder)
* `irevla.data.episode_file`  -- the HDF5 file format (documented there), crash-safe writer, validating readers
* `irevla.data.store`         -- `EpisodeStore` / `EpisodeCollection`: directories of episodes, index, check, summary
* `irevla.data.split`         -- deterministic train/val split by episode
* `irevla.data.stats`         -- per-dimension action/proprio statistics, JSON save/load
* `irevla.data.torch_dataset` -- `EpisodeStepDataset` (imports torch)
"""

from irevla.data.episode import Episode, EpisodeBuilder
from irevla.data.episode_file import (
    EpisodeFormatError,
    EpisodeInfo,
    FrameReader,
    cleanup_stale_temp,
    read_episode,
    read_info,
    write_episode_file,
)
from irevla.data.split import split_by_episode
from irevla.data.stats import ArrayStats, DatasetStats, compute_stats
from irevla.data.store import EpisodeCollection, EpisodeStore, check_directories, format_summary

__all__ = [
    "ArrayStats", "DatasetStats", "Episode", "EpisodeBuilder", "EpisodeCollection", "EpisodeFormatError",
    "EpisodeInfo", "EpisodeStore", "FrameReader", "check_directories", "cleanup_stale_temp", "compute_stats",
    "format_summary", "read_episode", "read_info", "split_by_episode", "write_episode_file",
]
