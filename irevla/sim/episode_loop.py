"""The one loop that runs an actor in a contract env for an episode, optionally recording it.

Scripted experts (`irevla.sim.demos`) and policy evaluation (`irevla.policy.rollout`) both run through it, so the
order of reset, act, step and record (observation t with action t, then the final observation) is defined once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from irevla.data.episode import Episode, EpisodeBuilder
from irevla.spec import Observation

Actor = Callable[[dict, dict], np.ndarray]


def run_episode(env, act: Actor, seed: int, builder: EpisodeBuilder | None = None, noise: float = 0.0,
                rng: np.random.Generator | None = None) -> tuple[bool, int, Episode | None]:
    """Run `act(obs, info) -> action` from ``env.reset(seed=seed)`` until the episode ends.

    Actions are clipped to the env's ActionSpec (NaN raises). With `noise > 0` the env executes
    ``action + N(0, noise * half_range)`` (DART) while the builder records the clean action. Returns
    (success, steps, the recorded episode if a `builder` was given).
    """
    obs, info = env.reset(seed=seed)
    spec = env.task_spec.action_spec
    noise_std = noise * (spec.high_array - spec.low_array) / 2.0
    if noise > 0 and rng is None:
        raise ValueError("run_episode: noise > 0 needs a random generator (rng)")
    terminated = truncated = False
    steps = 0
    while not (terminated or truncated):
        action = spec.clip(act(obs, info))
        executed = action if noise <= 0 else spec.clip(action + rng.normal(0.0, noise_std))
        next_obs, reward, terminated, truncated, info = env.step(executed)
        if builder is not None:
            builder.add(Observation.from_gym(obs), action, reward)
        obs = next_obs
        steps += 1
    success = bool(info.get("success", False))
    episode = builder.finish(Observation.from_gym(obs), success=success) if builder is not None else None
    return success, steps, episode
