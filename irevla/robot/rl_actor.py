"""The seam for stage-1 RL on the robot (vla_policy's ``rl_actor`` mode): the actor's core and the learner link.

The messages (`Transition`, `EpisodeEnd`), the `LearnerLink` protocol and `InMemoryLearnerLink` live in
`irevla.learner.messages` (the learner must not import the robot); `irevla.learner.transport.ZmqLearnerLink` carries
them to a learner in another process or on another machine (docs/overnight.md, "Actor/learner transport").
This module implements the actor's side without ROS:

* every observation goes through the frozen VLM once (`PolicyRunner.encode`); the latent is what the learner stores
  (DESIGN.md: latents, not images, in the replay);
* the action is the current head's on that latent (`PolicyRunner.act_from_latent`), unless a human intervenes
  (teleop, HIL-SERL): then the human's action is executed and recorded, flagged ``intervention``;
* each step becomes a `Transition` for the learner; `end_episode` sends the binary success label (the paper's
  sparse reward) given by a human or the env;
* head parameters the learner publishes (`LearnerLink.poll_head`: version + tensors named as in
  ``VLAPolicy.head_state``) are applied between steps; actions carry that version.

Next-observations are by index (step t + 1 of the same episode), as the episode store does, so each latent is sent
once.
"""

from __future__ import annotations

import numpy as np

from irevla.learner.messages import InMemoryLearnerLink, LearnerLink, Transition
from irevla.spec import Observation

__all__ = ["InMemoryLearnerLink", "LearnerLink", "RlActorCore", "Transition"]


class RlActorCore:
    """One actor: `begin_episode`, then `step` per control tick, then `end_episode` with the success label."""

    def __init__(self, runner, link: LearnerLink) -> None:
        self.runner, self.link = runner, link
        self.episode = -1
        self.steps = 0
        self.interventions = 0

    def begin_episode(self) -> int:
        self.episode += 1
        self.steps = 0
        self._apply_new_head()
        return self.episode

    def _apply_new_head(self) -> None:
        head = self.link.poll_head()
        if head is not None:
            version, parameters = head
            self.runner.load_head_state(parameters, version)

    def step(self, observation: Observation, human_action: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """(action to execute, intervention?) for one observation; `human_action` is given while a human has
        taken over (teleop's intervention flag)."""
        tokens, mask = self.runner.encode(observation)
        intervention = human_action is not None
        if intervention:
            action = self.runner.action_spec.clip(np.asarray(human_action, dtype=np.float32))
            self.interventions += 1
        else:
            action = self.runner.act_from_latent(tokens, mask, observation.proprio)
        self.link.send_transition(Transition(
            episode=self.episode, step=self.steps, latent_tokens=tokens.astype(np.float16), latent_mask=mask,
            proprio=observation.proprio.copy(), action=np.asarray(action, np.float32), intervention=intervention,
            policy_version=self.runner.version))
        self.steps += 1
        self._apply_new_head()
        return np.asarray(action, np.float32), intervention

    def end_episode(self, final_observation: Observation, success: bool) -> None:
        tokens, mask = self.runner.encode(final_observation)
        self.link.send_episode_end(self.episode, self.steps, bool(success), (tokens.astype(np.float16), mask),
                                   final_observation.proprio.copy())
