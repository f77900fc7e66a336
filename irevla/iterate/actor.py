"""One simulated stage-1 episode: the torch actor acts, the learner link gets every step, the images are recorded.

`run_rl_episode` goes through `irevla.sim.episode_loop.run_episode`: every step goes to the learner link as a
`Transition`, the end as an `EpisodeEnd` with the env's success, and the images are recorded (the successful ones
become D_RL for stage 2, which trains the whole VLM and so needs pixels, not latents). Imports no JAX.
"""

from __future__ import annotations

import numpy as np

from irevla.data.episode import Episode, EpisodeBuilder
from irevla.policy.latent_actor import LatentActor
from irevla.sim.episode_loop import run_episode
from irevla.spec import Observation
from irevla.transport.messages import Transition


def run_rl_episode(env, actor: LatentActor, link, episode_index: int, seed: int, explore: bool,
                   builder: EpisodeBuilder, follow_learner: bool = True) -> tuple[bool, int, Episode]:
    """One episode: stream transitions + the success label to `link`, record the images in `builder`.

    With `follow_learner` the head the learner publishes is applied between steps; without it the actor keeps its
    current head (the demo rollouts that seed the demo buffer are the starting VLA's, as in the paper).
    """
    step = 0
    actor.start_episode()

    def act(obs: dict, info: dict) -> np.ndarray:
        nonlocal step
        head = link.poll_head() if follow_learner else None
        if head is not None:
            actor.apply_head(*head)
        observation = Observation.from_gym(obs)
        tokens, mask = actor.observe(observation)
        action = actor.act(explore)
        link.send_transition(Transition(episode=episode_index, step=step, latent_tokens=tokens, latent_mask=mask,
                                        proprio=observation.proprio.astype(np.float32),
                                        action=action.astype(np.float32), intervention=False,
                                        policy_version=actor.version))
        step += 1
        return action

    success, steps, episode = run_episode(env, act, seed, builder)
    final = episode.observation(episode.n_steps)
    tokens, mask = actor.observe(final)
    link.send_episode_end(episode_index, steps, bool(success), (tokens, mask), final.proprio.astype(np.float32))
    return success, steps, episode
