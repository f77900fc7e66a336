"""The learner process's loop: a `Learner` behind a `LearnerServer` (``irevla learner serve``).

Its metrics (`irevla.metrics_log`): every ``metrics_every`` updates and at the stop, one record in
``out/metrics.jsonl`` and ``out/tensorboard`` (and wandb when enabled) with the step = the update count: the
algorithm's statistics averaged over the updates since the last record (SAC: ``critic_loss``, ``actor_loss``,
``alpha``, ``q_mean``, ...; PPO: its losses), ``updates_per_s``, and the counters (episodes, successes, buffer
sizes) under ``learner/``."""

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


def serve(learner: Learner, server, out: Path, stop, log_every_s: float = 10.0, metrics: MetricsLog | None = None,
          metrics_every: int = 50) -> Learner:
    """Run `learner` behind `server` (a `LearnerServer`) until `stop()` is true; snapshot into `out` regularly and
    at the end, publish the head as it trains, and write ``out/head.safetensors`` (the actor head, torch names).
    With `metrics`, a record of the update statistics every `metrics_every` updates and at the end."""
    out = Path(out)
    last_snapshot = last_log = time.monotonic()
    since_publish = 0
    window = UpdateWindow()
    server.publish_head(*learner.head_message())
    while not stop():
        # With updates to do, take what has arrived and go on (episodes arrive whole, so most polls find nothing:
        # waiting here would idle the learner between every few updates); with none, wait for an episode.
        for received in server.poll(timeout_ms=0 if learner.updates_allowed() else 50):
            learner.ingest(received.item, received.actor)
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
