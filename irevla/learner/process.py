"""The learner process's loop: a `Learner` behind a `LearnerServer` (``irevla learner serve``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from irevla.head_file import LOG_STD_NAME, save_head_arrays
from irevla.learner.learner import Learner

log = logging.getLogger("irevla.learner")


def serve(learner: Learner, server, out: Path, stop, log_every_s: float = 10.0) -> Learner:
    """Run `learner` behind `server` (a `LearnerServer`) until `stop()` is true; snapshot into `out` regularly and
    at the end, publish the head as it trains, and write ``out/head.safetensors`` (the actor head, torch names)."""
    out = Path(out)
    last_snapshot = last_log = time.monotonic()
    since_publish = 0
    server.publish_head(*learner.head_message())
    while not stop():
        # With updates to do, take what has arrived and go on (episodes arrive whole, so most polls find nothing:
        # waiting here would idle the learner between every few updates); with none, wait for an episode.
        for received in server.poll(timeout_ms=0 if learner.updates_allowed() else 50):
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
    save_final_head(learner, out / "head.safetensors")
    return learner


def save_final_head(learner: Learner, path: Path) -> Path:
    """The learner's current actor head (torch names, no exploration std) as the head file the policy merges."""
    params, _ = learner.head_params()
    params.pop(LOG_STD_NAME, None)
    return save_head_arrays(path, params, {"updates": learner.updates, "episodes": learner.episodes,
                                           "latent": learner.spec.latent, "algorithm": learner.algorithm})
