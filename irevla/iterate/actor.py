"""One stage-1 episode in the loop: the torch actor acts, the learner link gets every step, the images are recorded.

`run_rl_episode` runs the episode observation by observation: the frozen VLM encodes each observation once
(`LatentActor.observe`), the reward source (`irevla.reward.sources`) looks at it and may end the episode with a
`Verdict`, otherwise the actor acts and the step goes to the learner link as a `Transition`. The end goes as an
`EpisodeEnd` with the verdict's label, and the images are recorded (the successful ones become D_RL for stage 2,
which trains the whole VLM and so needs pixels, not latents) with the verdict in their metadata.

With the ``env`` source the episode ends when the env says success, as it always did. With a detector
(``classifier``) the env must not end the episode on its own success -- the detector decides -- so the env is wrapped
in `DetectorDecides`, which keeps the env's success in ``info`` (it is recorded with every verdict, which is how
a simulated run measures the detector) but never terminates on it. Imports no JAX.
"""

from __future__ import annotations

import numpy as np

from irevla.data.episode import Episode, EpisodeBuilder, finish_labelled
from irevla.policy.latent_actor import LatentActor
from irevla.reward.features import pool_tokens
from irevla.reward.sources import EnvReward, RewardSource, Verdict
from irevla.spec import Observation
from irevla.transport.messages import Transition


class DetectorDecides:
    """An env whose own success never ends the episode (``terminated`` stays False; ``info["success"]`` is kept):
    the success detector decides. The time limit still truncates."""

    def __init__(self, env) -> None:
        self.env = env

    def __getattr__(self, name: str):
        return getattr(self.env, name)

    def reset(self, **kwargs):
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, _, _, truncated, info = self.env.step(action)  # the episode's own time limit is run_rl_episode's
        return obs, 0.0, False, bool(truncated), info

    def close(self) -> None:
        self.env.close()


def run_rl_episode(env, actor: LatentActor, link, episode_index: int, seed: int, explore: bool,
                   builder: EpisodeBuilder, follow_learner: bool = True, reward: RewardSource | None = None
                   ) -> tuple[Verdict, int, Episode]:
    """One episode: stream transitions + the label to `link`, record the images in `builder`.

    Returns (the verdict: label, deciding source, frame, the env's truth there; steps; the recorded episode).
    With `follow_learner` the head the learner publishes is applied between steps; without it the actor keeps its
    current head (the demo rollouts that seed the demo buffer are the starting VLA's, as in the paper).
    """
    reward = reward or EnvReward()
    reward.start_episode()
    actor.start_episode()
    obs, info = env.reset(seed=seed)
    limit = env.task_spec.max_episode_steps
    step, ended, seen = 0, False, False
    while True:
        head = link.poll_head() if follow_learner and not ended else None
        if head is not None:
            actor.apply_head(*head)
        observation = Observation.from_gym(obs)
        tokens, mask = actor.observe(observation)
        env_success = bool(info.get("success", False))
        seen = seen or env_success
        features = pool_tokens(actor.last_tokens, actor.last_mask) if reward.needs_features else None
        verdict = reward.observe(step, features=features, proprio=observation.proprio, env_success=env_success)
        if step == 0:
            verdict = None  # an episode has at least one step (the first frame only primes the detector)
        if verdict is None and (ended or step >= limit):
            verdict = reward.time_up(step, env_success=env_success)
        if verdict is not None:
            break
        action = env.task_spec.action_spec.clip(actor.act(explore))
        link.send_transition(Transition(episode=episode_index, step=step, latent_tokens=tokens, latent_mask=mask,
                                        proprio=observation.proprio.astype(np.float32),
                                        action=action.astype(np.float32), intervention=False,
                                        policy_version=actor.version))
        builder.add(observation, action, 0.0)
        obs, _, terminated, truncated, info = env.step(action)
        step += 1
        ended = bool(terminated or truncated)
    builder.metadata = {**builder.metadata, **verdict.metadata(),
                        **({"env_success_seen": seen} if reward.needs_features else {})}
    episode = finish_labelled(builder, observation, verdict.success)
    link.send_episode_end(episode_index, step, bool(verdict.success), (tokens, mask),
                          observation.proprio.astype(np.float32))
    return verdict, step, episode
