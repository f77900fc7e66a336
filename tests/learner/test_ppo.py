"""PPO on the head: it improves a weak BC policy from sparse reward; PPOLearner keeps on-policy data only and its
snapshots round-trip."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from point_reach import HORIZON, PointReach, point_spec  # noqa: E402

from irevla.head_file import LOG_STD_NAME  # noqa: E402
from irevla.learner.config import PPOConfig  # noqa: E402
from irevla.learner.flax_head import FlaxHead, HeadSpec, params_from_state, state_from_params  # noqa: E402
from irevla.learner.ppo import PPOAgent, PPOLearner, gae  # noqa: E402
from irevla.learner.sac import SACAgent, SACConfig  # noqa: E402
from irevla.transport.messages import EpisodeEnd, Transition, pooled_latent  # noqa: E402


# ------------------------------------------------------------------------------------------------ the actor side
class Actor:
    """What an actor process does with a head message: mean from the head, ``tanh(mu + std * eps)`` to explore."""

    def __init__(self, spec: HeadSpec) -> None:
        self.spec = spec
        head = FlaxHead(spec, output_dim=spec.action_dim)
        self._mean = jax.jit(lambda p, latent, proprio: jnp.tanh(
            head.apply({"params": p}, latent, None, spec.proprio_to_unit(proprio))))
        self.episode = 0

    def load(self, version: int, params: dict) -> None:
        self.version = version
        self.tree = params_from_state({k: v for k, v in params.items() if k != LOG_STD_NAME}, prefix="mlp.")
        self.std = np.exp(params[LOG_STD_NAME])

    def mean(self, latent: np.ndarray, proprio: np.ndarray) -> np.ndarray:
        return np.asarray(self._mean(self.tree, latent.astype(np.float32), proprio))

    def collect(self, learner: PPOLearner, envs: list[PointReach], rng: np.random.Generator,
                version: int | None = None) -> None:
        """One episode per env, in lockstep; every step and episode end goes to `learner.ingest`."""
        version = self.version if version is None else version
        observations = [env.reset() for env in envs]
        done = np.zeros(len(envs), bool)
        episodes = self.episode + np.arange(len(envs))
        self.episode += len(envs)
        for t in range(HORIZON):
            mu = np.arctanh(np.clip(self.mean(np.stack([o[0] for o in observations]),
                                              np.stack([o[1] for o in observations])), -0.999999, 0.999999))
            actions = np.tanh(mu + self.std * rng.normal(size=mu.shape)).astype(np.float32)
            for i, env in enumerate(envs):
                if done[i]:
                    continue
                tokens, mask = pooled_latent(observations[i][0])
                learner.ingest(Transition(int(episodes[i]), t, tokens, mask, observations[i][1],
                                          self.spec.action_from_unit(actions[i]), False, version), "sim")
                observations[i], success, done[i] = env.step(actions[i])
                if done[i]:
                    tokens, mask = pooled_latent(observations[i][0])
                    learner.ingest(EpisodeEnd(int(episodes[i]), t + 1, bool(success), tokens, mask,
                                              observations[i][1]), "sim")
            if done.all():
                break

    def success_rate(self, episodes: int = 100, seed: int = 99) -> float:
        """Deterministic (deployed) policy on `episodes` fixed start/goal pairs."""
        envs = [PointReach(seed * 1000 + i) for i in range(episodes)]
        observations = [env.reset() for env in envs]
        done, success = np.zeros(episodes, bool), np.zeros(episodes, bool)
        for _ in range(HORIZON):
            actions = self.mean(np.stack([o[0] for o in observations]), np.stack([o[1] for o in observations]))
            for i, env in enumerate(envs):
                if not done[i]:
                    observations[i], hit, done[i] = env.step(actions[i])
                    success[i] |= hit
        return float(success.mean())


def bc_head_state(spec: HeadSpec, steps: int, noise: float = 0.5, episodes: int = 30) -> dict[str, np.ndarray]:
    """A head behaviour-cloned for `steps` Adam steps on noisy expert demos (torch names, like a stage-0 VLA)."""
    env, rng = PointReach(0), np.random.default_rng(0)
    latents, proprios, actions = [], [], []
    for _ in range(episodes):
        (latent, proprio), done = env.reset(), False
        while not done:
            action = np.clip(env.expert() + noise * rng.normal(size=2), -1, 1).astype(np.float32)
            latents.append(latent.astype(np.float32))
            proprios.append(proprio)
            actions.append(action)
            (latent, proprio), _, done = env.step(action)
    latents, proprios, actions = np.stack(latents), np.stack(proprios), np.stack(actions)
    head = FlaxHead(spec, output_dim=spec.action_dim)
    params = head.init(jax.random.PRNGKey(0), jnp.zeros((1, *spec.latent_shape)), None,
                       jnp.zeros((1, spec.proprio_dim)))["params"]
    tx = optax.adam(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, latent, proprio, action):
        def loss(p):
            return jnp.mean((jnp.tanh(head.apply({"params": p}, latent, None, spec.proprio_to_unit(proprio)))
                             - action) ** 2)

        grads = jax.grad(loss)(params)
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(params, updates), opt

    for _ in range(steps):
        rows = rng.integers(0, len(actions), 128)
        params, opt = step(params, opt, latents[rows], proprios[rows], actions[rows])
    return state_from_params(params)


# ---------------------------------------------------------------------------------------------------- learning
def test_ppo_improves_sparse_reward_reaching_from_latents():
    """A weak BC head (~36 % success) -> >= 75 % after 150 PPO updates of 32 on-policy episodes, driven only
    through the learner interface (ingest / updates_allowed / update / head_message) as an actor would."""
    spec = point_spec()
    learner = PPOLearner(spec, PPOConfig(episodes_per_update=32),
                         bc_head_state(spec, steps=20))
    actor = Actor(spec)
    actor.load(*learner.head_message())
    before = actor.success_rate()
    envs = [PointReach(1000 + i) for i in range(32)]
    rng = np.random.default_rng(0)
    for _ in range(150):
        assert learner.updates_allowed() == 0
        actor.collect(learner, envs, rng)
        assert learner.updates_allowed() == 1
        info = learner.update()
        actor.load(*learner.head_message())
    after = actor.success_rate()
    print(f"PPO point-reach: success {before:.2f} -> {after:.2f}")
    assert np.isfinite(list(info.values())).all()
    assert learner.stale_episodes == 0 and learner.updates == 150 and learner.episodes == 150 * 32
    assert before <= 0.6, before
    assert after >= 0.75 and after >= before + 0.25, (before, after)  # measured 0.36 -> 0.93 (150 updates, ~15 s)


# ------------------------------------------------------------------------------------------------ the pieces
def test_gae_bootstraps_time_limits_but_not_successes():
    values = np.array([0.5, 0.6, 0.7], np.float32)
    rewards = np.array([0.0, 1.0], np.float32)
    advantages, targets = gae(rewards, values, terminal=True, discount=0.9, lam=1.0)
    np.testing.assert_allclose(targets, [0.9, 1.0], atol=1e-6)  # Monte-Carlo returns: no value after a success
    np.testing.assert_allclose(advantages, targets - values[:-1], atol=1e-6)
    advantages, targets = gae(np.zeros(2, np.float32), values, terminal=False, discount=0.9, lam=1.0)
    np.testing.assert_allclose(targets, [0.81 * 0.7, 0.9 * 0.7], atol=1e-6)  # time limit: bootstrap V(final)
    advantages, _ = gae(np.zeros(2, np.float32), values, terminal=False, discount=0.9, lam=0.0)
    np.testing.assert_allclose(advantages, [0.9 * 0.6 - 0.5, 0.9 * 0.7 - 0.6], atol=1e-6)  # lambda 0: TD(0)


def test_log_prob_matches_the_sac_actor_sampling():
    """The action an actor samples as SAC's policy does gets the same log-prob from PPO's recomputation."""
    spec = point_spec()
    sac, ppo = SACAgent(spec, SACConfig(num_critics=2)), PPOAgent(spec, PPOConfig())
    state = sac.init(None, seed=1)
    latent = jnp.asarray(np.random.default_rng(0).normal(size=(64, *spec.latent_shape)), jnp.float32)
    proprio = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (64, 2)), jnp.float32)
    log_std = jnp.full((2,), -0.7)
    action, sac_log_prob, mean = sac._policy(state.actor_params, log_std, latent, None, proprio,
                                             jax.random.PRNGKey(3))
    ppo_log_prob, ppo_mean = ppo._log_prob(state.actor_params, log_std, latent, None, proprio, action)
    np.testing.assert_allclose(np.asarray(ppo_log_prob), np.asarray(sac_log_prob), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(ppo_mean), np.asarray(mean), atol=1e-6)


def _episode(learner, episode, version, steps=4, success=False, actor="a", rng=None, latent_shape=None,
             intervention=False):
    rng = rng or np.random.default_rng(episode)
    spec = learner.spec
    shape = latent_shape or (1, spec.latent_shape[-1])

    def latent():
        tokens = rng.normal(size=shape).astype(np.float16)
        return tokens, np.ones(shape[0], bool)

    for t in range(steps):
        tokens, mask = latent()
        learner.ingest(Transition(episode, t, tokens, mask, rng.normal(size=spec.proprio_dim).astype(np.float32),
                                  rng.uniform(-1, 1, spec.action_dim).astype(np.float32), intervention, version),
                       actor)
    tokens, mask = latent()
    learner.ingest(EpisodeEnd(episode, steps, success, tokens, mask,
                              rng.normal(size=spec.proprio_dim).astype(np.float32)), actor)


def test_learner_keeps_on_policy_episodes_only_and_hands_back_the_head():
    spec = point_spec()
    learner = PPOLearner(spec, PPOConfig(episodes_per_update=2, minibatch_size=4), None)
    _episode(learner, 0, version=0, success=True)  # the initial head (version 0) is on-policy
    assert learner.updates_allowed() == 0
    version, params = learner.head_message()  # published without an update: same parameters, 0 stays on-policy
    assert version == 1 and LOG_STD_NAME in params and "mlp.out.weight" in params
    np.testing.assert_allclose(params[LOG_STD_NAME], -1.6)
    _episode(learner, 1, version=1)
    assert learner.updates_allowed() == 1 and learner.stale_episodes == 0
    info = learner.update()
    assert info["batch_episodes"] == 2 and info["batch_transitions"] == 8 and info["batch_success"] == 0.5
    assert np.isfinite(list(info.values())).all()
    assert learner.updates_allowed() == 0
    # After an update the old heads are stale until the new one is handed out -- even before head_message.
    _episode(learner, 2, version=1)
    assert learner.stale_episodes == 1 and learner.stale_transitions == 4
    version, params = learner.head_message()
    assert version == 2
    assert not np.allclose(params["mlp.out.weight"], learner.agent.actor_state(learner.agent.init(None))[
        "mlp.out.weight"])
    _episode(learner, 3, version=1)  # stale: collected with the previous head
    _episode(learner, 4, version=2, actor="b")
    assert learner.stale_episodes == 2 and learner.rollouts.episode_count == 1
    # An episode whose head changed mid-way is not on-policy either.
    for t, step_version in enumerate((2, 3)):
        learner.ingest(Transition(5, t, *pooled_latent(np.zeros(16, np.float16)), np.zeros(2, np.float32),
                                  np.zeros(2, np.float32), False, step_version), "a")
    learner.ingest(EpisodeEnd(5, 2, False, *pooled_latent(np.zeros(16, np.float16)), np.zeros(2, np.float32)), "a")
    assert learner.stale_episodes == 3
    assert learner.episodes == 6 and learner.successes == 1
    assert [e["on_policy"] for e in learner.episode_log] == [True, True, False, False, True, False]
    with pytest.raises(TypeError):
        learner.ingest("not a message")


def test_snapshot_restore_round_trip(tmp_path):
    """Tokens mode (masks) with a torch-named start head; the restored learner continues identically."""
    spec = HeadSpec(latent_dim=8, latent_length=3, proprio_dim=2, action_dim=2, token_dim=8, pool_queries=1,
                    attention_heads=2, hidden=(16,), layer_norm=True, latent="tokens", proprio_mean=(0.0, 0.0),
                    proprio_std=(1.0, 1.0), action_low=(-2.0, -2.0), action_high=(2.0, 2.0))
    config = PPOConfig(episodes_per_update=2, minibatch_size=4, bc_weight=0.5)
    start = PPOAgent(spec, config)
    actor_state = start.actor_state(start.init(None, seed=7))
    learner = PPOLearner(spec, config, actor_state)
    np.testing.assert_array_equal(learner.head_message()[1]["token_learner.queries"], actor_state[
        "token_learner.queries"])
    _episode(learner, 0, version=1, success=True, latent_shape=(3, 8), intervention=True)  # -> demo buffer too
    _episode(learner, 1, version=1, latent_shape=(3, 8))
    assert len(learner.demo) == 4
    learner.update()
    version, _ = learner.head_message()
    _episode(learner, 2, version=version, success=True, latent_shape=(3, 8))  # pending at snapshot time
    _episode(learner, 3, version=0, latent_shape=(3, 8))  # stale
    learner.snapshot(tmp_path / "snap")

    restored = PPOLearner.restore(tmp_path / "snap", spec, config)
    for key in ("updates", "version", "episodes", "successes", "stale_episodes", "stale_transitions",
                "received_transitions", "accepted", "episode_log"):
        assert getattr(restored, key) == getattr(learner, key), key
    assert restored.rollouts.episode_count == 1 and len(restored.rollouts) == 4 and len(restored.demo) == 4
    np.testing.assert_array_equal(restored.rollouts.episodes[0].mask, learner.rollouts.episodes[0].mask)
    (version, head), (restored_version, restored_head) = learner.head_message(), restored.head_message()
    assert restored_version == version
    for name, value in head.items():
        np.testing.assert_array_equal(restored_head[name], value)
    # Both continue the same way: same pending data, state, behaviour parameters and sampling rng.
    _episode(learner, 4, version=learner.version, latent_shape=(3, 8))
    _episode(restored, 4, version=restored.version, latent_shape=(3, 8))
    a, b = learner.update(), restored.update()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="not a PPO learner snapshot"):
        (tmp_path / "snap" / "learner.json").write_text('{"updates": 0}')
        PPOLearner.restore(tmp_path / "snap", spec, config)
