"""The learner process's loop: a `Learner` behind a `LearnerServer` (``irevla learner serve``).

Its metrics (`irevla.metrics_log`): every ``metrics_every`` updates and at the stop, one record in
``out/metrics.jsonl`` and ``out/tensorboard`` (and wandb when enabled) with the step = the update count: the
algorithm's statistics averaged over the updates since the last record (SAC: ``critic_loss``, ``actor_loss``,
``alpha``, ``q_mean``, ...; PPO: its losses), ``updates_per_s``, and the counters (episodes, successes, buffer
sizes) under ``learner/``. And in ``out/episodes/`` (its own log, so that each log's steps stay one increasing
sequence that a resumed learner can cut at its snapshot) one record per episode received, with the step = the
learner's episode count (``episode/index``): ``episode/updates`` (the update count when it arrived), ``episode/success``, ``episode/steps``, ``episode/interventions``, ``episode/intervention_rate``
(interventions / steps: how much the human still has to take over), ``episode/demo_transitions`` (what it added to
the demo buffer) and the algorithm's own fields (PPO: ``episode/on_policy``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from irevla.head_file import LOG_STD_NAME, save_head_arrays
from irevla.learner.learner import Learner
from irevla.metrics_log import LoggingConfig, MetricsLog

log = logging.getLogger("irevla.learner")


def learner_metrics(out: Path, logging_config: LoggingConfig, resume_step: int | None = None,
                    config: dict | None = None) -> MetricsLog:
    """The learner's `MetricsLog` in `out` (wandb run name: the config's, else ``<stage>/<out>``, e.g. rl-1/learner)."""
    out = Path(out)
    return MetricsLog(out, resume_step=resume_step, tensorboard=logging_config.tensorboard,
                      wandb=logging_config.wandb, run_name=f"{out.parent.name}/{out.name}", job_type="rl-learner",
                      config=config)


def episode_metrics(out: Path, logging_config: LoggingConfig, resume_episodes: int | None = None) -> MetricsLog:
    """The per-episode `MetricsLog` in ``out/episodes`` (step: the learner's episode count; TensorBoard only: one
    wandb run per learner is enough, and its update records are there)."""
    return MetricsLog(Path(out) / "episodes", resume_step=resume_episodes, tensorboard=logging_config.tensorboard)


class UpdateWindow:
    """The update statistics since the last metrics record: their means, and updates per second."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.updates = 0
        self.started = time.monotonic()

    def add(self, info: dict[str, float]) -> None:
        for key, value in info.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.updates += 1

    def record(self, learner: Learner) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        record = {"step": learner.updates, **{key: total / self.updates for key, total in self.sums.items()},
                  "updates_per_s": self.updates / elapsed, "learner/episodes": learner.episodes,
                  "learner/successes": learner.successes, "learner/demo_transitions": len(learner.demo)}
        online = getattr(learner, "online", None)
        if online is not None:
            record["learner/online_transitions"] = len(online)
        self.reset()
        return record


def episode_records(learner: Learner, since: int) -> list[dict]:
    """The metrics records of the episodes `learner` took after its `since`-th (its ``episode_log`` entries)."""
    new = learner.episodes - since
    entries = learner.episode_log[-new:] if new > 0 else []
    return [{"step": entry["episode"], "episode/index": entry["episode"], "episode/updates": learner.updates,
             **{f"episode/{key}": value for key, value in entry.items()
                if key not in ("episode", "updates", "time") and isinstance(value, (bool, int, float))}}
            for entry in entries]


def serve(learner: Learner, server, out: Path, stop, log_every_s: float = 10.0, metrics: MetricsLog | None = None,
          metrics_every: int = 50, episode_metrics: MetricsLog | None = None) -> Learner:
    """Run `learner` behind `server` (a `LearnerServer`) until `stop()` is true; snapshot into `out` regularly and
    at the end, publish the head as it trains, and write ``out/head.safetensors`` (the actor head, torch names).
    With `metrics`, a record of the update statistics every `metrics_every` updates and at the end; with
    `episode_metrics`, one record per episode."""
    out = Path(out)
    last_snapshot = last_log = time.monotonic()
    since_publish = 0
    window = UpdateWindow()
    logged_episodes = learner.episodes  # episodes before (a resumed learner's) were logged by the earlier run
    server.publish_head(*learner.head_message())
    while not stop():
        # With updates to do, take what has arrived and go on (episodes arrive whole, so most polls find nothing:
        # waiting here would idle the learner between every few updates); with none, wait for an episode.
        for received in server.poll(timeout_ms=0 if learner.updates_allowed() else 50):
            learner.ingest(received.item, received.actor)
        if episode_metrics is not None and learner.episodes != logged_episodes:
            for record in episode_records(learner, logged_episodes):
                episode_metrics.write(record)
            logged_episodes = learner.episodes
        allowed = min(learner.updates_allowed(), 8)  # keep polling: acks and episodes keep flowing
        for _ in range(allowed):
            window.add(learner.update())
            since_publish += 1
            if metrics is not None and window.updates >= metrics_every:
                metrics.write(window.record(learner))
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
    if episode_metrics is not None:
        for record in episode_records(learner, logged_episodes):
            episode_metrics.write(record)
    server.commit()
    if metrics is not None and window.updates:
        metrics.write(window.record(learner))
    learner.snapshot(out / "snapshot")
    save_final_head(learner, out / "head.safetensors")
    return learner


def save_final_head(learner: Learner, path: Path) -> Path:
    """The learner's current actor head (torch names, no exploration std) as the head file the policy merges."""
    params, _ = learner.head_params()
    params.pop(LOG_STD_NAME, None)
    return save_head_arrays(path, params, {"updates": learner.updates, "episodes": learner.episodes,
                                           "latent": learner.spec.latent, "algorithm": learner.algorithm})
