"""The learner process's metrics: `serve` writes the update statistics (window means, updates/s, counters) every
`metrics_every` updates and at the stop; a restarted learner continues from its snapshot's update count."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from irevla.learner.process import learner_metrics, serve
from irevla.metrics_log import LoggingConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_metrics_log import tensorboard_scalars  # noqa: E402


class FakeLearner:
    """What `serve` uses of a `Learner`: `budget` updates, each with a known critic loss."""

    algorithm = "sac"

    def __init__(self, budget: int, updates: int = 0) -> None:
        self.budget, self.updates = budget, updates
        self.config = SimpleNamespace(publish_every=1000, snapshot_every_s=1e9)
        self.spec = SimpleNamespace(latent="pooled")
        self.episodes, self.successes, self.version, self.last_info = 3, 1, 0, {}
        self.demo, self.online = [0] * 10, [0] * 7

    def updates_allowed(self) -> int:
        return max(0, self.budget - self.updates)

    def update(self) -> dict[str, float]:
        self.updates += 1
        self.last_info = {"critic_loss": float(self.updates), "alpha": 0.1}
        return self.last_info

    def ingest(self, item, actor) -> None:  # pragma: no cover - the fake server sends nothing
        raise AssertionError

    def head_message(self):
        self.version += 1
        return self.version, {}

    def head_params(self):
        return {"mlp.0.weight": np.zeros((2, 2), np.float32)}, np.zeros(2, np.float32)

    def snapshot(self, directory) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)


class FakeServer:
    def publish_head(self, version, params) -> None:
        pass

    def poll(self, timeout_ms: int):
        return []

    def commit(self) -> None:
        pass


def _run(out: Path, learner: FakeLearner, resume_step: int | None) -> None:
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return learner.updates_allowed() == 0 and calls["n"] > 1

    with learner_metrics(out, LoggingConfig(), resume_step=resume_step) as metrics:
        serve(learner, FakeServer(), out, stop=stop, metrics=metrics, metrics_every=5)


def test_serve_logs_update_windows_and_a_restart_continues_the_steps(tmp_path):
    out = tmp_path / "rl-1" / "learner"
    _run(out, FakeLearner(budget=23), resume_step=None)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 23]  # every 5 updates, and the rest at the stop
    assert records[0]["critic_loss"] == 3.0 and records[-1]["critic_loss"] == 22.0  # means over each window
    assert records[0]["learner/online_transitions"] == 7 and records[0]["updates_per_s"] > 0
    # The learner restarts from a snapshot taken at update 10: the records past it are replaced.
    _run(out, FakeLearner(budget=17, updates=10), resume_step=10)
    scalars = tensorboard_scalars(out / "tensorboard")
    assert {"critic_loss", "alpha", "updates_per_s", "learner/episodes", "learner/successes",
            "learner/demo_transitions", "learner/online_transitions"} <= set(scalars)
    assert [step for step, _ in scalars["critic_loss"]] == [5, 10, 15, 17]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [5, 10, 15, 17]
