"""SAC with a REDQ critic ensemble on frozen-VLM latents (SACfD / RLPD batches), in JAX -- read top to bottom.

The design is SERL's (``serl_launcher/agents/continuous/sac.py``) written out without its framework:

* **actor** = the VLA's action head (`FlaxHead`, output A) + a learned, state-independent ``log_std``: a tanh-Gaussian
  ``a = tanh(mu + std * eps)``. The deployed policy is the mean ``tanh(mu)`` -- exactly what the torch VLA computes
  from the same parameters, which go back to it unchanged (`actor_state`).
* **critics** = an ensemble of ``num_critics`` fresh heads of the same structure with the action as an extra input and
  one output (`CriticEnsemble`: independent MLPs; with token latents one token learner shared by all of them, as SERL's
  ensembles share one encoder, or one per critic), LayerNorm MLPs; Polyak-averaged targets.
* **REDQ**: the TD target takes the minimum over a random subset of ``critic_subsample`` target critics; the actor
  maximises the mean over all critics.
* **high update-to-data ratio**: one `update` call draws ``utd`` minibatches and runs ``utd`` critic steps in a
  `lax.scan`, then one actor and one temperature step, all in one jitted function.
* **temperature**: learned ``log_alpha`` toward ``target_entropy`` (default -A/2).
* **SACfD / RLPD**: each batch's first half comes from the demo buffer and its second half from the online buffer
  (`SACTrainer`); an optional BC term pulls the mean action toward the demo
  half's actions (``bc_weight``), which keeps the head near the SFT policy while Q is still uninformed.

Actions are in the head's unit space [-1, 1]; proprio is raw and normalised inside with the `HeadSpec`'s constants.
`SACLearner` (at the end) is the algorithm's part of `irevla.learner.learner.Learner`: the online replay and when to
update; episode intake, the demo buffer, publishing and snapshots are the shared learner's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from irevla.learner.config import LearnerConfig, SACConfig
from irevla.learner.flax_head import (
    CriticEnsemble,
    FlaxHead,
    HeadSpec,
    check_tree_matches,
    params_from_state,
    state_from_params,
)
from irevla.learner.learner import EpisodeData, Learner, load_state_arrays, save_state_arrays
from irevla.learner.replay import LatentReplay

LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0
# What an update reads from a sampled batch (masks only with token latents).
BATCH_KEYS = ("latent", "mask", "proprio", "action", "reward", "terminal", "next_latent", "next_mask", "next_proprio")
EPS = 1e-6


@flax.struct.dataclass
class SACState:
    """Everything that changes during training; one immutable value, replaced by each `update`."""

    actor_params: Any
    log_std: jax.Array
    critic_params: Any
    target_critic_params: Any
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    rng: jax.Array
    step: jax.Array


def _batch_arrays(batch: Mapping[str, np.ndarray], keys: tuple[str, ...]) -> dict[str, jax.Array]:
    return {key: jnp.asarray(batch[key]) for key in keys if key in batch}


class SACAgent:
    """Builds the networks and the jitted update for one `HeadSpec` + `SACConfig`; the state lives in `SACState`."""

    def __init__(self, spec: HeadSpec, config: SACConfig) -> None:
        config.check()
        if spec.action_chunk != 1:
            raise ValueError(f"SAC on the head needs action_chunk 1 (the head predicts {spec.action_chunk} steps)")
        self.spec, self.config = spec, config
        self.action_dim = spec.action_dim
        self.actor = FlaxHead(spec, output_dim=spec.action_dim)
        critic_spec = spec if config.critic_hidden is None else HeadSpec(
            **{**spec.__dict__, "hidden": tuple(config.critic_hidden)})
        self.critics = CriticEnsemble(critic_spec, config.num_critics,
                                      shared_token_learner=config.critic_token_learner == "shared")
        self.target_entropy = (config.target_entropy if config.target_entropy is not None
                               else -self.action_dim / 2.0)
        clip = optax.clip_by_global_norm(config.grad_clip)
        self.actor_tx = optax.chain(clip, optax.adam(config.actor_lr))
        self.critic_tx = optax.chain(clip, optax.adam(config.critic_lr))
        self.alpha_tx = optax.adam(config.temperature_lr)
        self._jitted_update = jax.jit(self._update_impl, static_argnums=(2,))  # demo_count: a slice size, static
        self._mean_action = jax.jit(self._mean_action_impl)

    # ------------------------------------------------------------------------------------------- construction
    def _example_inputs(self, batch: int = 1) -> tuple:
        latent = jnp.zeros((batch, *self.spec.latent_shape), jnp.float32)
        mask = jnp.ones((batch, self.spec.latent_length), bool) if self.spec.latent == "tokens" else None
        proprio = jnp.zeros((batch, self.spec.proprio_dim), jnp.float32)
        return latent, mask, proprio

    def init(self, actor_state: Mapping[str, Any] | None, seed: int = 0) -> SACState:
        """A fresh agent; the actor starts from `actor_state` (torch-named head tensors of the current VLA)."""
        rng = jax.random.PRNGKey(seed)
        rng, actor_key, critic_key = jax.random.split(rng, 3)
        latent, mask, proprio = self._example_inputs()
        actor_params = self.actor.init(actor_key, latent, mask, self.spec.proprio_to_unit(proprio))["params"]
        if actor_state is not None:
            loaded = params_from_state(actor_state, prefix="mlp." if self.spec.latent == "pooled" else "")
            check_tree_matches(loaded, actor_params, "SACAgent.init(actor_state)")
            actor_params = loaded
        action = jnp.zeros((1, self.action_dim), jnp.float32)
        critic_params = self.critics.init(critic_key, latent, mask, self.spec.proprio_to_unit(proprio),
                                          action)["params"]
        if self.config.critic_zero_output:
            out = critic_params["mlp"]["out"]
            critic_params = {**critic_params, "mlp": {**critic_params["mlp"], "out": jax.tree.map(jnp.zeros_like,
                                                                                                   out)}}
        log_std = jnp.full((self.action_dim,), self.config.initial_log_std, jnp.float32)
        log_alpha = jnp.asarray(np.log(self.config.initial_temperature), jnp.float32)
        return SACState(actor_params=actor_params, log_std=log_std, critic_params=critic_params,
                        target_critic_params=critic_params, log_alpha=log_alpha,
                        actor_opt=self.actor_tx.init((actor_params, log_std)),
                        critic_opt=self.critic_tx.init(critic_params), alpha_opt=self.alpha_tx.init(log_alpha),
                        rng=rng, step=jnp.zeros((), jnp.int32))

    # ---------------------------------------------------------------------------------------------- networks
    def _policy(self, actor_params, log_std, latent, mask, proprio, key):
        """(sampled action, its log-prob, mean action) of the tanh-Gaussian."""
        mu = self.actor.apply({"params": actor_params}, latent, mask, self.spec.proprio_to_unit(proprio))
        log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
        std = jnp.exp(log_std)
        noise = jax.random.normal(key, mu.shape)
        pre_tanh = mu + std * noise
        action = jnp.tanh(pre_tanh)
        gaussian = -0.5 * (noise ** 2 + 2 * log_std + jnp.log(2 * jnp.pi))
        log_prob = jnp.sum(gaussian - jnp.log(1 - action ** 2 + EPS), axis=-1)
        return action, log_prob, jnp.tanh(mu)

    def _q(self, critic_params, latent, mask, proprio, action):
        """(num_critics, B) Q-values."""
        return self.critics.apply({"params": critic_params}, latent, mask, self.spec.proprio_to_unit(proprio),
                                  action)[..., 0]

    def _mean_action_impl(self, actor_params, latent, mask, proprio):
        return jnp.tanh(self.actor.apply({"params": actor_params}, latent, mask, self.spec.proprio_to_unit(proprio)))

    # ------------------------------------------------------------------------------------------------ update
    def _critic_step(self, state: SACState, batch: dict) -> tuple[SACState, dict]:
        config = self.config
        rng, policy_key, subset_key = jax.random.split(state.rng, 3)
        next_action, next_log_prob, _ = self._policy(state.actor_params, state.log_std, batch["next_latent"],
                                                     batch.get("next_mask"), batch["next_proprio"], policy_key)
        target_q = self._q(state.target_critic_params, batch["next_latent"], batch.get("next_mask"),
                           batch["next_proprio"], next_action)
        subset = jax.random.choice(subset_key, config.num_critics, (config.critic_subsample,), replace=False)
        next_value = target_q[subset].min(axis=0)
        if config.backup_entropy:
            next_value = next_value - jnp.exp(state.log_alpha) * next_log_prob
        target = batch["reward"] + config.discount * (1.0 - batch["terminal"]) * next_value
        target = jax.lax.stop_gradient(target)

        def loss_fn(critic_params):
            q = self._q(critic_params, batch["latent"], batch.get("mask"), batch["proprio"], batch["action"])
            return jnp.mean((q - target[None]) ** 2), q

        (loss, q), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
        updates, critic_opt = self.critic_tx.update(grads, state.critic_opt, state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, updates)
        target_params = optax.incremental_update(critic_params, state.target_critic_params, config.tau)
        state = state.replace(critic_params=critic_params, target_critic_params=target_params, critic_opt=critic_opt,
                              rng=rng)
        return state, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": target.mean()}

    def _actor_step(self, state: SACState, batch: dict, demo_count: int) -> tuple[SACState, dict]:
        config = self.config
        rng, key = jax.random.split(state.rng)
        alpha = jnp.exp(state.log_alpha)

        def loss_fn(actor_vars):
            actor_params, log_std = actor_vars
            action, log_prob, mean_action = self._policy(actor_params, log_std, batch["latent"], batch.get("mask"),
                                                         batch["proprio"], key)
            q = self._q(state.critic_params, batch["latent"], batch.get("mask"), batch["proprio"], action).mean(0)
            loss = jnp.mean(alpha * log_prob - q)
            bc = jnp.mean((mean_action[:demo_count] - batch["action"][:demo_count]) ** 2) if demo_count else 0.0
            return loss + config.bc_weight * bc, (log_prob, bc, q)

        (loss, (log_prob, bc, q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            (state.actor_params, state.log_std))
        updates, actor_opt = self.actor_tx.update(grads, state.actor_opt, (state.actor_params, state.log_std))
        actor_params, log_std = optax.apply_updates((state.actor_params, state.log_std), updates)
        log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
        entropy = -log_prob.mean()

        def alpha_loss_fn(log_alpha):
            return -log_alpha * jax.lax.stop_gradient(self.target_entropy - entropy)

        alpha_grad = jax.grad(alpha_loss_fn)(state.log_alpha)
        alpha_updates, alpha_opt = self.alpha_tx.update(alpha_grad, state.alpha_opt, state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, alpha_updates)
        state = state.replace(actor_params=actor_params, log_std=log_std, actor_opt=actor_opt, log_alpha=log_alpha,
                              alpha_opt=alpha_opt, rng=rng)
        return state, {"actor_loss": loss, "bc_loss": bc, "entropy": entropy, "alpha": jnp.exp(log_alpha),
                       "actor_q": q.mean()}

    def _update_impl(self, state: SACState, batches: dict, demo_count: int = 0) -> tuple[SACState, dict]:
        """`batches`: arrays with a leading (utd,) axis; critic steps over all, the actor on the last minibatch."""
        state, critic_info = jax.lax.scan(self._critic_step, state, batches)
        last = jax.tree_util.tree_map(lambda x: x[-1], batches)
        state, actor_info = self._actor_step(state, last, demo_count)
        state = state.replace(step=state.step + 1)
        info = {key: value[-1] for key, value in critic_info.items()} | actor_info
        return state, info

    def update(self, state: SACState, batches: Mapping[str, np.ndarray], demo_count: int) -> tuple[SACState, dict]:
        """One SAC update from (utd, B, ...) arrays whose first `demo_count` rows per minibatch are demo data."""
        arrays = _batch_arrays(batches, BATCH_KEYS)
        # demo_count is the same for every update of a run, so this compiles once.
        return self._jitted_update(state, arrays, int(demo_count))

    # ---------------------------------------------------------------------------------------------- exchange
    def mean_action(self, state: SACState, latent: np.ndarray, mask: np.ndarray | None, proprio: np.ndarray
                    ) -> np.ndarray:
        """The deterministic (deployed) action in unit space, (B, A)."""
        return np.asarray(self._mean_action(state.actor_params, jnp.asarray(latent, jnp.float32),
                                            None if mask is None else jnp.asarray(mask), jnp.asarray(proprio)))

    def actor_state(self, state: SACState) -> dict[str, np.ndarray]:
        """The actor head's parameters with torch names (``mlp.*`` only in pooled mode) -- what the VLA loads."""
        return state_from_params(state.actor_params)

    @staticmethod
    def exploration_log_std(state: SACState) -> np.ndarray:
        return np.asarray(jnp.clip(state.log_std, LOG_STD_MIN, LOG_STD_MAX))


def sac_state_arrays(state: SACState) -> dict[str, np.ndarray]:
    """Flatten a `SACState` to named numpy arrays (for a safetensors snapshot; no pickle)."""
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def sac_state_from_arrays(template: SACState, arrays: Mapping[str, np.ndarray], where: str) -> SACState:
    """Fill `template`'s structure with `arrays` (as written by `sac_state_arrays`); names/shapes must match."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in paths:
        name = jax.tree_util.keystr(path)
        if name not in arrays:
            raise ValueError(f"{where}: learner state array {name!r} missing")
        value = np.asarray(arrays[name])
        if value.shape != np.shape(leaf):
            hint = ("; the critics' token learner layout differs (sac.critic_token_learner: shared has one, "
                    "per_critic one per critic; snapshots from before the critics shared one are per_critic)"
                    if "critic" in name and "token_learner" in name and value.ndim != np.ndim(leaf) else "")
            raise ValueError(f"{where}: learner state array {name!r}: expected shape {np.shape(leaf)}, got "
                             f"{value.shape}{hint}")
        leaves.append(jnp.asarray(value, dtype=jnp.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


@dataclass
class SACTrainer:
    """An agent + its state + the two buffers: `step()` samples a 50/50 demo/online batch and updates."""

    agent: SACAgent
    state: SACState
    demo: Any  # LatentReplay
    online: Any  # LatentReplay
    rng: np.random.Generator
    demo_fraction: float = 0.5

    def sample(self) -> tuple[dict[str, np.ndarray], int]:
        config = self.agent.config
        batch, utd = config.batch_size, config.utd
        demo_count = int(round(batch * self.demo_fraction)) if len(self.demo) else 0
        online_count = batch - demo_count
        if online_count and not len(self.online):
            demo_count, online_count = batch, 0
        parts = []
        if demo_count:
            parts.append(self.demo.sample(self.rng, demo_count * utd))
        if online_count:
            parts.append(self.online.sample(self.rng, online_count * utd))
        arrays = {}
        for key in parts[0]:
            # (utd * n, ...) per source -> (utd, n, ...) -> concatenated along the batch axis: demo rows first.
            pieces = [p[key].reshape(utd, -1, *p[key].shape[1:]) for p in parts]
            arrays[key] = np.concatenate(pieces, axis=1)
        arrays["action"] = arrays["action"].astype(np.float32)
        return arrays, demo_count

    def step(self) -> dict[str, float]:
        batches, demo_count = self.sample()
        self.state, info = self.agent.update(self.state, batches, demo_count)
        return {key: float(value) for key, value in info.items()}


class SACLearner(Learner):
    """SACfD / RLPD: every complete episode goes into the online replay; ``updates_per_transition`` updates per
    received transition after ``warmup_transitions``, each on a demo/online batch (`SACTrainer`)."""

    algorithm = "sac"
    config: LearnerConfig

    def __init__(self, spec: HeadSpec, config: LearnerConfig, actor_state: Mapping[str, Any] | None,
                 demo: LatentReplay | None = None) -> None:
        super().__init__(spec, config, actor_state, demo)
        self.agent = SACAgent(spec, config.sac)
        self.online = self.new_buffer(config.online_capacity)
        self.trainer = SACTrainer(self.agent, self.agent.init(actor_state, seed=config.seed), self.demo, self.online,
                                  np.random.default_rng(config.seed), demo_fraction=config.demo_fraction)

    def accept(self, episode: EpisodeData) -> dict[str, Any]:
        # Sparse reward: 1 on the last step of a success, which is terminal; a failure ends at its time limit
        # (not terminal: bootstrap). `LatentReplay` derives both from `success`.
        self.online.add_episode(episode.latent, episode.mask, episode.proprio, episode.action,
                                success=episode.success, interventions=episode.intervention)
        return {}

    def updates_allowed(self) -> int:
        """0 before warm-up or with nothing to sample; ``updates_per_transition`` 0 means free-running."""
        config = self.config
        if self.online.transitions_added < config.warmup_transitions or not (len(self.online) or len(self.demo)):
            return 0
        if config.updates_per_transition == 0:
            return 1 << 30
        return max(0, int(self.online.transitions_added * config.updates_per_transition) - self.updates)

    def _update(self) -> dict[str, float]:
        return self.trainer.step()

    def head_params(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        state = self.trainer.state
        return self.agent.actor_state(state), self.agent.exploration_log_std(state)

    def _save_state(self, directory: Path) -> dict[str, Any]:
        self.online.save(directory / "online.safetensors")
        save_state_arrays(directory / "sac_state.safetensors", sac_state_arrays(self.trainer.state))
        return {}

    def _load_state(self, directory: Path, counters: Mapping[str, Any]) -> None:
        self.online = LatentReplay.load(directory / "online.safetensors", capacity=self.config.online_capacity)
        self.trainer.online = self.online
        path = directory / "sac_state.safetensors"
        self.trainer.state = sac_state_from_arrays(self.trainer.state, load_state_arrays(path), str(path))
