"""The stage-1 learner around any algorithm: episode intake, the demo buffer, head publishing, snapshots, counters.

`Learner` is transport-free (tests and `irevla.iterate.stage1_reference` drive it directly; `irevla.learner.process`
runs it behind the ZeroMQ server). Its subclasses, `irevla.learner.sac.SACLearner` and
`irevla.learner.ppo.PPOLearner`, add only the algorithm: what a finished episode becomes (`accept`), when and how
it updates, the head it hands out and its own state arrays. `irevla.learner.registry` names them.

What crosses the boundary:

* in: `Transition` (latent, proprio, executed action in env units, intervention flag, head version) and
  `EpisodeEnd` (final observation + the binary success label from the env or a human) -- `irevla.transport.messages`;
* out: the actor head's parameters, torch-named as ``VLAPolicy.head_state()`` (only ``mlp.*`` with pooled latents),
  plus ``exploration.log_std`` -- the actor samples ``tanh(mu + std * eps)`` around the head's mean.

Each actor's steps are held until its episode ends and then handed over whole (an `EpisodeData`: T + 1 latents,
T unit actions), so several actors never interleave inside a buffer; an episode with a missing step (the tail of one
a restarted learner lost the head of) is dropped and counted.

The demo buffer (half of each SAC batch) also gets, besides the initial demos:

* successful episodes, whole (``successes_to_demo``);
* human interventions (``interventions_to_demo``): with ``steps`` (the default, as HIL-SERL does) only the
  transitions whose action a human chose -- each with its true next observation (the next step's latent, whoever
  acted there, or the final one), and its true reward and end (a human segment that stops before the episode's last
  step has reward 0 and is not terminal); with ``episode`` the whole episode of any intervention (this learner's
  behaviour before ``steps``; old configs' ``true``); ``off`` copies none.

Each episode's ``episode_log`` entry (kept in snapshots; the learner process writes it to ``metrics.jsonl`` as
``episode/*``) has its steps, success, interventions, ``intervention_rate`` (interventions / steps) and the
transitions it added to the demo buffer.

State for resume: `snapshot(dir)` writes the demo buffer, the algorithm's state and the counters (safetensors +
JSON, each file atomically, counters last); `restore(dir, spec, config)` continues from it.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from irevla.atomic_io import atomic_write_bytes, atomic_write_text
from irevla.errors import UserError
from irevla.head_file import LOG_STD_NAME
from irevla.learner.config import LearnerBaseConfig
from irevla.learner.flax_head import HeadSpec
from irevla.learner.replay import LatentReplay
from irevla.transport.messages import EpisodeEnd, Transition

log = logging.getLogger("irevla.learner")

COUNTERS = ("updates", "version", "episodes", "successes", "received_transitions", "incomplete_episodes")


class SnapshotError(UserError, ValueError):
    """A learner snapshot cannot be restored with these settings (names the file)."""


@dataclass
class EpisodeData:
    """One complete episode in the learner's terms: T + 1 latents (the last is the final observation's), T actions
    in the head's unit space, which steps a human chose, and the success label."""

    latent: np.ndarray
    mask: np.ndarray | None
    proprio: np.ndarray
    action: np.ndarray
    intervention: np.ndarray
    success: bool
    versions: frozenset[int]  # head versions that chose the actions

    @property
    def steps(self) -> int:
        return len(self.action)


class Learner(ABC):
    """Shared intake / demo buffer / publishing / snapshots; subclasses implement the abstract algorithm part."""

    algorithm: ClassVar[str]  # the registry name, recorded in snapshots

    def __init__(self, spec: HeadSpec, config: LearnerBaseConfig, actor_state: Mapping[str, Any] | None,
                 demo: LatentReplay | None = None) -> None:
        self.spec, self.config = spec, config
        self.demo = demo if demo is not None else self.new_buffer(config.demo_capacity)
        self.updates = self.version = 0
        self.received_transitions = self.episodes = self.successes = self.incomplete_episodes = 0
        self.open: dict[tuple[str, int], list[Transition]] = {}
        self.last_info: dict[str, float] = {}
        self.episode_log: list[dict] = []

    def new_buffer(self, capacity: int) -> LatentReplay:
        spec = self.spec
        return LatentReplay(capacity, spec.latent_shape, spec.proprio_dim, spec.action_dim,
                            with_mask=spec.latent == "tokens")

    # ------------------------------------------------------------------------------------ the algorithm's part
    @abstractmethod
    def accept(self, episode: EpisodeData) -> dict[str, Any]:
        """Take a complete episode (into the online buffer, the on-policy batch, ...); returns extra fields for its
        ``episode_log`` entry."""

    @abstractmethod
    def updates_allowed(self) -> int:
        """How many `update` calls the data received so far allows (0: wait for more)."""

    @abstractmethod
    def _update(self) -> dict[str, float]:
        """One update of the algorithm; returns its losses / statistics."""

    @abstractmethod
    def head_params(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(the actor head's parameters with torch names, the exploration log-std)."""

    @abstractmethod
    def _save_state(self, directory: Path) -> dict[str, Any]:
        """Write the algorithm's own state files into `directory`; returns its extra JSON counters."""

    @abstractmethod
    def _load_state(self, directory: Path, counters: Mapping[str, Any]) -> None:
        """Read what `_save_state` wrote."""

    def _published(self, version: int) -> None:  # noqa: B027 -- an optional hook, empty by default
        """Called when `version` is handed out (PPO: episodes of it are on-policy from now on)."""

    # ------------------------------------------------------------------------------------------------ intake
    def latent_of(self, tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A message's latent in the buffer's shape ((m, d) tokens + mask, or the pooled (D,) vector)."""
        if self.spec.latent == "pooled":
            return np.asarray(tokens).reshape(self.spec.latent_shape), None
        return np.asarray(tokens), np.asarray(mask, bool)

    def ingest(self, item: Transition | EpisodeEnd, actor: str = "actor") -> None:
        """One message from `actor`: a step is held until its episode ends; the end hands the episode over."""
        if isinstance(item, Transition):
            self.open.setdefault((actor, item.episode), []).append(item)
            self.received_transitions += 1
            return
        if isinstance(item, EpisodeEnd):
            steps = self.open.pop((actor, item.episode), None)
            if not steps:
                log.warning("episode end from %s for episode %s without steps: ignored", actor, item.episode)
                return
            episode = self.assemble(steps, item)
            if episode is not None:
                self._store(episode)
            return
        raise TypeError(f"{type(self).__name__}.ingest: expected Transition or EpisodeEnd, got {type(item).__name__}")

    def assemble(self, steps: list[Transition], end: EpisodeEnd) -> EpisodeData | None:
        """The steps + end of one episode as `EpisodeData`; None (counted) when a step is missing."""
        steps = sorted(steps, key=lambda s: s.step)
        if [s.step for s in steps] != list(range(end.steps)):
            # A restarted learner can receive the tail of an episode whose head it lost with its predecessor.
            log.warning("episode %s: got steps %s..%s of %s; an incomplete episode is not stored", end.episode,
                        steps[0].step, steps[-1].step, end.steps)
            self.incomplete_episodes += 1
            return None
        latents, masks = zip(*(self.latent_of(s.latent_tokens, s.latent_mask) for s in steps), strict=True)
        final_latent, final_mask = self.latent_of(end.final_tokens, end.final_mask)
        tokens = self.spec.latent == "tokens"
        return EpisodeData(
            latent=np.stack([*latents, final_latent]), mask=np.stack([*masks, final_mask]) if tokens else None,
            proprio=np.stack([np.asarray(s.proprio, np.float32) for s in steps]
                             + [np.asarray(end.final_proprio, np.float32)]),
            action=self.spec.action_to_unit(np.stack([s.action for s in steps]).astype(np.float32)),
            intervention=np.array([s.intervention for s in steps], bool), success=bool(end.success),
            versions=frozenset(int(s.policy_version) for s in steps))

    def add_demo(self, episode: EpisodeData, keep: np.ndarray | None = None) -> int:
        """Copy `episode` (or only its `keep` steps) into the demo buffer; returns the transitions added."""
        return self.demo.add_episode(episode.latent, episode.mask, episode.proprio, episode.action,
                                     success=episode.success, interventions=episode.intervention, keep=keep)

    def demo_steps(self, episode: EpisodeData) -> np.ndarray | None:
        """Which of `episode`'s transitions go into the demo buffer: all (None) for a success with
        ``successes_to_demo`` or any intervention with ``interventions_to_demo: episode``; the human's steps only
        with ``steps`` (HIL-SERL); else none (an all-False mask)."""
        config = self.config
        if episode.success and config.successes_to_demo:
            return None
        if episode.intervention.any() and config.interventions_to_demo == "episode":
            return None
        if config.interventions_to_demo == "steps":
            return episode.intervention
        return np.zeros(episode.steps, bool)

    def _store(self, episode: EpisodeData) -> None:
        interventions = int(episode.intervention.sum())
        keep = self.demo_steps(episode)
        demo_added = self.add_demo(episode, keep) if keep is None or keep.any() else 0
        extra = self.accept(episode)
        self.episodes += 1
        self.successes += int(episode.success)
        self.episode_log.append({"episode": self.episodes, "success": episode.success, "steps": episode.steps,
                                 "interventions": interventions, "intervention_rate": interventions / episode.steps,
                                 "demo_transitions": demo_added, **extra, "updates": self.updates,
                                 "time": time.time()})

    # ------------------------------------------------------------------------------------- update / publish
    def update(self) -> dict[str, float]:
        self.last_info = self._update()
        self.updates += 1
        return self.last_info

    def head_message(self) -> tuple[int, dict[str, np.ndarray]]:
        """(version, parameters): the actor head (torch names) + the exploration log-std."""
        self.version += 1
        params, log_std = self.head_params()
        params[LOG_STD_NAME] = np.asarray(log_std, np.float32)
        self._published(self.version)
        return self.version, params

    # --------------------------------------------------------------------------------------------- snapshots
    def snapshot(self, directory: str | Path) -> Path:
        """Write the demo buffer, the algorithm's state and the counters into `directory` (each file atomically;
        ``learner.json`` last, so a snapshot with it is complete). Open episodes are not kept."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.demo.save(directory / "demo.safetensors")
        extra = self._save_state(directory)
        counters = {"algorithm": self.algorithm, **{key: getattr(self, key) for key in COUNTERS}, **extra,
                    "episode_log": self.episode_log[-10_000:], "written": time.time()}
        atomic_write_text(directory / "learner.json", json.dumps(counters, indent=1))
        return directory

    @classmethod
    def restore(cls, directory: str | Path, spec: HeadSpec, config: LearnerBaseConfig) -> Learner:
        directory = Path(directory)
        counters = json.loads((directory / "learner.json").read_text())
        found = counters.get("algorithm", "sac")  # snapshots from before PPO existed are SAC's
        if found != cls.algorithm:
            raise SnapshotError(f"{directory / 'learner.json'}: not a {cls.algorithm.upper()} learner snapshot "
                                f"(algorithm {found!r})")
        learner = cls(spec, config, actor_state=None,
                      demo=LatentReplay.load(directory / "demo.safetensors", capacity=config.demo_capacity))
        learner._load_state(directory, counters)
        for key in COUNTERS:
            setattr(learner, key, int(counters.get(key, 0)))
        learner.episode_log = list(counters.get("episode_log", []))
        return learner


def save_state_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Named arrays -> a safetensors file, atomically."""
    from safetensors.numpy import save

    atomic_write_bytes(path, save(dict(arrays)))


def load_state_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))
