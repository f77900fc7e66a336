"""Deterministic test episodes: `make_episode(seed)` always returns the same episode, bit for bit.

Shared by the tests and by `crash_writer.py` (run as a subprocess), so a test can regenerate what a killed writer
meant to write from the seed stored in the file's metadata.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from irevla.data.episode import Episode
from irevla.spec import METAWORLD_PROPRIO, REAL_ROBOT_PROPRIO, ActionSpec, ObservationSpec, TaskSpec

EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)


def make_task(name: str = "button-press-v3", cameras: dict[str, tuple[int, int]] | None = None,
              real_robot: bool = False, variation: str = "") -> TaskSpec:
    if real_robot:
        action_spec, proprio, family = ActionSpec.ee_delta(), REAL_ROBOT_PROPRIO, "franka"
    else:
        action_spec, proprio, family = ActionSpec.metaworld(), METAWORLD_PROPRIO, "metaworld"
    return TaskSpec(name=name, family=family, instruction=f"do {name}", action_spec=action_spec,
                    observation_spec=ObservationSpec(cameras or {"corner2": (16, 16)}, proprio),
                    max_episode_steps=500, variation=variation, extra={"note": "test", "levels": [1, 2]})


def make_episode(seed: int, n_steps: int | None = None, task: TaskSpec | None = None, source: str = "script",
                 round: int = 0, success: bool | None = None, optional_arrays: bool = True) -> Episode:
    """An episode whose every byte is a function of the arguments (including its creation time)."""
    rng = np.random.default_rng(seed)
    task = task or make_task()
    n_steps = int(n_steps if n_steps is not None else rng.integers(3, 12))
    action_dim = task.action_spec.dim
    proprio_dim = len(task.observation_spec.proprio_names)
    images = {camera: rng.integers(0, 256, (n_steps + 1, h, w, 3), dtype=np.uint8)
              for camera, (h, w) in task.observation_spec.cameras.items()}
    return Episode(
        images=images,
        proprio=rng.standard_normal((n_steps + 1, proprio_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n_steps, action_dim)).astype(np.float32),
        rewards=(rng.random(n_steps) < 0.2).astype(np.float32),
        success=bool(rng.random() < 0.5) if success is None else success,
        instruction=task.instruction, task=task, source=source, round=round,
        created=(EPOCH + timedelta(seconds=seed)).isoformat(timespec="microseconds"),
        timestamps=np.arange(n_steps + 1, dtype=np.float64) * 0.1 + seed if optional_arrays else None,
        interventions=(rng.random(n_steps) < 0.3) if optional_arrays else None,
        metadata={"seed": seed, "expert": "scripted", "nested": {"a": [1, 2.5, "x"]}},
    )
