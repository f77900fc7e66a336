"""Replay of latents: each observation stored once, next observations found by index.

Slot ``i`` of the ring holds one observation (latent, mask, raw proprio) and, unless it is an episode's final
observation, the action taken there, the reward that followed and whether the episode terminated. Transition ``i``
is ``(obs_i, action_i, reward_i, terminal_i, obs_{i+1})``; it is sampleable (``valid[i]``) once slot ``i + 1`` holds
the same episode's next observation. The ring writes slots in order, so overwriting the oldest slot ``j`` loses
observation ``j``: transition ``j`` is invalidated; transition ``j - 1`` was rewritten just before (it is the
newest slot), so no stale transition can point at ``j``. Index arithmetic thus stays right across the ring's wrap and
episode boundaries. `add_episode` can store a subset of an episode's transitions (``keep``): each run of kept
steps is written as a piece that ends in its true next observation, so next-obs-by-index holds for pieces too. An
episode still open when a snapshot is taken is closed by the reload: its last step (no next observation yet) is never
sampled.

Memory per slot: latent (fp16 by default) + mask (tokens mode) + proprio + action. For the tiny demo VLA in pooled
mode that is ~0.3 KB; BLIP-2 OPT-2.7B tokens (m = 64 x d = 2560, fp16) are 328 KB per observation, 33 GB per 100k
-- which is why ``latent: pooled`` exists (docs/overnight.md).

Snapshots (`save` / `load`) are one safetensors file (arrays) + its JSON metadata, written atomically: no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from irevla.atomic_io import atomic_write_bytes
from irevla.errors import UserError

SNAPSHOT_FORMAT = "irevla-replay"
SNAPSHOT_VERSION = 1


class ReplayError(UserError, ValueError):
    """A replay operation got inconsistent input, or a snapshot is unreadable/incompatible (names the file)."""


class LatentReplay:
    """A ring buffer of observations with index-linked transitions (see the module docstring)."""

    def __init__(self, capacity: int, latent_shape: tuple[int, ...], proprio_dim: int, action_dim: int,
                 latent_dtype: str = "float16", with_mask: bool = True) -> None:
        if capacity < 2:
            raise ReplayError(f"LatentReplay.capacity: expected >= 2, got {capacity}")
        self.capacity = int(capacity)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.proprio_dim, self.action_dim = int(proprio_dim), int(action_dim)
        self.with_mask = bool(with_mask) and len(self.latent_shape) == 2
        self.latent = np.zeros((capacity, *self.latent_shape), dtype=np.dtype(latent_dtype))
        self.mask = np.zeros((capacity, self.latent_shape[0] if self.with_mask else 1), dtype=bool)
        self.proprio = np.zeros((capacity, self.proprio_dim), dtype=np.float32)
        self.action = np.zeros((capacity, self.action_dim), dtype=np.float32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminal = np.zeros(capacity, dtype=bool)
        self.valid = np.zeros(capacity, dtype=bool)
        self.intervention = np.zeros(capacity, dtype=bool)
        self.episode = np.full(capacity, -1, dtype=np.int64)  # buffer-wide episode counter of each slot
        self.cursor = 0  # next slot to write
        self.size = 0  # slots holding data
        self.episodes_started = 0
        self.transitions_added = 0
        self._open = False  # an episode is being written; its last slot is self.cursor - 1

    # ------------------------------------------------------------------------------------------------ writing
    def __len__(self) -> int:
        """Number of sampleable transitions."""
        return int(self.valid.sum())

    def _check_observation(self, latent: np.ndarray, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validate before anything changes: a rejected observation leaves the buffer as it was."""
        latent = np.asarray(latent)
        if latent.shape != self.latent_shape:
            raise ReplayError(f"LatentReplay: latent shape {latent.shape}, expected {self.latent_shape}")
        proprio = np.asarray(proprio, dtype=np.float32).reshape(-1)
        if proprio.shape[0] != self.proprio_dim:
            raise ReplayError(f"LatentReplay: proprio has {proprio.shape[0]} values, expected {self.proprio_dim}")
        if not (np.isfinite(proprio).all() and np.isfinite(latent.astype(np.float32)).all()):
            raise ReplayError("LatentReplay: latent or proprio contains NaN/inf")
        return latent, proprio

    def _write_observation(self, latent: np.ndarray, mask: np.ndarray | None, proprio: np.ndarray) -> int:
        slot = self.cursor
        # The ring writes in order, so slot - 1 is always the newest observation; the one lost here is the oldest,
        # and the transition starting at it (whose next observation may survive) must not be sampled any more.
        self.valid[slot] = False
        self.latent[slot] = latent
        if self.with_mask:
            self.mask[slot] = True if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
        self.proprio[slot] = proprio
        self.action[slot] = 0.0
        self.reward[slot] = 0.0
        self.terminal[slot] = False
        self.intervention[slot] = False
        self.episode[slot] = self.episodes_started - 1
        self.cursor = (slot + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return slot

    def add_step(self, latent: np.ndarray, mask: np.ndarray | None, proprio: np.ndarray, action: np.ndarray,
                 intervention: bool = False) -> int:
        """Observation t and the action taken there. The previous step of the same episode (if any) becomes a
        transition with reward 0, not terminal. Returns the slot."""
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape[0] != self.action_dim:
            raise ReplayError(f"LatentReplay: action has {action.shape[0]} values, expected {self.action_dim}")
        if not np.isfinite(action).all():
            raise ReplayError("LatentReplay: action contains NaN/inf")
        latent, proprio = self._check_observation(latent, proprio)
        if not self._open:
            self.episodes_started += 1
            self._open = True
        else:
            self._link_previous(reward=0.0, terminal=False)
        slot = self._write_observation(latent, mask, proprio)
        self.action[slot] = action
        self.intervention[slot] = bool(intervention)
        return slot

    def end_episode(self, final_latent: np.ndarray, final_mask: np.ndarray | None, final_proprio: np.ndarray,
                    reward: float, terminal: bool) -> None:
        """The final observation: the last step's transition gets `reward` and `terminal` (success ends the
        episode with reward 1; a time limit is not terminal, the learner bootstraps from the final observation)."""
        if not self._open:
            raise ReplayError("LatentReplay.end_episode: no episode is open (add_step first)")
        final_latent, final_proprio = self._check_observation(final_latent, final_proprio)
        self._link_previous(reward=float(reward), terminal=bool(terminal))
        self._write_observation(final_latent, final_mask, final_proprio)
        self._open = False

    def _link_previous(self, reward: float, terminal: bool) -> None:
        previous = (self.cursor - 1) % self.capacity
        self.reward[previous] = reward
        self.terminal[previous] = terminal
        self.valid[previous] = True  # its next observation is written right after this call
        self.transitions_added += 1

    def add_episode(self, latents: np.ndarray, masks: np.ndarray | None, proprios: np.ndarray, actions: np.ndarray,
                    success: bool, terminal_on_success: bool = True, interventions: np.ndarray | None = None,
                    keep: np.ndarray | None = None) -> int:
        """A whole episode at once: T + 1 observations and T actions; reward 1 on the last step if `success`
        (terminal then, unless not `terminal_on_success`). `interventions` (T bools) flags the steps a human chose.

        `keep` (T bools; default all): store only these transitions. Each run of kept steps ``a..b`` is written as
        a piece of its own -- observations ``a..b`` and then observation ``b + 1`` as the piece's end -- so every
        kept transition keeps its true next observation, and its true reward and end: a piece that stops before the
        episode's last step has reward 0 and is not terminal. Returns the number of transitions stored."""
        steps = len(actions)
        if len(latents) != steps + 1 or len(proprios) != steps + 1:
            raise ReplayError(f"LatentReplay.add_episode: expected {steps + 1} observations for {steps} actions, "
                              f"got {len(latents)} latents and {len(proprios)} proprio rows")
        if steps == 0:
            raise ReplayError("LatentReplay.add_episode: an episode needs at least one action")
        flags = np.zeros(steps, bool) if interventions is None else np.asarray(interventions, bool).reshape(-1)
        kept = np.ones(steps, bool) if keep is None else np.asarray(keep, bool).reshape(-1)
        for name, array in (("interventions", flags), ("keep", kept)):
            if array.shape[0] != steps:
                raise ReplayError(f"LatentReplay.add_episode: {name} has {array.shape[0]} values for {steps} actions")
        # Runs of kept steps: start where a kept step follows a dropped one (or the start), stop before a drop.
        edges = np.diff(np.concatenate([[0], kept.astype(np.int8), [0]]))
        for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            for t in range(start, stop):
                self.add_step(latents[t], None if masks is None else masks[t], proprios[t], actions[t],
                              intervention=bool(flags[t]))
            last = stop == steps  # the piece ends where the episode ends: the episode's reward and end apply
            self.end_episode(latents[stop], None if masks is None else masks[stop], proprios[stop],
                             reward=1.0 if (success and last) else 0.0,
                             terminal=bool(success and terminal_on_success and last))
        return int(kept.sum())

    # ----------------------------------------------------------------------------------------------- sampling
    def valid_indices(self) -> np.ndarray:
        return np.flatnonzero(self.valid)

    def sample_indices(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        indices = self.valid_indices()
        if indices.size == 0:
            raise ReplayError("LatentReplay.sample: no complete transition stored yet")
        return indices[rng.integers(0, indices.size, size=batch_size)]

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The transitions at `indices` (each must be valid): obs, next obs (index + 1), action, reward, terminal."""
        indices = np.asarray(indices, dtype=np.int64)
        following = (indices + 1) % self.capacity
        batch = {"latent": self.latent[indices], "proprio": self.proprio[indices], "action": self.action[indices],
                 "reward": self.reward[indices], "terminal": self.terminal[indices].astype(np.float32),
                 "next_latent": self.latent[following], "next_proprio": self.proprio[following]}
        if self.with_mask:
            batch["mask"], batch["next_mask"] = self.mask[indices], self.mask[following]
        return batch

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        return self.gather(self.sample_indices(rng, batch_size))

    # ---------------------------------------------------------------------------------------------- snapshots
    def _arrays(self) -> dict[str, np.ndarray]:
        return {"latent": self.latent, "mask": self.mask, "proprio": self.proprio, "action": self.action,
                "reward": self.reward, "terminal": self.terminal, "valid": self.valid,
                "intervention": self.intervention, "episode": self.episode}

    def metadata(self) -> dict:
        return {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION, "capacity": self.capacity,
                "latent_shape": list(self.latent_shape), "latent_dtype": str(self.latent.dtype),
                "proprio_dim": self.proprio_dim, "action_dim": self.action_dim, "with_mask": self.with_mask,
                "cursor": self.cursor, "size": self.size, "episodes_started": self.episodes_started,
                "transitions_added": self.transitions_added, "open_episode": self._open}

    def save(self, path: str | Path) -> Path:
        """Write a snapshot (safetensors; metadata inside the file's header). Only the filled part is written."""
        from safetensors.numpy import save as save_arrays

        path = Path(path)
        count = self.size
        arrays = {name: np.ascontiguousarray(array[:count]) for name, array in self._arrays().items()}
        payload = save_arrays(arrays, metadata={"irevla": json.dumps(self.metadata(), sort_keys=True)})
        return atomic_write_bytes(path, payload)

    @classmethod
    def load(cls, path: str | Path, capacity: int | None = None) -> LatentReplay:
        """Read a snapshot written by `save` (optionally into a larger ring); errors name the file and field."""
        from safetensors import SafetensorError, safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise ReplayError(f"{path}: replay snapshot not found")
        try:
            with safe_open(str(path), framework="np") as handle:
                header = handle.metadata() or {}
            arrays = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ReplayError(f"{path}: not a readable safetensors replay snapshot: {exc}") from None
        try:
            meta = json.loads(header.get("irevla", ""))
        except json.JSONDecodeError:
            raise ReplayError(f"{path}: metadata 'irevla' is missing or not JSON") from None
        if meta.get("format") != SNAPSHOT_FORMAT or meta.get("version") != SNAPSHOT_VERSION:
            raise ReplayError(f"{path}: metadata 'format'/'version': expected {SNAPSHOT_FORMAT!r} "
                              f"v{SNAPSHOT_VERSION}, got {meta.get('format')!r} v{meta.get('version')!r}")
        stored_capacity, size = int(meta["capacity"]), int(meta["size"])
        capacity = stored_capacity if capacity is None else int(capacity)
        if capacity < size:
            raise ReplayError(f"{path}: field 'size': the snapshot holds {size} observations, more than the asked "
                              f"capacity {capacity}")
        replay = cls(capacity, tuple(meta["latent_shape"]), meta["proprio_dim"], meta["action_dim"],
                     meta["latent_dtype"], meta["with_mask"])
        # Unroll the ring oldest-first (a full ring's oldest slot is at its cursor), so any capacity >= size works.
        order = (int(meta["cursor"]) + np.arange(size)) % stored_capacity if size == stored_capacity \
            else np.arange(size)
        for name, array in replay._arrays().items():
            if name not in arrays:
                raise ReplayError(f"{path}: array {name!r} missing")
            stored = arrays[name]
            if stored.shape[0] != size or stored.shape[1:] != array.shape[1:] or stored.dtype != array.dtype:
                raise ReplayError(f"{path}: array {name!r}: expected ({size}, {array.shape[1:]}) {array.dtype}, "
                                  f"got {stored.shape} {stored.dtype}")
            array[:size] = stored[order]
        replay.valid[size - 1] = False  # the newest observation's successor was never written
        replay.size, replay.cursor = size, size % capacity
        replay.episodes_started = int(meta["episodes_started"])
        replay.transitions_added = int(meta["transitions_added"])
        replay._open = False  # a partly written episode ends at the snapshot: its last step has no next obs
        return replay

    def state_summary(self) -> Mapping[str, int]:
        return {"transitions": len(self), "observations": self.size, "episodes": self.episodes_started,
                "capacity": self.capacity}
