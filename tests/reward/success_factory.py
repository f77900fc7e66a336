"""Episodes with a visible success: a tiny VLA's frozen VLM can tell the last frames of a success from the rest.

Every frame is grey noise at a random brightness. A successful episode shows a red block (the "pressed button") in
its last `success_frames` observations, and the step into each of them earned a reward of 1, as the simulator's
per-step success does. A failed episode never shows it; half of the failures show a blue block instead, a negative
that looks a little like success (what failed RL rollouts are to a real detector).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from policy_factory import IMAGE, make_task, tiny_policy

from irevla.data.episode import Episode
from irevla.data.store import EpisodeStore
from irevla.policy.checkpoint import save_policy


def success_episode(seed: int, success: bool, n_steps: int = 10, success_frames: int = 3,
                    decoy: bool = False, camera: str = "front", signal: str = "image") -> Episode:
    """`signal` "image": the red block shows the success; "proprio": the images say nothing, the arm rests at
    proprio[0] = 0.9 through the success frames (as a pressed button holds the arm)."""
    task = make_task("push-left", {camera: (IMAGE, IMAGE)})
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(0.2, 0.6, n_steps + 1)
    images = (brightness[:, None, None, None] * 255 + rng.integers(0, 24, (n_steps + 1, IMAGE, IMAGE, 3)))
    images = images.clip(0, 255).astype(np.uint8)
    rewards = np.zeros(n_steps, np.float32)
    proprio = rng.uniform(-0.5, 0.5, (n_steps + 1, 4)).astype(np.float32)
    if success:
        if signal == "image":
            images[-success_frames:, 2:26, 2:26] = (230, 20, 20)
        else:
            proprio[-success_frames:, 0] = 0.9
        rewards[-success_frames:] = 1.0
    elif decoy and signal == "image":
        images[-success_frames:, 12:28, 12:28] = (20, 20, 230)
    actions = rng.uniform(-0.5, 0.5, (n_steps, 4)).astype(np.float32)
    return Episode(images={camera: images}, proprio=proprio, actions=actions, rewards=rewards, success=success,
                   instruction=task.instruction, task=task, source="rl", metadata={"seed": seed})


def write_success_data(directory: Path, successes: int = 12, failures: int = 12, seed: int = 0,
                       camera: str = "front", signal: str = "image") -> Path:
    """Fixed file names (the split hashes them): the same split in every run."""
    store = EpisodeStore(directory)
    for i in range(successes + failures):
        success = i < successes
        episode = success_episode(1000 * seed + i, success, decoy=not success and i % 2 == 0, camera=camera,
                                  signal=signal)
        path = store.write(episode)
        path.rename(path.with_name(f"ep-{seed}-{'s' if success else 'f'}-{i:03d}.h5"))
    return Path(directory)


def save_tiny_policy(directory: Path, seed: int = 0, camera: str = "front") -> Path:
    """A tiny VLA with Meta-World's action and proprio layout (it runs in Meta-World as well as on these episodes)."""
    save_policy(tiny_policy(seed=seed, cameras={camera: (IMAGE, IMAGE)}), directory)
    return directory
