"""SAC/REDQ on latents with sparse reward: it learns; batches are exactly half demo, half online."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from point_reach import PointReach, TokenPointReach, point_spec, run_episode, token_point_spec  # noqa: E402

from irevla.learner.replay import LatentReplay  # noqa: E402
from irevla.learner.sac import SACAgent, SACConfig, SACTrainer, sac_state_arrays, sac_state_from_arrays  # noqa: E402


def _buffers(spec, capacity=20_000):
    return (LatentReplay(capacity, spec.latent_shape, spec.proprio_dim, spec.action_dim),
            LatentReplay(capacity, spec.latent_shape, spec.proprio_dim, spec.action_dim))


def _act(agent, state, env):
    mask = getattr(env, "mask", None)
    return lambda latent, proprio: agent.mean_action(state, latent[None], None if mask is None else mask[None],
                                                     proprio[None])[0]


def _success_rate(agent, state, episodes=50, seed=99, env_class=PointReach):
    env = env_class(seed)
    return np.mean([run_episode(env, _act(agent, state, env)) for _ in range(episodes)])


def _train_sacfd(agent, state, env, demo, online, env_steps):
    """Explore with the current head + Gaussian noise; one update per new transition. -> (trainer, last info)."""
    trainer = SACTrainer(agent, state, demo, online, np.random.default_rng(0))
    rng = np.random.default_rng(2)

    def explore(latent, proprio):
        mean = _act(agent, trainer.state, env)(latent, proprio)
        std = np.exp(agent.exploration_log_std(trainer.state))
        return np.tanh(np.arctanh(np.clip(mean, -0.999, 0.999)) + std * rng.normal(size=2)).astype(np.float32)

    steps, info = 0, {}
    while steps < env_steps:
        start = online.transitions_added
        run_episode(env, explore, online)
        for _ in range(online.transitions_added - start):
            info = trainer.step()
        steps += online.transitions_added - start
    return trainer, info


def test_demo_and_online_halves_are_exact():
    spec = point_spec()
    agent = SACAgent(spec, SACConfig(num_critics=2, batch_size=64, utd=3))
    demo, online = _buffers(spec, 500)
    env = PointReach(0)
    for _ in range(5):
        run_episode(env, lambda latent, proprio: np.full(2, 0.5, np.float32), demo)  # demo actions: +0.5
        run_episode(env, lambda latent, proprio: np.full(2, -0.5, np.float32), online)  # online: -0.5
    trainer = SACTrainer(agent, agent.init(None), demo, online, np.random.default_rng(0))
    batches, demo_count = trainer.sample()
    assert demo_count == 32 and batches["action"].shape == (3, 64, 2)
    np.testing.assert_array_equal(batches["action"][:, :32], 0.5)
    np.testing.assert_array_equal(batches["action"][:, 32:], -0.5)
    # With an empty demo buffer every row is online (plain SAC).
    trainer.demo = LatentReplay(10, spec.latent_shape, 2, 2)
    batches, demo_count = trainer.sample()
    assert demo_count == 0 and (batches["action"] == -0.5).all()


def test_sacfd_learns_sparse_reward_reaching_from_latents():
    """A random-init actor (0-15 % success) + 20 expert demos -> >= 90 % after 2.5k env steps of SACfD."""
    spec = point_spec()
    config = SACConfig(num_critics=10, critic_subsample=2, batch_size=128, utd=4, discount=0.9, bc_weight=0.0,
                       initial_log_std=-1.0)
    agent = SACAgent(spec, config)
    state = agent.init(None, seed=0)
    before = _success_rate(agent, state)
    demo, online = _buffers(spec)
    env = PointReach(1)
    for _ in range(20):
        run_episode(env, lambda latent, proprio: env.expert(), demo)
    trainer, info = _train_sacfd(agent, state, env, demo, online, 2500)
    after = _success_rate(agent, trainer.state)
    print(f"SACfD point-reach: success {before:.2f} -> {after:.2f}")
    assert np.isfinite(list(info.values())).all()
    assert before <= 0.3, before
    assert after >= 0.9, (before, after)  # measured 0.08 -> 1.00


def test_sacfd_learns_from_token_latents_with_the_shared_critic_token_learner():
    """The paper's stage 1: the whole head (token learner + MLP) trains on token latents, the critics share one token
    learner. The goal reaches the heads only through their token learners (it is in one of five tokens, the others
    noise, plus a padding token that looks like a decoy goal's and that the mask must keep out): a fresh head fails,
    SACfD from 20 demos reaches >= 80 % (measured 0.06 -> 0.72 / 0.94 / 0.98 at 3000 / 4000 / 4500 env steps) and
    both token learners have moved. (With the mask ignored it stayed at 0.24-0.42, so the mask is exercised.)"""
    spec = token_point_spec()
    config = SACConfig(num_critics=10, critic_subsample=2, batch_size=128, utd=4, discount=0.9, bc_weight=0.0,
                       initial_log_std=-1.0)
    assert config.critic_token_learner == "shared"  # the default
    agent = SACAgent(spec, config)
    state = agent.init(None, seed=0)
    # One token learner in the critic (no ensemble axis), ten MLPs.
    assert state.critic_params["token_learner"]["queries"].shape == (spec.pool_queries, spec.token_dim)
    assert state.critic_params["mlp"]["out"]["kernel"].shape[0] == 10
    before = _success_rate(agent, state, env_class=TokenPointReach)
    demo, online = _buffers(spec)
    env = TokenPointReach(1)
    for _ in range(20):
        run_episode(env, lambda latent, proprio: env.expert(), demo)
    trainer, info = _train_sacfd(agent, state, env, demo, online, 4500)
    after = _success_rate(agent, trainer.state, env_class=TokenPointReach)
    start, end = agent.actor_state(state), agent.actor_state(trainer.state)
    moved = [name for name in start if name.startswith("token_learner.") and
             np.abs(end[name] - start[name]).max() > 1e-3]
    assert "token_learner.input_proj.weight" in moved and "token_learner.queries" in moved, moved
    critic_start, critic_end = state.critic_params["token_learner"], trainer.state.critic_params["token_learner"]
    assert np.abs(np.asarray(critic_end["input_proj"]["kernel"]) - np.asarray(critic_start["input_proj"]["kernel"])
                  ).max() > 1e-3  # the critics' shared token learner trains too
    print(f"SACfD token point-reach: success {before:.2f} -> {after:.2f}")
    assert np.isfinite(list(info.values())).all()
    assert before <= 0.3, before
    assert after >= 0.8, (before, after)


@pytest.mark.parametrize("token_learner", ["shared", "per_critic"])
def test_token_state_round_trips_through_named_arrays(token_learner):
    spec = token_point_spec()
    agent = SACAgent(spec, SACConfig(num_critics=3, batch_size=16, utd=2, critic_token_learner=token_learner))
    arrays = sac_state_arrays(agent.init(None, seed=3))
    restored = sac_state_from_arrays(agent.init(None, seed=4), arrays, "test")
    for name, value in sac_state_arrays(restored).items():
        np.testing.assert_array_equal(value, arrays[name])
    # A snapshot of the other layout is refused with the array that does not fit.
    other = SACAgent(spec, SACConfig(num_critics=3, batch_size=16, utd=2,
                                     critic_token_learner="per_critic" if token_learner == "shared" else "shared"))
    with pytest.raises(ValueError, match="snapshot.safetensors: .*token_learner.*sac.critic_token_learner"):
        sac_state_from_arrays(other.init(None), arrays, "snapshot.safetensors")


def test_state_round_trips_through_named_arrays():
    spec = point_spec()
    agent = SACAgent(spec, SACConfig(num_critics=3, batch_size=16, utd=2))
    state = agent.init(None, seed=3)
    arrays = sac_state_arrays(state)
    assert all(isinstance(name, str) for name in arrays)
    restored = sac_state_from_arrays(agent.init(None, seed=4), arrays, "test")
    for name, value in sac_state_arrays(restored).items():
        np.testing.assert_array_equal(value, arrays[name])
    with pytest.raises(ValueError, match="missing"):
        sac_state_from_arrays(state, {}, "snapshot.safetensors")


def test_fresh_critics_give_no_q_gradient_to_the_actor():
    """Zero output layer: Q = 0 for any input, so until the critic learns, the actor loss cannot drag a pretrained
    head anywhere (only BC and entropy act); with the option off, a random critic does give a gradient."""
    import jax
    import jax.numpy as jnp

    spec = point_spec()
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(8, *spec.latent_shape)).astype(np.float32)
    proprio = rng.normal(size=(8, spec.proprio_dim)).astype(np.float32)
    action = rng.uniform(-1, 1, (8, spec.action_dim)).astype(np.float32)

    def q_and_action_gradient(zero_output: bool):
        agent = SACAgent(spec, SACConfig(num_critics=3, critic_zero_output=zero_output))
        state = agent.init(None, seed=0)
        q = agent._q(state.critic_params, latent, None, proprio, action)
        grad = jax.grad(lambda a: agent._q(state.critic_params, latent, None, proprio, a).mean())(jnp.asarray(action))
        return np.asarray(q), np.asarray(grad)

    q, grad = q_and_action_gradient(True)
    assert q.shape == (3, 8) and not q.any() and not grad.any()
    q, grad = q_and_action_gradient(False)
    assert np.abs(q).max() > 1e-3 and np.abs(grad).max() > 1e-4
