"""Train/validation split by episode: every step of an episode lands on the same side, never both.

The split is a pure function of each episode's id (file name) and the seed: an episode goes to validation when
``sha256(f"{seed}:{id}")``, read as a number in [0, 1), is below `val_fraction`. So it does not depend on listing
order or on which directory a file sits in, a copy of a file goes to the same side as the original, and adding
episodes never moves an existing one across (iRe-VLA grows D_e and D_RL every round: last round's validation episodes
must not leak into this round's training set). Only for tiny sets, where the threshold would leave one side empty,
the episode(s) with the smallest key(s) are moved to make both sides non-empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

Item = TypeVar("Item")


def episode_id(item: object) -> str:
    """The id of a Path / str path / EpisodeInfo (anything with `.path`): the file name."""
    path = getattr(item, "path", item)
    if not isinstance(path, (str, Path)):
        raise TypeError(f"split_by_episode: expected paths or EpisodeInfo records, got {type(item).__name__}")
    return Path(path).name


def _split_key(seed: int, identifier: str) -> bytes:
    return hashlib.sha256(f"{seed}:{identifier}".encode()).digest()


def _unit(key: bytes) -> float:
    return int.from_bytes(key[:8], "big") / 2**64


def split_by_episode(episodes: Sequence[Item], val_fraction: float = 0.1, seed: int = 0
                     ) -> tuple[list[Item], list[Item]]:
    """Split `episodes` (paths or EpisodeInfo records) into (train, val), keeping the input order on each side.

    With 0 < val_fraction < 1 and at least two distinct episodes, both sides get at least one episode.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction: expected 0..1, got {val_fraction}")
    ids = sorted({episode_id(item) for item in episodes}, key=lambda i: _split_key(seed, i))
    val_ids = {i for i in ids if _unit(_split_key(seed, i)) < val_fraction}
    if 0.0 < val_fraction < 1.0 and len(ids) >= 2:
        if not val_ids:
            val_ids = {ids[0]}
        elif len(val_ids) == len(ids):
            val_ids = set(ids[:-1])
    train = [item for item in episodes if episode_id(item) not in val_ids]
    val = [item for item in episodes if episode_id(item) in val_ids]
    return train, val
