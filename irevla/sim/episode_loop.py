"""The one loop that runs an actor in a contract env for an episode, optionally recording it.

Scripted experts (`irevla.sim.demos`), policy evaluation (`irevla.policy.rollout`) and the RL actor all run
through it, so the order of reset, act, step and record (observation t with action t, then the final observation)
is defined once. `EpisodeStepper` is the same episode driven one action at a time from outside, which is what
batched evaluation needs (one network call for the current observations of several envs).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from irevla.data.episode import Episode, EpisodeBuilder
from irevla.spec import Observation

Actor = Callable[[dict, dict], np.ndarray]


class EpisodeStepper:
    """One episode from ``env.reset(seed=seed)``: call `step(action)` until `done`, then `result()`.

    Actions are clipped to the env's ActionSpec (NaN raises). With `noise > 0` the env executes
    ``action + N(0, noise * half_range)`` (DART) while the builder records the clean action.
    """

    def __init__(self, env, seed: int, builder: EpisodeBuilder | None = None, noise: float = 0.0,
                 rng: np.random.Generator | None = None) -> None:
        if noise > 0 and rng is None:
            raise ValueError("run_episode: noise > 0 needs a random generator (rng)")
        self.env, self.seed, self.builder, self.noise, self.rng = env, seed, builder, noise, rng
        spec = env.task_spec.action_spec
        self._spec = spec
        self._noise_std = noise * (spec.high_array - spec.low_array) / 2.0
        self.obs, self.info = env.reset(seed=seed)
        self.steps = 0
        self.done = False

    def step(self, action: np.ndarray) -> bool:
        """Execute `action` for the current observation; returns whether the episode has ended."""
        if self.done:
            raise RuntimeError(f"EpisodeStepper.step: the episode of seed {self.seed} has already ended")
        spec = self._spec
        action = spec.clip(action)
        executed = action if self.noise <= 0 else spec.clip(action + self.rng.normal(0.0, self._noise_std))
        next_obs, reward, terminated, truncated, self.info = self.env.step(executed)
        if self.builder is not None:
            self.builder.add(Observation.from_gym(self.obs), action, reward)
        self.obs = next_obs
        self.steps += 1
        self.done = bool(terminated or truncated)
        return self.done

    def result(self) -> tuple[bool, int, Episode | None]:
        """(success, steps, the recorded episode if a builder was given) of the ended episode."""
        if not self.done:
            raise RuntimeError(f"EpisodeStepper.result: the episode of seed {self.seed} is still running")
        success = bool(self.info.get("success", False))
        episode = (self.builder.finish(Observation.from_gym(self.obs), success=success)
                   if self.builder is not None else None)
        return success, self.steps, episode


def run_episode(env, act: Actor, seed: int, builder: EpisodeBuilder | None = None, noise: float = 0.0,
                rng: np.random.Generator | None = None) -> tuple[bool, int, Episode | None]:
    """Run `act(obs, info) -> action` from ``env.reset(seed=seed)`` until the episode ends.

    Returns (success, steps, the recorded episode if a `builder` was given); see `EpisodeStepper`.
    """
    stepper = EpisodeStepper(env, seed, builder, noise, rng)
    while not stepper.done:
        stepper.step(act(stepper.obs, stepper.info))
    return stepper.result()
