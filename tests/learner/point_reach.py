"""A small continuous-control task seen only through "latents", with a sparse success reward (for the SAC tests).

The agent is a point in [-1, 1]^2 that must reach a goal drawn per episode; the latent is a fixed random projection
of (position, goal) (what a frozen encoder would give), proprio is the position. An action (unit space, [-1, 1]^2)
moves the point by 0.15 * action. Success = within 0.12 of the goal (reward 1, episode ends); time limit 20 steps.

`TokenPointReach` is the same task seen as a VLM's hidden states: m tokens of width d, of which one carries the goal
(a fixed projection of it plus that slot's own embedding), the others are fresh noise every step, and the last one
is padding (mask false) that looks like the goal token of a random decoy goal, so a mask that leaked would mislead.
The goal reaches the head only through its token learner (the position is in proprio).
"""

from __future__ import annotations

import numpy as np

from irevla.learner.flax_head import HeadSpec

LATENT_DIM = 16
STEP = 0.15
RADIUS = 0.12
HORIZON = 20


def point_spec() -> HeadSpec:
    return HeadSpec(latent_dim=LATENT_DIM, latent_length=1, proprio_dim=2, action_dim=2, token_dim=LATENT_DIM,
                    pool_queries=1, attention_heads=4, hidden=(64, 64), layer_norm=True, latent="pooled",
                    proprio_mean=(0.0, 0.0), proprio_std=(0.5, 0.5), action_low=(-1.0, -1.0),
                    action_high=(1.0, 1.0))


class PointReach:
    def __init__(self, seed: int = 0) -> None:
        self.projection = np.random.default_rng(1234).normal(size=(4, LATENT_DIM)).astype(np.float32) / 2
        self.rng = np.random.default_rng(seed)

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        latent = np.tanh(np.concatenate([self.position, self.goal]) @ self.projection)
        return latent.astype(np.float16), self.position.astype(np.float32).copy()

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        self.position = self.rng.uniform(-0.8, 0.8, 2)
        self.goal = self.rng.uniform(-0.8, 0.8, 2)
        self.t = 0
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], bool, bool]:
        """-> (observation, success, done)."""
        self.position = np.clip(self.position + STEP * np.clip(action, -1, 1), -1, 1)
        self.t += 1
        success = bool(np.linalg.norm(self.position - self.goal) < RADIUS)
        return self.observe(), success, success or self.t >= HORIZON

    def expert(self) -> np.ndarray:
        delta = (self.goal - self.position) / STEP
        return np.clip(delta, -1, 1).astype(np.float32)


TOKENS = 6  # one goal token, four noise tokens, one padding token (a decoy)
TOKEN_DIM = 16
NOISE = 0.3  # of the non-goal tokens, around their slot embeddings


def token_point_spec(pool_queries: int = 1) -> HeadSpec:
    return HeadSpec(latent_dim=TOKEN_DIM, latent_length=TOKENS, proprio_dim=2, action_dim=2, token_dim=32,
                    pool_queries=pool_queries, attention_heads=4, hidden=(64, 64), layer_norm=True, latent="tokens",
                    proprio_mean=(0.0, 0.0), proprio_std=(0.5, 0.5), action_low=(-1.0, -1.0),
                    action_high=(1.0, 1.0))


class TokenPointReach(PointReach):
    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        fixed = np.random.default_rng(4321)
        self.goal_projection = fixed.normal(size=(2, TOKEN_DIM)).astype(np.float32)
        self.slot_embedding = fixed.normal(size=(TOKENS, TOKEN_DIM)).astype(np.float32)
        self.goal_slot = 2  # not the first: the token learner must find it
        self.mask = np.ones(TOKENS, bool)
        self.mask[-1] = False

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.slot_embedding + NOISE * self.rng.normal(size=(TOKENS, TOKEN_DIM))
        tokens[self.goal_slot] = self.slot_embedding[self.goal_slot] + np.tanh(self.goal @ self.goal_projection) * 2
        # Padding (masked out) made to look like the goal token of another goal: attending to it would mislead.
        decoy = self.rng.uniform(-0.8, 0.8, 2)
        tokens[-1] = self.slot_embedding[self.goal_slot] + np.tanh(decoy @ self.goal_projection) * 2
        return tokens.astype(np.float16), self.position.astype(np.float32).copy()


def run_episode(env: PointReach, act, replay=None) -> bool:
    """One episode with `act(latent, proprio) -> unit action`; stored in `replay` if given (with the env's token
    mask, if it has one)."""
    mask = getattr(env, "mask", None)
    latent, proprio = env.reset()
    done = success = False
    while not done:
        action = act(latent, proprio)
        if replay is not None:
            replay.add_step(latent, mask, proprio, action)
        (latent, proprio), success, done = env.step(action)
    if replay is not None:
        replay.end_episode(latent, mask, proprio, reward=float(success), terminal=success)
    return success
