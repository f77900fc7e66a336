"""Small policies and learnable synthetic episodes for the policy tests (no simulator needed).

The synthetic data has a rule a policy can learn from a few dozen steps: the action's x is +0.6 for "push left" and
-0.6 for "push right" (language), its y follows the brightness of the image (vision), z the first proprio value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from irevla.data.episode import Episode
from irevla.data.stats import compute_stats
from irevla.data.store import EpisodeStore
from irevla.policy.config import BackboneConfig, HeadConfig, PolicyConfig
from irevla.policy.vla import VLAPolicy
from irevla.spec import METAWORLD_PROPRIO, ActionSpec, ObservationSpec, TaskSpec

IMAGE = 32
INSTRUCTIONS = {"push-left": "push left", "push-right": "push right"}


def make_task(name: str = "push-left", cameras: dict | None = None) -> TaskSpec:
    return TaskSpec(name=name, family="synthetic", instruction=INSTRUCTIONS.get(name, name),
                    action_spec=ActionSpec.metaworld(),
                    observation_spec=ObservationSpec(cameras or {"front": (IMAGE, IMAGE)}, METAWORLD_PROPRIO),
                    max_episode_steps=50)


def make_episode(seed: int, task: TaskSpec, n_steps: int = 12) -> Episode:
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(0.1, 0.9, n_steps + 1)
    images = {camera: (np.broadcast_to(brightness[:, None, None, None], (n_steps + 1, h, w, 3)) * 255
                       + rng.integers(0, 8, (n_steps + 1, h, w, 3))).clip(0, 255).astype(np.uint8)
              for camera, (h, w) in task.observation_spec.cameras.items()}
    proprio = rng.uniform(-1, 1, (n_steps + 1, 4)).astype(np.float32)
    direction = 0.6 if task.name == "push-left" else -0.6
    actions = np.stack([np.full(n_steps, direction), 2 * brightness[:-1] - 1, 0.5 * proprio[:-1, 0],
                        np.where(brightness[:-1] > 0.5, 1.0, -1.0)], axis=1).astype(np.float32)
    return Episode(images=images, proprio=proprio, actions=actions, rewards=np.zeros(n_steps, np.float32),
                   success=True, instruction=task.instruction, task=task, source="script",
                   metadata={"seed": seed})


def write_dataset(directory: Path, episodes_per_task: int = 4, tasks=("push-left", "push-right"),
                  cameras: dict | None = None, prefix: str = "") -> Path:
    """Episodes under fixed file names: the train/val split hashes file names, so tests see the same split always."""
    store = EpisodeStore(directory)
    for t, name in enumerate(tasks):
        task = make_task(name, cameras)
        for e in range(episodes_per_task):
            path = store.write(make_episode(100 * t + e, task))
            path.rename(path.with_name(f"ep-{prefix}{name}-{e:03d}.h5"))
    return Path(directory)


def tiny_config(kind: str = "blip2", training: str = "lora", **head) -> PolicyConfig:
    backbone = BackboneConfig(kind=kind, image_size=IMAGE, patch_size=8, vision_hidden_size=32, hidden_size=64,
                              heads=4, vision_layers=1, layers=2, num_query_tokens=4, max_text_tokens=16)
    return PolicyConfig(backbone=backbone, head=HeadConfig(token_dim=32, hidden=(64, 64), attention_heads=4, **head),
                        backbone_training=training)


def tiny_policy(kind: str = "blip2", training: str = "lora", cameras: dict | None = None, seed: int = 0,
                **head) -> VLAPolicy:
    task = make_task(cameras=cameras)
    stats = compute_stats([make_episode(s, task) for s in range(3)])
    return VLAPolicy.build(tiny_config(kind, training, **head), task.action_spec, task.observation_spec, stats,
                           seed=seed)
