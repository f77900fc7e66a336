"""The stage-1 learner: receives actor transitions, keeps the two replay buffers, trains SAC, hands back the head.

`Learner` is transport-free (tests drive it directly); `serve` runs it behind the ZeroMQ `LearnerServer` in its own
process (``irevla learner serve``). What crosses the boundary:

* in: `Transition` (latent, proprio, executed action in env units, intervention flag) and `EpisodeEnd` (final
  observation + the binary success label from the env or a human) -- see `irevla.transport.messages`;
* out: the actor head's parameters, torch-named as ``VLAPolicy.head_state()`` (only ``mlp.*`` with pooled latents),
  plus ``exploration.log_std`` -- the actor samples ``tanh(mu + std * eps)`` around the head's mean.

Each actor's steps are held until its episode ends and then written to the online buffer in one go, so several
actors never interleave inside the ring (next observations are found by index). Sparse reward: 1 on the last step
of a successful episode, which is terminal; a failed episode ends at its time limit (not terminal: bootstrap).
Successful online episodes and episodes with human interventions are also copied to the demo buffer
(``successes_to_demo`` / interventions as in HIL-SERL), so the demo half of every batch grows with what worked.

The number of updates is tied to the data (``updates_per_transition``; 0 = as fast as the CPU/GPU allows, SERL's
asynchronous mode): on a shared 2-core machine a free-running learner would starve the actor.

State for resume: `snapshot(dir)` writes both buffers, the SAC state and counters (safetensors + JSON, atomically);
`Learner.restore` continues from it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irevla.atomic_io import atomic_write_bytes, atomic_write_text
from irevla.head_file import LOG_STD_NAME
from irevla.learner.config import LearnerConfig, SACConfig  # noqa: F401 (re-exported)
from irevla.learner.flax_head import HeadSpec
from irevla.transport.messages import EpisodeEnd, Transition
from irevla.learner.replay import LatentReplay
from irevla.learner.sac import SACAgent, SACTrainer, sac_state_arrays, sac_state_from_arrays

log = logging.getLogger("irevla.learner")


@dataclass
class _OpenEpisode:
    steps: list[Transition] = field(default_factory=list)


class Learner:
    def __init__(self, spec: HeadSpec, config: LearnerConfig, actor_state: Mapping[str, Any] | None,
                 demo: LatentReplay | None = None) -> None:
        self.spec, self.config = spec, config
        self.agent = SACAgent(spec, config.sac)
        state = self.agent.init(actor_state, seed=config.seed)
        self.demo = demo if demo is not None else self.new_buffer(config.demo_capacity)
        self.online = self.new_buffer(config.online_capacity)
        self.trainer = SACTrainer(self.agent, state, self.demo, self.online, np.random.default_rng(config.seed),
                                  demo_fraction=config.demo_fraction)
        self.updates = 0
        self.version = 0
        self.received_transitions = 0
        self.episodes = 0
        self.successes = 0
        self.incomplete_episodes = 0
        self.open: dict[tuple[str, int], _OpenEpisode] = {}
        self.last_info: dict[str, float] = {}
        self.episode_log: list[dict] = []

    def new_buffer(self, capacity: int) -> LatentReplay:
        spec = self.spec
        return LatentReplay(capacity, spec.latent_shape, spec.proprio_dim, spec.action_dim,
                            with_mask=spec.latent == "tokens")

    # ----------------------------------------------------------------------------------------------- ingest
    def latent_of(self, tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A message's latent in the buffer's shape ((m, d) tokens + mask, or the pooled (D,) vector)."""
        if self.spec.latent == "pooled":
            return np.asarray(tokens).reshape(self.spec.latent_shape), None
        return np.asarray(tokens), np.asarray(mask, bool)

    def ingest(self, item: Transition | EpisodeEnd, actor: str = "actor") -> None:
        if isinstance(item, Transition):
            key = (actor, item.episode)
            self.open.setdefault(key, _OpenEpisode()).steps.append(item)
            self.received_transitions += 1
            return
        if isinstance(item, EpisodeEnd):
            episode = self.open.pop((actor, item.episode), None)
            if episode is None or not episode.steps:
                log.warning("episode end from %s for episode %s without steps: ignored", actor, item.episode)
                return
            self._store_episode(episode.steps, item)
            return
        raise TypeError(f"Learner.ingest: expected Transition or EpisodeEnd, got {type(item).__name__}")

    def _store_episode(self, steps: list[Transition], end: EpisodeEnd) -> None:
        steps = sorted(steps, key=lambda s: s.step)
        if [s.step for s in steps] != list(range(end.steps)):
            # A restarted learner can receive the tail of an episode whose head it lost with its predecessor.
            log.warning("episode %s: got steps %s..%s of %s; an incomplete episode is not stored", end.episode,
                        steps[0].step, steps[-1].step, end.steps)
            self.incomplete_episodes += 1
            return
        latents, masks = zip(*(self.latent_of(s.latent_tokens, s.latent_mask) for s in steps), strict=True)
        final_latent, final_mask = self.latent_of(end.final_tokens, end.final_mask)
        use_mask = self.spec.latent == "tokens"
        latents = np.stack([*latents, final_latent])
        masks = np.stack([*masks, final_mask]) if use_mask else None
        proprios = np.stack([s.proprio for s in steps] + [np.asarray(end.final_proprio, np.float32)])
        actions = self.spec.action_to_unit(np.stack([s.action for s in steps]).astype(np.float32))
        success = bool(end.success)
        self.online.add_episode(latents, masks, proprios, actions, success=success)
        interventions = any(s.intervention for s in steps)
        if (success and self.config.successes_to_demo) or interventions:
            self.demo.add_episode(latents, masks, proprios, actions, success=success)
        self.episodes += 1
        self.successes += int(success)
        self.episode_log.append({"episode": self.episodes, "success": success, "steps": len(steps),
                                 "interventions": int(sum(s.intervention for s in steps)),
                                 "updates": self.updates, "time": time.time()})

    # ----------------------------------------------------------------------------------------------- update
    def updates_allowed(self) -> int:
        """How many updates the data received so far allows (0 before warm-up or with nothing to sample)."""
        if self.online.transitions_added < self.config.warmup_transitions or not (len(self.online) or len(self.demo)):
            return 0
        if self.config.updates_per_transition == 0:
            return 1 << 30
        budget = int(self.online.transitions_added * self.config.updates_per_transition)
        return max(0, budget - self.updates)

    def update(self) -> dict[str, float]:
        self.last_info = self.trainer.step()
        self.updates += 1
        return self.last_info

    def head_message(self) -> tuple[int, dict[str, np.ndarray]]:
        """(version, parameters): the actor head (torch names) + the exploration log-std."""
        self.version += 1
        params = self.agent.actor_state(self.trainer.state)
        params[LOG_STD_NAME] = self.agent.exploration_log_std(self.trainer.state).astype(np.float32)
        return self.version, params

    # --------------------------------------------------------------------------------------------- snapshots
    def snapshot(self, directory: str | Path) -> Path:
        """Write buffers, SAC state and counters into `directory` (each file atomically; counters last)."""
        from safetensors.numpy import save as save_arrays

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.online.save(directory / "online.safetensors")
        self.demo.save(directory / "demo.safetensors")
        atomic_write_bytes(directory / "sac_state.safetensors", save_arrays(sac_state_arrays(self.trainer.state)))
        counters = {"updates": self.updates, "version": self.version, "episodes": self.episodes,
                    "successes": self.successes, "received_transitions": self.received_transitions,
                    "episode_log": self.episode_log[-10_000:], "written": time.time()}
        atomic_write_text(directory / "learner.json", json.dumps(counters, indent=1))
        return directory

    @classmethod
    def restore(cls, directory: str | Path, spec: HeadSpec, config: LearnerConfig) -> Learner:
        from safetensors.numpy import load_file

        directory = Path(directory)
        counters = json.loads((directory / "learner.json").read_text())
        learner = cls(spec, config, actor_state=None,
                      demo=LatentReplay.load(directory / "demo.safetensors", capacity=config.demo_capacity))
        learner.online = LatentReplay.load(directory / "online.safetensors", capacity=config.online_capacity)
        learner.trainer.online, learner.trainer.demo = learner.online, learner.demo
        learner.trainer.state = sac_state_from_arrays(learner.trainer.state,
                                                      load_file(str(directory / "sac_state.safetensors")),
                                                      str(directory / "sac_state.safetensors"))
        for key in ("updates", "version", "episodes", "successes", "received_transitions"):
            setattr(learner, key, int(counters[key]))
        learner.episode_log = list(counters.get("episode_log", []))
        return learner


# ---------------------------------------------------------------------------------------------------- the process
def serve(learner: Learner, server, out: Path, stop, log_every_s: float = 10.0,
          progress=None) -> Learner:
    """Run `learner` behind `server` (a `LearnerServer`) until `stop()` is true; snapshot into `out` regularly and
    at the end, publish the head as it trains, and write ``out/head.safetensors`` (the actor head, torch names)."""
    from irevla.head_file import save_head_arrays

    out = Path(out)
    last_snapshot = last_log = time.monotonic()
    since_publish = 0
    version, params = learner.head_message()
    server.publish_head(version, params)
    while not stop():
        for received in server.poll(timeout_ms=5 if learner.updates_allowed() else 50):
            learner.ingest(received.item, received.actor)
        allowed = min(learner.updates_allowed(), 8)  # keep polling: acks and episodes keep flowing
        for _ in range(allowed):
            learner.update()
            since_publish += 1
        if since_publish >= learner.config.publish_every:
            server.publish_head(*learner.head_message())
            since_publish = 0
        now = time.monotonic()
        if now - last_snapshot > learner.config.snapshot_every_s:
            server.commit()
            learner.snapshot(out / "snapshot")
            last_snapshot = now
        if now - last_log > log_every_s:
            info = " ".join(f"{k} {v:.3g}" for k, v in sorted(learner.last_info.items()))
            log.info("updates %d, episodes %d (%d successes), online %d, demo %d transitions; %s", learner.updates,
                     learner.episodes, learner.successes, len(learner.online), len(learner.demo), info)
            last_log = now
    for received in server.poll(timeout_ms=0):
        learner.ingest(received.item, received.actor)
    server.commit()
    learner.snapshot(out / "snapshot")
    _, params = learner.head_message()
    params.pop(LOG_STD_NAME)
    save_head_arrays(out / "head.safetensors", params,
                     {"updates": learner.updates, "episodes": learner.episodes, "latent": learner.spec.latent})
    return learner
