"""PPO on the VLA's action head, on frozen-VLM latents -- an alternative stage-1 algorithm for simulation.

The paper's simulation comparison trains with PPO; the real robot uses SACfD (`irevla.learner.sac`). This file is
cleanrl's ``ppo_continuous_action.py`` adapted to the head, read top to bottom:

* **policy** = the VLA's action head (`FlaxHead`, output A) + a learned, state-independent ``log_std``: the same
  tanh-Gaussian as SAC's actor, ``a = tanh(mu + std * eps)``, so an actor samples exactly as it does for SAC and the
  deployed action is still the torch VLA's ``tanh(mu)`` from the same, torch-named parameters.
* **value** = a fresh head of the same structure with one output (its own token learner in ``tokens`` mode).
* **rollouts**: whole episodes collected with one head version. The actor sends only the executed action, so the
  behaviour log-probability ``log pi_old(a|s)`` is recomputed here from the parameters that version had (kept as
  ``behaviour``). Episodes from any other version are stale for an on-policy method: dropped and counted.
* **advantages**: GAE(lambda) with the sparse binary reward (1 on the last step of a successful episode, which is
  terminal); an episode that hit its time limit is not terminal -- bootstrap from the value of its final observation.
* **update**: ``epochs`` passes over the batch in shuffled minibatches of a fixed size (one compiled step; the last,
  short minibatch is padded with zero-weight rows): clipped surrogate + value MSE - entropy bonus (+ optional BC
  toward demo actions), one Adam step with global-norm clipping per minibatch.

`PPOLearner` has `irevla.learner.learner.Learner`'s interface (ingest / updates_allowed / update / head_message /
snapshot / restore), so a driver (a sim loop, ``serve``) can use either.

Actions are in the head's unit space [-1, 1]; proprio is raw and normalised inside with the `HeadSpec`'s constants.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from pydantic import Field

from irevla.atomic_io import atomic_write_bytes, atomic_write_text
from irevla.config import ConfigModel
from irevla.learner.flax_head import FlaxHead, HeadSpec, check_tree_matches, params_from_state, state_from_params
from irevla.head_file import LOG_STD_NAME
from irevla.transport.messages import EpisodeEnd, Transition
from irevla.learner.replay import LatentReplay
from irevla.learner.sac import EPS, LOG_STD_MAX, LOG_STD_MIN
from irevla.learner.sac import sac_state_arrays as tree_arrays  # generic: any pytree -> named arrays
from irevla.learner.sac import sac_state_from_arrays as tree_from_arrays

log = logging.getLogger("irevla.learner.ppo")

ACTION_LIMIT = 1.0 - 1e-6  # executed unit actions are clipped to this before arctanh (tanh saturates at 1.0 in f32)
CHUNK = 256  # rows per forward pass when computing values / behaviour log-probs (one compiled shape)


class PPOConfig(ConfigModel):
    """Stage-1 PPO settings (defaults: cleanrl's ppo_continuous_action, except the on-policy batch in episodes) and
    the learner's (buffers, publishing, snapshots) -- the ``rl.ppo`` section of a loop config."""

    clip: float = Field(default=0.2, gt=0, description="PPO ratio clip epsilon")
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    discount: float = Field(default=0.99, gt=0, le=1)
    lr: float = Field(default=3e-4, gt=0, description="Adam learning rate (policy, log_std and value)")
    epochs: int = Field(default=4, ge=1, description="passes over each on-policy batch")
    minibatch_size: int = Field(default=64, ge=2, description="transitions per gradient step")
    episodes_per_update: int = Field(default=16, ge=1, description="complete on-policy episodes per update")
    value_coef: float = Field(default=0.5, ge=0)
    entropy_coef: float = Field(default=0.0, ge=0, description="weight of the Gaussian entropy bonus")
    grad_clip: float = Field(default=0.5, gt=0, description="global gradient-norm clip")
    initial_log_std: float = Field(default=-1.6, description="log std of the exploration noise at the start "
                                                             "(unit action space; -1.6 = std 0.2)")
    normalize_advantages: bool = Field(default=True, description="zero-mean, unit-std advantages over the batch")
    target_kl: float | None = Field(default=None, gt=0, description="stop the epochs early once the approximate "
                                                                    "KL to the behaviour policy exceeds this")
    bc_weight: float = Field(default=0.0, ge=0, description="weight of MSE(mean action, demo action) on a demo "
                                                           "minibatch per step (needs a demo buffer)")
    value_hidden: tuple[int, ...] | None = Field(default=None, description="value MLP widths (default: the actor "
                                                                           "head's)")
    # the learner around the algorithm (`PPOLearner`)
    demo_capacity: int = Field(default=100_000, ge=2, description="observations in the demo buffer (BC term)")
    interventions_to_demo: bool = Field(default=True, description="copy episodes with human interventions into "
                                                                  "the demo buffer")
    publish_every: int = Field(default=1, ge=1, description="publish the head every this many updates (1: after "
                                                            "each update, else no new episode is on-policy)")
    snapshot_every_s: float = Field(default=60.0, gt=0, description="snapshot state and rollouts this often")
    seed: int = 0


@flax.struct.dataclass
class PPOState:
    """Everything that changes during training; one immutable value, replaced by each minibatch step."""

    actor_params: Any
    log_std: jax.Array
    value_params: Any
    opt: Any
    rng: jax.Array
    step: jax.Array


def _masked_mean(x: jax.Array, weight: jax.Array) -> jax.Array:
    return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)


class PPOAgent:
    """Builds the networks and the jitted minibatch step for one `HeadSpec` + `PPOConfig`."""

    def __init__(self, spec: HeadSpec, config: PPOConfig) -> None:
        if spec.action_chunk != 1:
            raise ValueError(f"PPO on the head needs action_chunk 1 (the head predicts {spec.action_chunk} steps)")
        self.spec, self.config = spec, config
        self.action_dim = spec.action_dim
        self.actor = FlaxHead(spec, output_dim=spec.action_dim)
        value_spec = spec if config.value_hidden is None else HeadSpec(
            **{**spec.__dict__, "hidden": tuple(config.value_hidden)})
        self.critic = FlaxHead(value_spec, output_dim=1)
        self.tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.lr))

    # The jitted functions (`_jit_*` below the class) take the agent as a static argument: agents with the same spec
    # and config (a restored learner, a second learner in a test) share one compilation.
    def __hash__(self) -> int:
        return hash((self.spec, self.config))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PPOAgent) and (self.spec, self.config) == (other.spec, other.config)

    # ------------------------------------------------------------------------------------------- construction
    def _example_inputs(self, batch: int = 1) -> tuple:
        latent = jnp.zeros((batch, *self.spec.latent_shape), jnp.float32)
        mask = jnp.ones((batch, self.spec.latent_length), bool) if self.spec.latent == "tokens" else None
        proprio = jnp.zeros((batch, self.spec.proprio_dim), jnp.float32)
        return latent, mask, proprio

    def _init_params(self, actor_key: jax.Array, value_key: jax.Array) -> tuple[Any, Any]:
        latent, mask, proprio = self._example_inputs()
        proprio_unit = self.spec.proprio_to_unit(proprio)
        return (self.actor.init(actor_key, latent, mask, proprio_unit)["params"],
                self.critic.init(value_key, latent, mask, proprio_unit)["params"])

    def init(self, actor_state: Mapping[str, Any] | None, seed: int = 0) -> PPOState:
        """A fresh agent; the policy starts from `actor_state` (torch-named head tensors of the current VLA)."""
        rng = jax.random.PRNGKey(seed)
        rng, actor_key, value_key = jax.random.split(rng, 3)
        actor_params, value_params = _jit_init_params(self, actor_key, value_key)  # jitted: one compilation
        if actor_state is not None:
            loaded = params_from_state(actor_state, prefix="mlp." if self.spec.latent == "pooled" else "")
            check_tree_matches(loaded, actor_params, "PPOAgent.init(actor_state)")
            actor_params = loaded
        log_std = jnp.full((self.action_dim,), self.config.initial_log_std, jnp.float32)
        return PPOState(actor_params=actor_params, log_std=log_std, value_params=value_params,
                        opt=self.tx.init((actor_params, log_std, value_params)), rng=rng,
                        step=jnp.zeros((), jnp.int32))

    # ---------------------------------------------------------------------------------------------- networks
    def _mean_action(self, actor_params, latent, mask, proprio):
        return jnp.tanh(self.actor.apply({"params": actor_params}, latent, mask, self.spec.proprio_to_unit(proprio)))

    def _log_prob(self, actor_params, log_std, latent, mask, proprio, action):
        """log pi(action | obs) of the tanh-Gaussian (sac.py's `_policy` formula, with eps = (atanh(a) - mu) / std),
        and the mean action tanh(mu)."""
        mu = self.actor.apply({"params": actor_params}, latent, mask, self.spec.proprio_to_unit(proprio))
        log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
        action = jnp.clip(action, -ACTION_LIMIT, ACTION_LIMIT)
        noise = (jnp.arctanh(action) - mu) / jnp.exp(log_std)
        gaussian = -0.5 * (noise ** 2 + 2 * log_std + jnp.log(2 * jnp.pi))
        return jnp.sum(gaussian - jnp.log(1 - action ** 2 + EPS), axis=-1), jnp.tanh(mu)

    def _value(self, value_params, latent, mask, proprio):
        return self.critic.apply({"params": value_params}, latent, mask, self.spec.proprio_to_unit(proprio))[..., 0]

    # ------------------------------------------------------------------------------------------------ update
    def _minibatch_step(self, state: PPOState, batch: dict) -> tuple[PPOState, dict]:
        """One gradient step. `batch`: latent, mask?, proprio, action, old_log_prob, advantage, target (return),
        weight (0 for padding rows), policy_weight (0 also for human-intervention steps: not the policy's actions),
        and demo_latent, demo_mask?, demo_proprio, demo_action when BC is on."""
        config = self.config

        def loss_fn(variables):
            actor_params, log_std, value_params = variables
            log_prob, _ = self._log_prob(actor_params, log_std, batch["latent"], batch.get("mask"), batch["proprio"],
                                         batch["action"])
            log_ratio = log_prob - batch["old_log_prob"]
            ratio = jnp.exp(log_ratio)
            advantage = batch["advantage"]
            surrogate = jnp.maximum(-advantage * ratio,
                                    -advantage * jnp.clip(ratio, 1 - config.clip, 1 + config.clip))
            policy_loss = _masked_mean(surrogate, batch["policy_weight"])
            value = self._value(value_params, batch["latent"], batch.get("mask"), batch["proprio"])
            value_loss = 0.5 * _masked_mean((value - batch["target"]) ** 2, batch["weight"])
            clipped_log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
            entropy = jnp.sum(clipped_log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e))  # of the Gaussian before tanh
            bc = 0.0
            if "demo_action" in batch:  # a pytree-structure choice: compiled once with, once without
                demo_mean = self._mean_action(actor_params, batch["demo_latent"], batch.get("demo_mask"),
                                              batch["demo_proprio"])
                bc = jnp.mean((demo_mean - batch["demo_action"]) ** 2)
            loss = (policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
                    + config.bc_weight * bc)
            info = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy, "bc_loss": bc,
                    "approx_kl": _masked_mean((ratio - 1) - log_ratio, batch["policy_weight"]),
                    "clip_fraction": _masked_mean((jnp.abs(ratio - 1) > config.clip).astype(jnp.float32),
                                                  batch["policy_weight"])}
            return loss, info

        variables = (state.actor_params, state.log_std, state.value_params)
        (loss, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables)
        updates, opt = self.tx.update(grads, state.opt, variables)
        actor_params, log_std, value_params = optax.apply_updates(variables, updates)
        state = state.replace(actor_params=actor_params, log_std=jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX),
                              value_params=value_params, opt=opt, step=state.step + 1)
        return state, info | {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    def minibatch_step(self, state: PPOState, batch: Mapping[str, np.ndarray]) -> tuple[PPOState, dict]:
        return _jit_minibatch_step(self, state, {key: jnp.asarray(value) for key, value in batch.items()})

    # ------------------------------------------------------------------------------------ batched inference
    def _chunked(self, function, params: tuple, latent: np.ndarray, mask: np.ndarray | None, proprio: np.ndarray,
                 *extra: np.ndarray) -> list[np.ndarray]:
        """`function(self, *params, latent, mask, proprio, *extra)` over rows in chunks of CHUNK (the last one padded),
        so any batch size reuses one compiled shape."""
        rows = len(latent)
        outputs: list[list[np.ndarray]] = []
        for start in range(0, rows, CHUNK):
            stop = min(start + CHUNK, rows)
            pad = CHUNK - (stop - start)

            def take(array, start=start, stop=stop, pad=pad):
                if array is None:
                    return None
                part = np.asarray(array[start:stop])
                return jnp.asarray(np.concatenate([part, np.repeat(part[-1:], pad, axis=0)]) if pad else part)

            result = function(self, *params, take(latent), take(mask), take(proprio), *(take(e) for e in extra))
            result = result if isinstance(result, tuple) else (result,)
            outputs.append([np.asarray(r)[: stop - start] for r in result])
        return [np.concatenate(parts) for parts in zip(*outputs, strict=True)]

    def values(self, state: PPOState, latent: np.ndarray, mask: np.ndarray | None, proprio: np.ndarray
               ) -> np.ndarray:
        return self._chunked(_jit_value, (state.value_params,), latent, mask, proprio)[0]

    def log_probs(self, actor_params, log_std, latent: np.ndarray, mask: np.ndarray | None, proprio: np.ndarray,
                  action: np.ndarray) -> np.ndarray:
        return self._chunked(_jit_log_prob, (actor_params, log_std), latent, mask, proprio, action)[0]

    # ---------------------------------------------------------------------------------------------- exchange
    def mean_action(self, state: PPOState, latent: np.ndarray, mask: np.ndarray | None, proprio: np.ndarray
                    ) -> np.ndarray:
        """The deterministic (deployed) action in unit space, (B, A)."""
        return np.asarray(_jit_mean_action(self, state.actor_params, jnp.asarray(latent, jnp.float32),
                                                   None if mask is None else jnp.asarray(mask),
                                                   jnp.asarray(proprio)))

    def actor_state(self, state: PPOState) -> dict[str, np.ndarray]:
        """The policy head's parameters with torch names (``mlp.*`` only in pooled mode) -- what the VLA loads."""
        return state_from_params(state.actor_params)

    @staticmethod
    def exploration_log_std(state: PPOState) -> np.ndarray:
        return np.asarray(jnp.clip(state.log_std, LOG_STD_MIN, LOG_STD_MAX))


_jit_init_params = jax.jit(PPOAgent._init_params, static_argnums=0)
_jit_minibatch_step = jax.jit(PPOAgent._minibatch_step, static_argnums=0)
_jit_value = jax.jit(PPOAgent._value, static_argnums=0)
_jit_log_prob = jax.jit(PPOAgent._log_prob, static_argnums=0)
_jit_mean_action = jax.jit(PPOAgent._mean_action, static_argnums=0)


# ------------------------------------------------------------------------------------------------ advantages
def gae(rewards: np.ndarray, values: np.ndarray, terminal: bool, discount: float, lam: float
        ) -> tuple[np.ndarray, np.ndarray]:
    """GAE(lambda) for one episode: `rewards` (T,), `values` (T + 1,) including the final observation's.

    `terminal` (a success) means the final observation has no future: its value is not bootstrapped. A time-limit
    end is not terminal: V(final) stands in for the rest of the return. -> (advantages (T,), value targets (T,)).
    """
    steps = len(rewards)
    next_values = values[1:].copy()
    if terminal:
        next_values[-1] = 0.0
    deltas = rewards + discount * next_values - values[:-1]
    advantages = np.zeros(steps, np.float32)
    running = 0.0
    for t in reversed(range(steps)):
        running = deltas[t] + discount * lam * running
        advantages[t] = running
    return advantages, advantages + values[:-1]


# ----------------------------------------------------------------------------------------------- the learner
@dataclass
class _OpenEpisode:
    steps: list[Transition] = field(default_factory=list)


@dataclass
class Rollout:
    """One complete on-policy episode: T + 1 observations (the last is the final one), T unit actions."""

    latent: np.ndarray
    mask: np.ndarray | None
    proprio: np.ndarray
    action: np.ndarray
    intervention: np.ndarray
    success: bool

    @property
    def steps(self) -> int:
        return len(self.action)


class Rollouts:
    """The on-policy episodes waiting for the next update; ``len`` is their number of transitions."""

    def __init__(self) -> None:
        self.episodes: list[Rollout] = []

    def append(self, episode: Rollout) -> None:
        self.episodes.append(episode)

    def __len__(self) -> int:
        return sum(episode.steps for episode in self.episodes)

    @property
    def episode_count(self) -> int:
        return len(self.episodes)


class PPOLearner:
    """The transport-free PPO learner: same interface as `irevla.learner.learner.Learner`.

    Versions: ``version`` is the newest head handed out by `head_message`. ``accepted`` holds the versions whose
    parameters equal the current ones (several when heads were published without an update in between); an episode
    all of whose steps carry an accepted version is on-policy, any other is stale (dropped, counted in
    ``stale_episodes``). `update` consumes the batch and clears ``accepted`` until the next `head_message`.
    """

    def __init__(self, spec: HeadSpec, config: PPOConfig, actor_state: Mapping[str, Any] | None,
                 demo: LatentReplay | None = None) -> None:
        self.spec, self.config = spec, config
        self.agent = PPOAgent(spec, config)
        self.state = self.agent.init(actor_state, seed=config.seed)
        self.behaviour = (self.state.actor_params, self.state.log_std)  # the parameters `accepted` versions have
        self.demo = demo if demo is not None else LatentReplay(
            config.demo_capacity, spec.latent_shape, spec.proprio_dim, spec.action_dim,
            with_mask=spec.latent == "tokens")
        self.rollouts = Rollouts()
        self.rng = np.random.default_rng(config.seed)
        self.updates = 0
        self.version = 0
        self.accepted: set[int] = {0}  # the actor's initial head is the one we start from
        self.received_transitions = 0
        self.episodes = 0
        self.successes = 0
        self.stale_episodes = 0
        self.stale_transitions = 0
        self.open: dict[tuple[str, int], _OpenEpisode] = {}
        self.last_info: dict[str, float] = {}
        self.episode_log: list[dict] = []

    @property
    def online(self) -> Rollouts:
        """The pending on-policy batch (``Learner.online``'s place, for drivers that log its size)."""
        return self.rollouts

    # ----------------------------------------------------------------------------------------------- ingest
    def latent_of(self, tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.spec.latent == "pooled":
            return np.asarray(tokens).reshape(self.spec.latent_shape), None
        return np.asarray(tokens), np.asarray(mask, bool)

    def ingest(self, item: Transition | EpisodeEnd, actor: str = "actor") -> None:
        if isinstance(item, Transition):
            self.open.setdefault((actor, item.episode), _OpenEpisode()).steps.append(item)
            self.received_transitions += 1
            return
        if isinstance(item, EpisodeEnd):
            episode = self.open.pop((actor, item.episode), None)
            if episode is None or not episode.steps:
                log.warning("episode end from %s for episode %s without steps: ignored", actor, item.episode)
                return
            self._finish_episode(sorted(episode.steps, key=lambda s: s.step), item)
            return
        raise TypeError(f"PPOLearner.ingest: expected Transition or EpisodeEnd, got {type(item).__name__}")

    def _finish_episode(self, steps: list[Transition], end: EpisodeEnd) -> None:
        success = bool(end.success)
        on_policy = all(s.policy_version in self.accepted for s in steps)
        interventions = int(sum(s.intervention for s in steps))
        self.episodes += 1
        self.successes += int(success)
        self.episode_log.append({"episode": self.episodes, "success": success, "steps": len(steps),
                                 "interventions": interventions, "on_policy": on_policy, "updates": self.updates,
                                 "time": time.time()})
        latents, masks = zip(*(self.latent_of(s.latent_tokens, s.latent_mask) for s in steps), strict=True)
        final_latent, final_mask = self.latent_of(end.final_tokens, end.final_mask)
        tokens = self.spec.latent == "tokens"
        rollout = Rollout(latent=np.stack([*latents, final_latent]),
                          mask=np.stack([*masks, final_mask]) if tokens else None,
                          proprio=np.stack([np.asarray(s.proprio, np.float32) for s in steps]
                                           + [np.asarray(end.final_proprio, np.float32)]),
                          action=self.spec.action_to_unit(np.stack([s.action for s in steps]).astype(np.float32)),
                          intervention=np.array([s.intervention for s in steps], bool), success=success)
        if interventions and self.config.interventions_to_demo:
            self.demo.add_episode(rollout.latent, rollout.mask, rollout.proprio, rollout.action, success=success)
        if on_policy:
            self.rollouts.append(rollout)
        else:
            self.stale_episodes += 1
            self.stale_transitions += len(steps)

    # ----------------------------------------------------------------------------------------------- update
    def updates_allowed(self) -> int:
        return int(bool(self.accepted) and self.rollouts.episode_count >= self.config.episodes_per_update)

    def _batch(self) -> dict[str, np.ndarray]:
        """The pending episodes as one flat batch of transitions with old log-probs, advantages and targets."""
        config = self.config
        episodes = self.rollouts.episodes
        latent = np.concatenate([e.latent for e in episodes])  # every observation, finals included
        mask = np.concatenate([e.mask for e in episodes]) if self.spec.latent == "tokens" else None
        proprio = np.concatenate([e.proprio for e in episodes])
        values = self.agent.values(self.state, latent, mask, proprio)
        starts = np.cumsum([0] + [e.steps + 1 for e in episodes])
        obs_index, advantages, targets = [], [], []
        for episode, start in zip(episodes, starts[:-1], strict=True):
            rewards = np.zeros(episode.steps, np.float32)
            rewards[-1] = float(episode.success)
            adv, target = gae(rewards, values[start:start + episode.steps + 1], episode.success, config.discount,
                              config.gae_lambda)
            obs_index.append(start + np.arange(episode.steps))
            advantages.append(adv)
            targets.append(target)
        index = np.concatenate(obs_index)
        action = np.concatenate([e.action for e in episodes])
        batch = {"latent": latent[index], "proprio": proprio[index], "action": action,
                 "advantage": np.concatenate(advantages), "target": np.concatenate(targets).astype(np.float32),
                 "value": values[index], "weight": np.ones(len(index), np.float32),
                 "policy_weight": (~np.concatenate([e.intervention for e in episodes])).astype(np.float32)}
        if mask is not None:
            batch["mask"] = mask[index]
        batch["old_log_prob"] = self.agent.log_probs(*self.behaviour, batch["latent"], batch.get("mask"),
                                                     batch["proprio"], action)
        if config.normalize_advantages:
            policy = batch["policy_weight"] > 0
            scale = batch["advantage"][policy].std() if policy.any() else 1.0
            center = batch["advantage"][policy].mean() if policy.any() else 0.0
            batch["advantage"] = (batch["advantage"] - center) / (scale + 1e-8)
        batch["advantage"] = batch["advantage"].astype(np.float32)
        return batch

    def update(self) -> dict[str, float]:
        """One PPO update on every pending on-policy episode; afterwards no version is on-policy until the next
        `head_message` hands out the new parameters."""
        config = self.config
        episodes = self.rollouts.episodes
        if not episodes:
            raise RuntimeError("PPOLearner.update: no on-policy episodes collected (check updates_allowed())")
        batch = self._batch()
        size, minibatch = len(batch["action"]), config.minibatch_size
        use_bc = config.bc_weight > 0 and len(self.demo) > 0
        infos: list[dict] = []
        steps = 0
        for _ in range(config.epochs):
            order = self.rng.permutation(size)
            for start in range(0, size, minibatch):
                rows = order[start:start + minibatch]
                pad = minibatch - len(rows)
                rows = np.concatenate([rows, rows[:1].repeat(pad)]) if pad else rows
                part = {key: value[rows] for key, value in batch.items() if key != "value"}
                if pad:  # padding rows repeat a real row with weight 0
                    part["weight"], part["policy_weight"] = part["weight"].copy(), part["policy_weight"].copy()
                    part["weight"][-pad:] = part["policy_weight"][-pad:] = 0.0
                if use_bc:
                    demo = self.demo.sample(self.rng, minibatch)
                    part |= {"demo_latent": demo["latent"], "demo_proprio": demo["proprio"],
                             "demo_action": demo["action"].astype(np.float32)}
                    if "mask" in demo:
                        part["demo_mask"] = demo["mask"]
                self.state, info = self.agent.minibatch_step(self.state, part)
                infos.append(info)
                steps += 1
            if config.target_kl is not None and float(infos[-1]["approx_kl"]) > config.target_kl:
                break
        last = {key: float(value) for key, value in infos[-1].items()}
        variance = float(np.var(batch["target"]))
        explained = 1.0 - float(np.var(batch["target"] - batch["value"])) / variance if variance > 0 else math.nan
        successes = sum(e.success for e in episodes)
        self.last_info = last | {
            "explained_variance": explained, "minibatch_steps": float(steps), "batch_transitions": float(size),
            "batch_episodes": float(len(episodes)), "batch_success": successes / len(episodes),
            "log_std": float(np.mean(self.agent.exploration_log_std(self.state))),
            "stale_episodes": float(self.stale_episodes)}
        self.rollouts = Rollouts()
        self.accepted = set()
        self.updates += 1
        return self.last_info

    def head_message(self) -> tuple[int, dict[str, np.ndarray]]:
        """(version, parameters): the policy head (torch names) + the exploration log-std. Episodes collected with
        this version are on-policy from now on."""
        self.version += 1
        current = (self.state.actor_params, self.state.log_std)
        if self.accepted:  # no update since the last head: same parameters, older versions stay on-policy
            self.accepted.add(self.version)
        else:
            self.accepted = {self.version}
            self.behaviour = current
        params = self.agent.actor_state(self.state)
        params[LOG_STD_NAME] = self.agent.exploration_log_std(self.state).astype(np.float32)
        return self.version, params

    # --------------------------------------------------------------------------------------------- snapshots
    def snapshot(self, directory: str | Path) -> Path:
        """Write the PPO state, the behaviour parameters, pending rollouts, the demo buffer and counters into
        `directory` (safetensors + JSON, each file atomically; counters last). Open episodes are not kept."""
        from safetensors.numpy import save as save_arrays

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.demo.save(directory / "demo.safetensors")
        atomic_write_bytes(directory / "ppo_state.safetensors", save_arrays(tree_arrays(self.state)))
        atomic_write_bytes(directory / "behaviour.safetensors", save_arrays(tree_arrays(self.behaviour)))
        episodes = self.rollouts.episodes
        rollout_arrays: dict[str, np.ndarray] = {"steps": np.array([e.steps for e in episodes], np.int64),
                                                 "success": np.array([e.success for e in episodes], bool)}
        if episodes:
            for name in ("latent", "mask", "proprio", "action", "intervention"):
                if getattr(episodes[0], name) is not None:
                    rollout_arrays[name] = np.ascontiguousarray(np.concatenate([getattr(e, name) for e in episodes]))
        atomic_write_bytes(directory / "rollouts.safetensors", save_arrays(rollout_arrays))
        counters = {"algorithm": "ppo", "updates": self.updates, "version": self.version,
                    "accepted": sorted(self.accepted), "episodes": self.episodes, "successes": self.successes,
                    "stale_episodes": self.stale_episodes, "stale_transitions": self.stale_transitions,
                    "received_transitions": self.received_transitions, "rng": self.rng.bit_generator.state,
                    "episode_log": self.episode_log[-10_000:], "written": time.time()}
        atomic_write_text(directory / "learner.json", json.dumps(counters, indent=1))
        return directory

    @classmethod
    def restore(cls, directory: str | Path, spec: HeadSpec, config: PPOConfig) -> PPOLearner:
        from safetensors.numpy import load_file

        directory = Path(directory)
        counters = json.loads((directory / "learner.json").read_text())
        if counters.get("algorithm") != "ppo":
            raise ValueError(f"{directory / 'learner.json'}: not a PPO learner snapshot "
                             f"(algorithm {counters.get('algorithm')!r})")
        learner = cls(spec, config, actor_state=None,
                      demo=LatentReplay.load(directory / "demo.safetensors", capacity=config.demo_capacity))
        state_path, behaviour_path = directory / "ppo_state.safetensors", directory / "behaviour.safetensors"
        learner.state = tree_from_arrays(learner.state, load_file(str(state_path)), str(state_path))
        learner.behaviour = tree_from_arrays(learner.behaviour, load_file(str(behaviour_path)), str(behaviour_path))
        arrays = load_file(str(directory / "rollouts.safetensors"))
        observation, action = 0, 0  # offsets: each episode has one more observation than actions
        for steps, success in zip(arrays["steps"].tolist(), arrays["success"].tolist(), strict=True):
            observations, actions = slice(observation, observation + steps + 1), slice(action, action + steps)
            learner.rollouts.append(Rollout(
                latent=arrays["latent"][observations], mask=arrays["mask"][observations] if "mask" in arrays else None,
                proprio=arrays["proprio"][observations], action=arrays["action"][actions],
                intervention=arrays["intervention"][actions], success=bool(success)))
            observation, action = observation + steps + 1, action + steps
        for key in ("updates", "version", "episodes", "successes", "stale_episodes", "stale_transitions",
                    "received_transitions"):
            setattr(learner, key, int(counters[key]))
        learner.accepted = {int(v) for v in counters["accepted"]}
        learner.rng.bit_generator.state = counters["rng"]
        learner.episode_log = list(counters.get("episode_log", []))
        return learner
