"""The robot stack's one door to the VLA (irevla.policy): load it, run it on robot observations, swap its head.

`PolicyRunner` adapts `irevla.policy.vla.VLAPolicy` (``act``, ``encode``, ``head_actions``, ``head_state`` /
``load_head_state``) to what the vla_policy node and the RL actor need, so a change of the policy API touches only
this file. No ROS here; torch is imported when a runner is built.

`LatentActorRunner` is a runner in stage-1 RL (vla_policy's ``rl_actor`` mode): the sim loop's actor,
`irevla.policy.latent_actor.LatentActor`, behind the interface `irevla.robot.rl_actor.RlActorCore` drives, so the robot
streams the same latents, explores the same way and applies the same head messages as the simulated actor.

Sources: a checkpoint directory (`irevla.policy.checkpoint.load_policy`), or the ``tiny`` preset -- a small BLIP-2
with random weights for tests and dry runs of the whole stack (it moves the arm, meaninglessly). The policy's
action space must be the robot's: the 7-D end-effector delta ``dx dy dz drx dry drz gripper``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from irevla.config import ConfigError
from irevla.robot.config import PolicySourceConfig
from irevla.robot.safety import DELTA_NAMES
from irevla.spec import REAL_ROBOT_PROPRIO, ActionSpec, Observation, ObservationSpec

TINY_IMAGE_SIZE = 32


def robot_action_spec() -> ActionSpec:
    """The robot's action space: SERL's scale (2 cm, 0.1 rad per step), deltas in the base frame."""
    return replace(ActionSpec.ee_delta(0.02, 0.1), frame="base")


def tiny_policy(cameras: Sequence[str], seed: int = 0):
    """A random-weight VLA small enough for CPU tests (~1 M parameters, ~10 ms per step)."""
    from irevla.data.stats import ArrayStats, DatasetStats
    from irevla.policy.config import BackboneConfig, HeadConfig, PolicyConfig
    from irevla.policy.vla import VLAPolicy

    action_spec = robot_action_spec()
    observation_spec = ObservationSpec({c: (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE) for c in cameras}, REAL_ROBOT_PROPRIO)
    rng = np.random.default_rng(seed)
    # Statistics of plausible robot data: actions across the spec, the EE in a table-top box pointing down.
    actions = rng.uniform(action_spec.low_array, action_spec.high_array, size=(256, action_spec.dim))
    proprio = np.column_stack([rng.uniform(0.3, 0.7, 256), rng.uniform(-0.3, 0.3, 256), rng.uniform(0.05, 0.5, 256),
                               rng.normal(np.pi, 0.1, 256), rng.normal(0, 0.1, 256), rng.normal(0, 0.1, 256),
                               rng.uniform(0.0, 0.08, 256)])
    stats = DatasetStats(action=ArrayStats.from_samples(actions, action_spec.names),
                         proprio=ArrayStats.from_samples(proprio, REAL_ROBOT_PROPRIO), n_episodes=1, n_steps=256)
    backbone = BackboneConfig(kind="blip2", image_size=TINY_IMAGE_SIZE, patch_size=8, vision_hidden_size=32,
                              hidden_size=64, heads=4, vision_layers=1, layers=2, num_query_tokens=4,
                              max_text_tokens=32)
    config = PolicyConfig(backbone=backbone, head=HeadConfig(token_dim=32, hidden=(64, 64), attention_heads=4),
                          backbone_training="frozen")
    return VLAPolicy.build(config, action_spec, observation_spec, stats, seed=seed)


class PolicyRunner:
    def __init__(self, policy: Any, source: str) -> None:
        self.policy = policy
        self.source = source
        self.version = 0  # bumped by every head the RL learner sends
        self._lock = threading.Lock()  # act vs. load_head_state from another thread
        self._last_latent: tuple[np.ndarray, np.ndarray] | None = None  # (tokens, mask) of the last encode

    @classmethod
    def load(cls, settings: PolicySourceConfig, cameras: Sequence[str]) -> PolicyRunner:
        import torch

        torch.set_num_threads(settings.threads)
        if settings.checkpoint:
            from irevla.policy.checkpoint import load_policy

            policy = load_policy(settings.checkpoint, device=settings.device)
            source = f"checkpoint {settings.checkpoint}"
        elif settings.preset == "tiny":
            policy = tiny_policy(cameras, settings.seed).to(settings.device)
            source = "tiny random-weight preset"
        else:
            raise ConfigError("vla_policy: policy.checkpoint is empty and policy.preset is 'none': give a checkpoint "
                              "directory (irevla sft writes one) or preset: tiny for a dry run")
        names = tuple(policy.action_spec.names)
        if names != DELTA_NAMES:
            raise ConfigError(f"vla_policy: {source} outputs actions {list(names)}; the robot takes {list(DELTA_NAMES)} "
                              f"(a policy trained on Meta-World's 4-D space cannot drive the arm)")
        missing = [camera for camera in policy.cameras if camera not in cameras]
        if missing:
            raise ConfigError(f"vla_policy: {source} needs cameras {list(policy.cameras)}, but cameras.names has "
                              f"{list(cameras)} (missing {missing}); map them in cameras.names / image_topics")
        policy.eval()
        runner = cls(policy, source)
        if settings.compile != "none":
            runner.warm_up(settings.compile)
        return runner

    def warm_up(self, mode: str, backend: str = "inductor") -> float:
        """Compile the policy (`VLAPolicy.compile`, ``mode`` as in torch.compile; "default" = its default) and run it
        on blank observations until its shapes are compiled: the control loop never waits for a compilation. Both
        paths compile -- act, and encode + head (rl_actor mode). Returns the seconds it took."""
        import time

        start = time.perf_counter()
        self.policy.compile(mode=None if mode == "default" else mode, backend=backend)
        spec = self.policy.observation_spec
        blank = Observation(images={c: np.zeros((*spec.cameras[c], 3), np.uint8) for c in self.cameras},
                            proprio=np.zeros(len(spec.proprio_names), np.float32), instruction="warm up")
        for _ in range(2):  # the second call replays (CUDA graphs are recorded on a later call than the first)
            self.act(blank)
            tokens, mask = self.encode(blank)
            self.act_from_latent(tokens, mask, blank.proprio)
        return time.perf_counter() - start

    # ------------------------------------------------------------------------------------------------ queries
    @property
    def action_spec(self) -> ActionSpec:
        return self.policy.action_spec

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.policy.cameras)

    @property
    def checkpoint_id(self) -> str:
        return self.policy.checkpoint_id or ""

    def info(self) -> dict:
        return {"source": self.source, "checkpoint_id": self.checkpoint_id, "version": self.version,
                "cameras": list(self.cameras), "action_spec": self.action_spec.to_dict()}

    # -------------------------------------------------------------------------------------------------- acting
    def observation(self, images: Mapping[str, np.ndarray], proprio: np.ndarray, instruction: str,
                    timestamp: float) -> Observation:
        return Observation(images={c: images[c] for c in self.cameras}, proprio=proprio, instruction=instruction,
                           timestamp=timestamp)

    def act(self, observation: Observation) -> np.ndarray:
        """float32[7] within the ActionSpec (the VLA clips and refuses NaN itself)."""
        with self._lock:
            return self.policy.act(observation).values

    def encode(self, observation: Observation) -> tuple[np.ndarray, np.ndarray]:
        """The frozen VLM's latent for one observation -- (tokens float32 (m, d), mask bool (m,)) -- what stage-1
        RL stores in its replay buffer."""
        import torch

        images, instructions, _ = self.policy.observations_to_batch([observation])
        with self._lock, torch.no_grad(), self.policy.evaluating():
            latent = self.policy.encode({c: t.to(self.policy.device) for c, t in images.items()}, instructions)
            self._last_latent = latent.tokens[0].float().cpu().numpy(), latent.mask[0].cpu().numpy()
        return self._last_latent

    def last_features(self) -> np.ndarray:
        """The success detector's features (`irevla.reward.features.pool_tokens`, (2 d,)) of the observation the
        last `encode` saw: the VLM's hidden states it returned, pooled -- no second VLM pass."""
        from irevla.reward.features import pool_tokens

        with self._lock:
            latent = self._last_latent
        if latent is None:
            raise RuntimeError("PolicyRunner.last_features: nothing encoded yet")
        return pool_tokens(*latent)

    def act_from_latent(self, tokens: np.ndarray, mask: np.ndarray, proprio: np.ndarray) -> np.ndarray:
        """The head's action (float32[7], clipped to the ActionSpec) for a stored latent: the RL actor's step."""
        import torch

        from irevla.policy.backbones import TokenSequence

        latent = TokenSequence(torch.as_tensor(tokens)[None], torch.as_tensor(mask, dtype=torch.bool)[None])
        with self._lock, torch.no_grad(), self.policy.evaluating():
            actions = self.policy.head_actions(latent, torch.as_tensor(proprio, dtype=torch.float32)[None])
        values = actions[0, 0].float().cpu().numpy()
        if not np.all(np.isfinite(values)):
            raise ValueError("the head produced non-finite actions; refusing to return them")
        return self.action_spec.clip(values)

    def load_head_state(self, state: Mapping[str, Any], version: int) -> None:
        """Swap in head parameters from the RL learner (numpy or torch arrays with the head's names)."""
        import torch

        tensors = {name: torch.as_tensor(np.asarray(value)) for name, value in state.items()}
        with self._lock:
            self.policy.load_head_state(tensors, where=f"head version {version}")
            self.version = int(version)


class LatentActorRunner:
    """A `PolicyRunner` as the learner's actor: `encode` gives the latent message the learner stores (``pooled``:
    the token learner's output, fp16 (1, D) with mask [True]; ``tokens``: the VLM's fp16 (m, d) tokens + mask),
    `act_from_latent` the action on it -- ``tanh(mu + exp(log_std) * eps)`` in unit space when exploring, the head's
    mean ``tanh(mu)`` (exactly the deployed VLA) otherwise -- and `load_head_state` takes the learner's message
    (``mlp.*`` in pooled mode, plus ``exploration.log_std``). All three are `LatentActor`'s code (torch only: the
    robot never loads JAX)."""

    def __init__(self, runner: PolicyRunner, latent: str = "pooled", explore: bool = True, seed: int = 0,
                 initial_log_std: float = -1.6, noise_beta: float = 0.0, noise_horizon: int = 1000) -> None:
        from irevla.policy.latent_actor import LatentActor

        self.runner, self.explore = runner, bool(explore)
        with runner._lock:
            self.actor = LatentActor(runner.policy, latent, seed=seed, initial_log_std=initial_log_std,
                                     noise_beta=noise_beta, noise_horizon=noise_horizon)
        self._last_latent: np.ndarray | None = None

    @property
    def action_spec(self) -> ActionSpec:
        return self.runner.action_spec

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.runner.cameras

    @property
    def source(self) -> str:
        return self.runner.source

    @property
    def version(self) -> int:
        """The version of the head acting now (0: the checkpoint's)."""
        return self.actor.version

    @property
    def latent(self) -> str:
        return self.actor.latent_mode

    @property
    def log_std(self) -> np.ndarray:
        return self.actor.log_std.copy()

    def info(self) -> dict:
        return self.runner.info() | {"version": self.version, "latent": self.latent, "explore": self.explore}

    def observation(self, images: Mapping[str, np.ndarray], proprio: np.ndarray, instruction: str,
                    timestamp: float) -> Observation:
        return self.runner.observation(images, proprio, instruction, timestamp)

    def start_episode(self) -> None:
        """A new episode: the next exploration-noise sequence (coloured noise is drawn per episode)."""
        with self.runner._lock:
            self.actor.start_episode()

    def encode(self, observation: Observation) -> tuple[np.ndarray, np.ndarray]:
        """The latent message of `observation` (fp16 tokens, bool mask); runs the frozen VLM once."""
        with self.runner._lock:
            tokens, mask = self.actor.observe(observation)
        self._last_latent = tokens
        return tokens, mask

    def last_features(self) -> np.ndarray:
        """The success detector's features (`irevla.reward.features.pool_tokens`, (2 d,)) of the observation the
        last `encode` saw: the VLM's last hidden states `LatentActor.observe` kept (in either latent mode), pooled
        -- the detector costs no second VLM pass."""
        from irevla.reward.features import pool_tokens

        with self.runner._lock:
            tokens, mask = self.actor.last_tokens, self.actor.last_mask
        if tokens is None or mask is None:
            raise RuntimeError("LatentActorRunner.last_features: nothing encoded yet")
        return pool_tokens(tokens, mask)

    def act_from_latent(self, tokens: np.ndarray, mask: np.ndarray, proprio: np.ndarray) -> np.ndarray:
        """The action (float32[7], clipped to the ActionSpec) for the latent the last `encode` returned: LatentActor
        acts on what it observed (the fp32 pooled vector and the observation's normalised proprio), so acting on
        any other latent is refused rather than silently answered for the wrong one."""
        if tokens is not self._last_latent:
            raise ValueError("LatentActorRunner.act_from_latent: pass the latent the last encode() returned")
        with self.runner._lock:
            return self.actor.act(self.explore).astype(np.float32)

    def load_head_state(self, state: Mapping[str, Any], version: int) -> None:
        """Apply a head message from the learner (a subset of ``VLAPolicy.head_state`` names + the exploration
        log-std); on an error nothing of the policy changes."""
        arrays = {name: np.asarray(value) for name, value in state.items()}
        with self.runner._lock:
            log_std = self.actor.log_std.copy()
            try:
                self.actor.apply_head(int(version), arrays)
            except Exception:
                self.actor.log_std = log_std  # apply_head takes the log-std before it checks the tensors
                raise
            self.runner.version = self.actor.version


def timed_act(runner: PolicyRunner, observation: Observation) -> tuple[np.ndarray, float]:
    begin = time.perf_counter()
    action = runner.act(observation)
    return action, time.perf_counter() - begin
