"""Stage-1 RL on the robot (vla_policy's ``rl_actor`` mode): the actor's core, without ROS.

The messages (`Transition`, `EpisodeEnd`), the `LearnerLink` protocol and `InMemoryLearnerLink` live in
`irevla.transport.messages` (the learner must not import the robot); `irevla.transport.actor_side.ZmqLearnerLink`
carries them to a learner in another process or on another machine (docs/overnight.md, "Actor/learner transport").
`RlActorCore` is the actor's side of one robot:

* an episode runs from `begin_episode` (the node's ``~/start_episode``, after franka_control's reset) to
  `end_episode` with the binary success label (the paper's sparse reward) from a human (``~/end_episode_success`` /
  ``~/end_episode_failure``) or the time limit (`time_up`, then unsuccessful);
* every control tick `step` runs the frozen VLM once on the observation (``runner.encode``; the latent is what the
  learner stores -- DESIGN.md: latents, not images, in the replay) and acts with the current head on it
  (``runner.act_from_latent``), unless a human intervenes (teleop, HIL-SERL): then the human's action is executed
  and recorded, flagged ``intervention``. Each step becomes a `Transition` for the learner;
* head parameters the learner publishes (`LearnerLink.poll_head`) are applied at the start of a step or episode, so
  a transition's ``policy_version`` is the head that chose its action. A head that does not fit the policy is
  reported and skipped; the actor keeps acting with the head it has.

With a `irevla.robot.rl_episodes.RlEpisodeRecorder` (vla_policy's ``rl_actor.record_dir``) every step's
observation and executed action are also kept, with the images, and `end_episode` writes the finished episode to the
episode store: D_RL for stage 2 (successes; failures too with ``record_failures``).

The runner is `irevla.robot.policy_runner.LatentActorRunner` on the robot (the sim loop's `LatentActor`: pooled or
token latents, exploration with the learner's log-std); anything with ``encode``, ``act_from_latent``,
``load_head_state``, ``version`` and ``action_spec`` will do (a `PolicyRunner` acts on the VLM's tokens, without
exploration); ``start_episode``, where the runner has it, is called by every `begin_episode` (the per-episode
exploration noise). Next-observations are by index (step t + 1 of the same episode, then the episode end's final
latent), as the episode store does, so each latent is sent once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from irevla.robot.rl_episodes import RlEpisodeRecorder
from irevla.spec import Observation
from irevla.transport.messages import InMemoryLearnerLink, LearnerLink, Transition

__all__ = ["InMemoryLearnerLink", "LearnerLink", "RlActorCore", "Transition"]

log = logging.getLogger(__name__)


class RlActorCore:
    """One actor: `begin_episode`, then `step` per control tick, then `end_episode` with the success label.

    Thread-safe: a ROS node calls `step` from its control timer and `begin_episode` / `end_episode` from services.
    """

    def __init__(self, runner, link: LearnerLink, max_episode_steps: int | None = None,
                 report: Callable[[str], None] | None = None, recorder: RlEpisodeRecorder | None = None) -> None:
        self.runner, self.link, self.recorder = runner, link, recorder
        self.max_episode_steps = max_episode_steps
        self.report = report or log.warning
        self.episode = -1
        self.steps = 0  # of the current (or last) episode
        self.interventions = 0  # of the current (or last) episode
        self.active = False
        self.rejected_heads = 0
        self._lock = threading.RLock()

    @property
    def time_up(self) -> bool:
        """The running episode has reached its time limit: end it (`step` refuses to go on)."""
        return self.active and self.max_episode_steps is not None and self.steps >= self.max_episode_steps

    def begin_episode(self) -> int:
        with self._lock:
            if self.active:
                raise RuntimeError(f"episode {self.episode} is running ({self.steps} steps); end it first")
            self._apply_new_head()
            start = getattr(self.runner, "start_episode", None)  # LatentActorRunner: the episode's noise sequence
            if start is not None:
                start()
            self.episode += 1
            self.steps = self.interventions = 0
            self.active = True
            if self.recorder is not None:
                self.recorder.begin(self.episode)
            return self.episode

    def _apply_new_head(self) -> None:
        head = self.link.poll_head()
        if head is None:
            return
        version, parameters = head
        try:
            self.runner.load_head_state(parameters, version)
        except Exception as exc:  # noqa: BLE001 -- a bad head must not stop the arm mid-episode
            self.rejected_heads += 1
            self.report(f"head version {version} from the learner not applied ({type(exc).__name__}: {exc}); "
                        f"acting on with version {self.runner.version}")

    def step(self, observation: Observation, human_action: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """(action to execute, intervention?) for one observation; `human_action` is given while a human has
        taken over (teleop's intervention flag)."""
        with self._lock:
            if not self.active:
                raise RuntimeError("no episode is running: begin_episode first")
            if self.time_up:
                raise RuntimeError(f"episode {self.episode} reached its time limit of {self.max_episode_steps} "
                                   "steps: end it")
            self._apply_new_head()
            tokens, mask = self.runner.encode(observation)
            intervention = human_action is not None
            if intervention:
                action = self.runner.action_spec.clip(np.asarray(human_action, dtype=np.float32))
            else:
                action = self.runner.act_from_latent(tokens, mask, observation.proprio)
            action = np.asarray(action, np.float32)
            self.link.send_transition(Transition(
                episode=self.episode, step=self.steps, latent_tokens=tokens.astype(np.float16), latent_mask=mask,
                proprio=np.asarray(observation.proprio, np.float32).copy(), action=action,
                intervention=intervention, policy_version=self.runner.version))
            if self.recorder is not None:
                self.recorder.add(observation, action, intervention, self.runner.version)
            self.steps += 1
            self.interventions += int(intervention)
            return action, intervention

    def end_episode(self, final_observation: Observation, success: bool,
                    metadata: Mapping[str, Any] | None = None) -> dict:
        """Send the episode's end (the label and the final observation's latent); returns a summary. An episode
        without steps sends nothing (the learner has nothing to store).

        With a recorder the episode is also written (if kept: successes, or failures with ``record_failures``),
        `metadata` added to its own; the summary then says where (``recorded``: the path, or None and
        ``not_recorded``: why). Writing happens after the lock is released, so the next episode may start meanwhile.
        """
        with self._lock:
            if not self.active:
                raise RuntimeError("no episode is running")
            if self.steps:
                tokens, mask = self.runner.encode(final_observation)
                self.link.send_episode_end(self.episode, self.steps, bool(success),
                                           (tokens.astype(np.float16), mask),
                                           np.asarray(final_observation.proprio, np.float32).copy())
            self.active = False
            summary = {"episode": self.episode, "steps": self.steps, "success": bool(success),
                       "interventions": self.interventions, "policy_version": self.runner.version,
                       "sent": bool(self.steps)}
            if self.recorder is None:
                return summary
            episode, why_not = self.recorder.finish(final_observation, success, metadata)
        summary["recorded"] = None
        if episode is None:
            summary["not_recorded"] = why_not
            return summary
        try:
            summary["recorded"] = str(self.recorder.write(episode))
        except Exception as exc:  # noqa: BLE001 -- a full disk must not stop the actor; the learner has the episode
            summary["not_recorded"] = f"writing failed: {type(exc).__name__}: {exc}"
            self.report(f"rl episode {summary['episode']} could not be written to {self.recorder.store.root}: "
                        f"{type(exc).__name__}: {exc}")
        return summary
