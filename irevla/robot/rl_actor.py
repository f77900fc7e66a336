"""The seam for stage-1 RL on the robot (vla_policy's ``rl_actor`` mode): the actor's core and the learner link.

STATUS: the RL learner and its actor/learner transport (the loop issue, irevla/learner) do not exist yet, so the
vla_policy node refuses ``mode: rl_actor``. This module fixes the interface they plug into and implements the actor's
side without ROS, tested with `InMemoryLearnerLink`:

* every observation goes through the frozen VLM once (`PolicyRunner.encode`); the latent is what the learner stores
  (DESIGN.md: latents, not images, in the replay);
* the action is the current head's on that latent (`PolicyRunner.act_from_latent`), unless a human intervenes
  (teleop, HIL-SERL): then the human's action is executed and recorded, flagged ``intervention``;
* each step becomes a `Transition` for the learner; `end_episode` sends the binary success label (the paper's
  sparse reward) given by a human or the env;
* head parameters the learner publishes (`LearnerLink.poll_head`: version + tensors named as in
  ``VLAPolicy.head_state``) are applied between steps; actions carry that version.

What the transport must provide is `LearnerLink`; next-observations are by index (step t + 1 of the same episode),
as the episode store does, so each latent is sent once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from irevla.spec import Observation


@dataclass(frozen=True)
class Transition:
    episode: int
    step: int
    latent_tokens: np.ndarray  # float16 (m, d): the frozen VLM's output for observation `step`
    latent_mask: np.ndarray  # bool (m,)
    proprio: np.ndarray  # float32 (P,)
    action: np.ndarray  # float32 (A,): what was executed (the human's during an intervention)
    intervention: bool
    policy_version: int


class LearnerLink(Protocol):
    """The actor -> learner transport (to be implemented with the learner; no pickle on the wire)."""

    def send_transition(self, transition: Transition) -> None: ...

    def send_episode_end(self, episode: int, steps: int, success: bool, final_latent: tuple[np.ndarray, np.ndarray],
                         final_proprio: np.ndarray) -> None: ...

    def poll_head(self) -> tuple[int, Mapping[str, np.ndarray]] | None:
        """The newest head (version, parameters) since the last poll, or None."""
        ...


@dataclass
class InMemoryLearnerLink:
    """A `LearnerLink` inside one process, for tests and for trying the actor without a learner."""

    transitions: list[Transition] = field(default_factory=list)
    episodes: list[dict] = field(default_factory=list)
    pending_head: tuple[int, Mapping[str, np.ndarray]] | None = None

    def send_transition(self, transition: Transition) -> None:
        self.transitions.append(transition)

    def send_episode_end(self, episode, steps, success, final_latent, final_proprio) -> None:
        self.episodes.append({"episode": episode, "steps": steps, "success": success})

    def poll_head(self):
        head, self.pending_head = self.pending_head, None
        return head


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
