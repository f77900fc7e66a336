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

`PPOLearner` (at the end) is the algorithm's part of `irevla.learner.learner.Learner`: the on-policy batch, head
versions and the update; episode intake, the demo buffer, publishing and snapshots are the shared learner's.

Actions are in the head's unit space [-1, 1]; proprio is raw and normalised inside with the `HeadSpec`'s constants.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from irevla.learner.config import PPOConfig
from irevla.learner.flax_head import FlaxHead, HeadSpec, check_tree_matches, params_from_state, state_from_params
from irevla.learner.learner import EpisodeData, Learner, load_state_arrays, save_state_arrays
from irevla.learner.replay import LatentReplay
from irevla.learner.sac import EPS, LOG_STD_MAX, LOG_STD_MIN
from irevla.learner.sac import sac_state_arrays as tree_arrays  # generic: any pytree -> named arrays
from irevla.learner.sac import sac_state_from_arrays as tree_from_arrays

log = logging.getLogger("irevla.learner.ppo")

ACTION_LIMIT = 1.0 - 1e-6  # executed unit actions are clipped to this before arctanh (tanh saturates at 1.0 in f32)
CHUNK = 256  # rows per forward pass when computing values / behaviour log-probs (one compiled shape)


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
class Rollouts:
    """The on-policy episodes waiting for the next update; ``len`` is their number of transitions."""

    def __init__(self) -> None:
        self.episodes: list[EpisodeData] = []

    def append(self, episode: EpisodeData) -> None:
        self.episodes.append(episode)

    def __len__(self) -> int:
        return sum(episode.steps for episode in self.episodes)

    @property
    def episode_count(self) -> int:
        return len(self.episodes)


class PPOLearner(Learner):
    """PPO's part of the learner: on-policy episodes, head versions, the update.

    Versions: ``version`` is the newest head handed out by `head_message`. ``accepted`` holds the versions whose
    parameters equal the current ones (several when heads were published without an update in between); an episode
    all of whose steps carry an accepted version is on-policy, any other is stale (dropped, counted in
    ``stale_episodes``). `update` consumes the batch and clears ``accepted`` until the next `head_message`.
    """

    algorithm = "ppo"
    config: PPOConfig

    def __init__(self, spec: HeadSpec, config: PPOConfig, actor_state: Mapping[str, Any] | None,
                 demo: LatentReplay | None = None) -> None:
        super().__init__(spec, config, actor_state, demo)
        self.agent = PPOAgent(spec, config)
        self.state = self.agent.init(actor_state, seed=config.seed)
        self.behaviour = (self.state.actor_params, self.state.log_std)  # the parameters `accepted` versions have
        self.rollouts = Rollouts()
        self.rng = np.random.default_rng(config.seed)
        self.accepted: set[int] = {0}  # the actor's initial head is the one we start from
        self.stale_episodes = 0
        self.stale_transitions = 0

    @property
    def online(self) -> Rollouts:
        """The pending on-policy batch (the SAC learner's online replay's place, for drivers that log its size)."""
        return self.rollouts

    def accept(self, episode: EpisodeData) -> dict[str, Any]:
        on_policy = episode.versions <= self.accepted
        if on_policy:
            self.rollouts.append(episode)
        else:
            self.stale_episodes += 1
            self.stale_transitions += episode.steps
        return {"on_policy": on_policy}

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

    def _update(self) -> dict[str, float]:
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
        self.rollouts = Rollouts()
        self.accepted = set()
        return last | {
            "explained_variance": explained, "minibatch_steps": float(steps), "batch_transitions": float(size),
            "batch_episodes": float(len(episodes)), "batch_success": successes / len(episodes),
            "log_std": float(np.mean(self.agent.exploration_log_std(self.state))),
            "stale_episodes": float(self.stale_episodes)}

    def head_params(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return self.agent.actor_state(self.state), self.agent.exploration_log_std(self.state)

    def _published(self, version: int) -> None:
        if self.accepted:  # no update since the last head: same parameters, older versions stay on-policy
            self.accepted.add(version)
        else:
            self.accepted = {version}
            self.behaviour = (self.state.actor_params, self.state.log_std)

    # --------------------------------------------------------------------------------------------- snapshots
    def _save_state(self, directory: Path) -> dict[str, Any]:
        """The PPO state, the behaviour parameters and the pending rollouts."""
        save_state_arrays(directory / "ppo_state.safetensors", tree_arrays(self.state))
        save_state_arrays(directory / "behaviour.safetensors", tree_arrays(self.behaviour))
        episodes = self.rollouts.episodes
        arrays: dict[str, np.ndarray] = {"steps": np.array([e.steps for e in episodes], np.int64),
                                         "success": np.array([e.success for e in episodes], bool)}
        if episodes:
            for name in ("latent", "mask", "proprio", "action", "intervention"):
                if getattr(episodes[0], name) is not None:
                    arrays[name] = np.ascontiguousarray(np.concatenate([getattr(e, name) for e in episodes]))
        save_state_arrays(directory / "rollouts.safetensors", arrays)
        return {"accepted": sorted(self.accepted), "stale_episodes": self.stale_episodes,
                "stale_transitions": self.stale_transitions, "rng": self.rng.bit_generator.state}

    def _load_state(self, directory: Path, counters: Mapping[str, Any]) -> None:
        state_path, behaviour_path = directory / "ppo_state.safetensors", directory / "behaviour.safetensors"
        self.state = tree_from_arrays(self.state, load_state_arrays(state_path), str(state_path))
        self.behaviour = tree_from_arrays(self.behaviour, load_state_arrays(behaviour_path), str(behaviour_path))
        arrays = load_state_arrays(directory / "rollouts.safetensors")
        observation, action = 0, 0  # offsets: each episode has one more observation than actions
        for steps, success in zip(arrays["steps"].tolist(), arrays["success"].tolist(), strict=True):
            observations, actions = slice(observation, observation + steps + 1), slice(action, action + steps)
            self.rollouts.append(EpisodeData(
                latent=arrays["latent"][observations], mask=arrays["mask"][observations] if "mask" in arrays else None,
                proprio=arrays["proprio"][observations], action=arrays["action"][actions],
                intervention=arrays["intervention"][actions], success=bool(success), versions=frozenset()))
            observation, action = observation + steps + 1, action + steps
        self.stale_episodes, self.stale_transitions = int(counters["stale_episodes"]), int(counters["stale_transitions"])
        self.accepted = {int(v) for v in counters["accepted"]}
        self.rng.bit_generator.state = counters["rng"]
