"""Stage 1's exploration noise: white (independent steps) or coloured over the episode (`rl.noise_beta`).

Measured through the actor's public path: the exploring action minus the deployed (mean) action on one cached
observation, many episodes of `start_episode()` + `act(True)`, on a real tiny VLA.
"""

import numpy as np
import pytest

pytest.importorskip("colorednoise", reason="coloured noise comes with the learner extra")

from policy_factory import make_episode, make_task, tiny_policy  # conftest puts tests/policy on the path

from irevla.policy.latent_actor import LatentActor

EPISODES, STEPS = 40, 100


def exploration_offsets(noise_beta: float) -> np.ndarray:
    """(episodes, steps, dim): exploring action minus the mean action, in env units."""
    policy = tiny_policy()
    actor = LatentActor(policy, "pooled", seed=7, initial_log_std=-4.0, noise_beta=noise_beta, noise_horizon=STEPS)
    actor.observe(make_episode(0, make_task()).observation(0))
    mean = actor.act(explore=False)
    offsets = np.empty((EPISODES, STEPS, mean.shape[0]))
    for e in range(EPISODES):
        actor.start_episode()
        for t in range(STEPS):
            offsets[e, t] = actor.act(explore=True) - mean
    return offsets


@pytest.fixture(scope="module")
def white():
    return exploration_offsets(0.0)


@pytest.fixture(scope="module")
def pink():
    return exploration_offsets(1.0)


def test_both_noises_have_the_same_per_step_spread(white, pink):
    # the marginal per step is the same Gaussian (SAC's tanh-Gaussian is unchanged); compare the spread over all
    # episodes and steps, per action dimension
    ratio = pink.std(axis=(0, 1)) / white.std(axis=(0, 1))
    assert np.all((ratio > 0.7) & (ratio < 1.3)), ratio


def test_pink_noise_keeps_a_drift_over_the_episode_that_white_noise_averages_away(white, pink):
    # the offset summed over an episode (where the hand ends up): white noise cancels to ~sqrt(T) steps' worth,
    # pink noise keeps a per-episode bias
    def drift(offsets):
        return offsets.mean(axis=1).std(axis=0) / offsets.std(axis=(0, 1))

    assert np.all(drift(white) < 2.5 / np.sqrt(STEPS)), drift(white)
    assert np.all(drift(pink) > 2 * drift(white)), (drift(pink), drift(white))
    # and neighbouring steps are correlated (white: ~0)
    lag1 = [np.corrcoef(pink[e, :-1, 0], pink[e, 1:, 0])[0, 1] for e in range(EPISODES)]
    assert np.mean(lag1) > 0.3


def test_each_episode_draws_new_noise_and_a_long_episode_does_not_run_out():
    policy = tiny_policy()
    actor = LatentActor(policy, "pooled", seed=1, initial_log_std=-4.0, noise_beta=1.0, noise_horizon=8)
    actor.observe(make_episode(0, make_task()).observation(0))
    actor.start_episode()
    first = np.stack([actor.act(explore=True) for _ in range(20)])  # 20 steps on a horizon of 8
    actor.start_episode()
    second = np.stack([actor.act(explore=True) for _ in range(8)])
    assert np.isfinite(first).all() and not np.allclose(first[:8], second)


@pytest.mark.parametrize("kwargs, message", [({"noise_beta": -0.5}, "noise_beta"), ({"noise_beta": 3.0}, "noise_beta"),
                                             ({"noise_horizon": 1}, "noise_horizon")])
def test_bad_noise_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LatentActor(tiny_policy(), "pooled", **kwargs)
