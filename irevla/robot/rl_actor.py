"""Stage-1 RL on the robot (vla_policy's ``rl_actor`` mode): the actor's core, without ROS.

The messages (`Transition`, `EpisodeEnd`), the `LearnerLink` protocol and `InMemoryLearnerLink` live in
`irevla.transport.messages` (the learner must not import the robot); `irevla.transport.actor_side.ZmqLearnerLink`
carries them to a learner in another process or on another machine (docs/overnight.md, "Actor/learner transport").
`RlActorCore` is the actor's side of one robot:

* an episode runs from `begin_episode` (the node's ``~/start_episode``, after franka_control's reset) to its end
  with the binary success label (the paper's sparse reward) from its reward source (`irevla.reward.sources`,
  vla_policy's ``rl_actor.reward_source``): a human (`human_label`: ``~/end_episode_success`` /
  ``~/end_episode_failure``), the time limit (`time_up`, then `end_at_time_limit`: unsuccessful), or a success
  detector on the frozen VLM's features of each observation (`tick`);
* ``classifier``: the detector's verdict ends the episode at the observation it fired on (no action is taken on
  it; it is the episode's final observation). ``classifier+human``: the verdict opens a review instead
  (`pending_review`): the episode is held -- `tick` is refused, the node publishes nothing, franka_control holds
  the arm -- until the human answers (`answer_review`: confirm = success, source ``classifier+human``; veto = a
  failure, source ``human``, disagreement ``veto``) or the window closes (`poll_review`: the detector's label,
  source ``classifier``). Nothing here waits: the review is a state, resolved by whoever calls next;
* every control tick `step` runs the frozen VLM once on the observation (``runner.encode``; the latent is what the
  learner stores -- DESIGN.md: latents, not images, in the replay) and acts with the current head on it
  (``runner.act_from_latent``), unless a human intervenes (teleop, HIL-SERL): then the human's action is executed
  and recorded, flagged ``intervention``. Each step becomes a `Transition` for the learner;
* head parameters the learner publishes (`LearnerLink.poll_head`) are applied at the start of a step or episode, so
  a transition's ``policy_version`` is the head that chose its action. A head that does not fit the policy is
  reported and skipped; the actor keeps acting with the head it has.

With a `irevla.robot.rl_episodes.RlEpisodeRecorder` (vla_policy's ``rl_actor.record_dir``) every step's
observation and executed action are also kept, with the images, and the end writes the finished episode to the
episode store: D_RL for stage 2 (successes; failures too with ``record_failures``). The label's
`irevla.reward.sources.Verdict.metadata` (``success_source``, ``success_frame``, ``detector_p``, ``disagreement``,
``human_labels``) goes into the episode's metadata and the end's summary. A vetoed episode is written even with
``record_failures`` false: it is a failure, but its human label (the frame the detector wrongly called a success) is
the next detector's best negative (`irevla.reward.labels`), and it would be lost otherwise. Every disagreement (a
veto, or a success the detector missed) is also appended as one JSON line to ``disagreements.jsonl`` in the episode
store's directory: episode, frame, detector probability, kind, time and the recorded file.

The runner is `irevla.robot.policy_runner.LatentActorRunner` on the robot (the sim loop's `LatentActor`: pooled or
token latents, exploration with the learner's log-std); anything with ``encode``, ``act_from_latent``,
``load_head_state``, ``version`` and ``action_spec`` will do (a `PolicyRunner` acts on the VLM's tokens, without
exploration); ``start_episode``, where the runner has it, is called by every `begin_episode` (the per-episode
exploration noise). Next-observations are by index (step t + 1 of the same episode, then the episode end's final
latent), as the episode store does, so each latent is sent once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from irevla.reward.sources import HumanReward, Review, RewardSource, Verdict
from irevla.robot.rl_episodes import RlEpisodeRecorder
from irevla.spec import Observation
from irevla.transport.messages import InMemoryLearnerLink, LearnerLink, Transition

__all__ = ["InMemoryLearnerLink", "LearnerLink", "PendingReview", "RlActorCore", "Tick", "Transition"]

log = logging.getLogger(__name__)

DISAGREEMENTS_FILE = "disagreements.jsonl"


@dataclass(frozen=True)
class Tick:
    """What one control tick did: the action to execute (None: none -- the episode ended at this observation,
    `ended` is its summary, or a review opened, `review`), and whether it was a human's (intervention)."""

    action: np.ndarray | None
    intervention: bool = False
    ended: dict | None = None
    review: Review | None = None


@dataclass(frozen=True)
class PendingReview:
    """A classifier verdict waiting for the human: the review and the observation it fired on (with its latent,
    the episode's final one)."""

    review: Review
    episode: int
    observation: Observation
    latent: tuple[np.ndarray, np.ndarray]


class RlActorCore:
    """One actor: `begin_episode`, then `step` per control tick, then `end_episode` with the success label.

    Thread-safe: a ROS node calls `tick` from its control timer (and `poll_review` while a review is open) and
    `begin_episode` / `human_label` / `answer_review` from services. ``reward`` is the episode's reward source
    (default `HumanReward`: only `human_label` and the time limit end episodes, as before reward sources existed);
    a classifier source needs a runner with ``last_features()``.
    """

    def __init__(self, runner, link: LearnerLink, max_episode_steps: int | None = None,
                 report: Callable[[str], None] | None = None, recorder: RlEpisodeRecorder | None = None,
                 reward: RewardSource | None = None) -> None:
        self.runner, self.link, self.recorder = runner, link, recorder
        self.reward = reward if reward is not None else HumanReward()
        self.max_episode_steps = max_episode_steps
        self.report = report or log.warning
        self.episode = -1
        self.steps = 0  # of the current (or last) episode
        self.interventions = 0  # of the current (or last) episode
        self.active = False
        self.rejected_heads = 0
        self.pending_review: PendingReview | None = None
        self.disagreements_path = recorder.store.root / DISAGREEMENTS_FILE if recorder is not None else None
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()

    @property
    def time_up(self) -> bool:
        """The running episode has reached its time limit: end it (`step` refuses to go on). Never while a review
        holds the episode: the human's window is not cut short."""
        return (self.active and self.pending_review is None and self.max_episode_steps is not None
                and self.steps >= self.max_episode_steps)

    @property
    def reviewing(self) -> bool:
        """A classifier verdict waits for the human (`answer_review`) or its window's end (`poll_review`)."""
        return self.pending_review is not None

    def begin_episode(self) -> int:
        with self._lock:
            if self.active:
                raise RuntimeError(f"episode {self.episode} is running ({self.steps} steps); end it first")
            self._apply_new_head()
            start = getattr(self.runner, "start_episode", None)  # LatentActorRunner: the episode's noise sequence
            if start is not None:
                start()
            self.reward.start_episode()
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

    def step(self, observation: Observation, human_action: np.ndarray | None = None
             ) -> tuple[np.ndarray | None, bool]:
        """(action to execute, intervention?) for one observation; `human_action` is given while a human has
        taken over (teleop's intervention flag). The action is None when the reward source ended the episode at
        this observation or opened a review (`tick` says which)."""
        tick = self.tick(observation, human_action)
        return tick.action, tick.intervention

    def tick(self, observation: Observation, human_action: np.ndarray | None = None) -> Tick:
        """One control tick: encode the observation, let the reward source judge it, then act (or not: see
        `Tick`)."""
        with self._lock:
            if not self.active:
                raise RuntimeError("no episode is running: begin_episode first")
            if self.pending_review is not None:
                raise RuntimeError(f"episode {self.episode} is held for the human's review: answer_review or "
                                   "poll_review")
            if self.time_up:
                raise RuntimeError(f"episode {self.episode} reached its time limit of {self.max_episode_steps} "
                                   "steps: end it")
            self._apply_new_head()
            tokens, mask = self.runner.encode(observation)
            verdict = self._judge(observation)
            if verdict is not None:
                review = getattr(self.reward, "review", None)
                if verdict.source == "classifier" and review is not None:  # classifier+human: the human's turn
                    self.pending_review = PendingReview(review(verdict), self.episode, observation, (tokens, mask))
                    return Tick(None, review=self.pending_review.review)
                finish = self._finish(observation, verdict, {"end": verdict.source}, (tokens, mask))
            else:
                return self._act(observation, tokens, mask, human_action)
        return Tick(None, ended=self._write(*finish))

    def _act(self, observation: Observation, tokens: np.ndarray, mask: np.ndarray,
             human_action: np.ndarray | None) -> Tick:
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
        return Tick(action, intervention)

    def _judge(self, observation: Observation) -> Verdict | None:
        """The reward source on the observation the runner encoded last (frame = its index in the episode)."""
        if not self.reward.needs_features:
            return self.reward.observe(self.steps)
        return self.reward.observe(self.steps, features=self.runner.last_features(),
                                   proprio=np.asarray(observation.proprio, np.float32))

    # ------------------------------------------------------------------------------------------- the label
    def human_label(self, final_observation: Observation, success: bool) -> dict:
        """A human ends the running episode (``~/end_episode_success`` / ``_failure``): with ``classifier+human``
        the source also scores the final observation, so a success the detector missed is a disagreement
        (``missed``) and a failure on a frame it called a success a ``veto``. During a review this is the answer
        (`answer_review`; `final_observation` is then unused). Returns the end's summary."""
        with self._lock:
            if self.pending_review is not None:
                return self.answer_review(success)[0]
            if not self.active:
                raise RuntimeError("no episode is running")
            latent = None
            labeller = getattr(self.reward, "label", None)
            if labeller is not None and self.reward.needs_features and self.steps:  # classifier+human
                latent = self.runner.encode(final_observation)
                labeller(success)
                verdict = self._judge(final_observation)
            else:
                verdict = Verdict(bool(success), "human", self.steps)
            finish = self._finish(final_observation, verdict, {"end": "label"}, latent)
        return self._write(*finish)

    def end_at_time_limit(self, final_observation: Observation) -> dict:
        """End the running episode as its reward source labels a time-out (a failure)."""
        with self._lock:
            if not self.active or self.pending_review is not None:
                raise RuntimeError("no episode is running" if not self.active else "the episode is under review")
            finish = self._finish(final_observation, self.reward.time_up(self.steps), {"end": "time limit"})
        return self._write(*finish)

    def answer_review(self, success: bool) -> tuple[dict, bool]:
        """The human's answer to the open review (True: confirm, False: veto): ends the episode with
        `Review.outcome`. Returns (summary, answered): answered is False when the window had already closed (the
        detector's label stands)."""
        with self._lock:
            pending = self.pending_review
            if pending is None:
                raise RuntimeError("no review is open")
            answered = pending.review.answer(success)
            finish = self._close_review(pending)
        return self._write(*finish), answered

    def poll_review(self) -> dict | None:
        """End the reviewed episode if its window has closed (no answer: the detector's label); the summary, or
        None while the window is open (or no review is)."""
        with self._lock:
            pending = self.pending_review
            if pending is None or not pending.review.closed:
                return None
            finish = self._close_review(pending)
        return self._write(*finish)

    def _close_review(self, pending: PendingReview):
        self.pending_review = None
        return self._finish(pending.observation, pending.review.outcome(), {"end": "review"}, pending.latent)

    def end_episode(self, final_observation: Observation, success: bool,
                    metadata: Mapping[str, Any] | None = None) -> dict:
        """Send the episode's end (the label and the final observation's latent); returns a summary. An episode
        without steps sends nothing (the learner has nothing to store). The label is taken as given, without the
        reward source (`human_label` asks it).

        With a recorder the episode is also written (if kept: successes, or failures with ``record_failures``),
        `metadata` added to its own; the summary then says where (``recorded``: the path, or None and
        ``not_recorded``: why). Writing happens after the lock is released, so the next episode may start meanwhile.
        """
        with self._lock:
            if self.pending_review is not None:
                raise RuntimeError(f"episode {self.episode} is under review: answer_review")
            finish = self._finish(final_observation, None, dict(metadata or {}), success=bool(success))
        return self._write(*finish)

    def _finish(self, final_observation: Observation, verdict: Verdict | None, metadata: dict,
                latent: tuple[np.ndarray, np.ndarray] | None = None, success: bool | None = None):
        """Under the lock: send the end, close the episode, take the recorder's episode. -> what `_write` needs."""
        if not self.active:
            raise RuntimeError("no episode is running")
        success = verdict.success if verdict is not None else bool(success)
        if self.steps:
            tokens, mask = latent if latent is not None else self.runner.encode(final_observation)
            self.link.send_episode_end(self.episode, self.steps, success, (tokens.astype(np.float16), mask),
                                       np.asarray(final_observation.proprio, np.float32).copy())
        self.active = False
        summary = {"episode": self.episode, "steps": self.steps, "success": success,
                   "interventions": self.interventions, "policy_version": self.runner.version,
                   "sent": bool(self.steps)}
        if verdict is not None:
            label = verdict.metadata()
            metadata = {**metadata, **label}
            summary |= {key: value for key, value in label.items() if key != "human_labels"}
        if self.recorder is None:
            return summary, None, "", verdict
        vetoed = verdict is not None and verdict.disagreement == "veto"
        keep_failures = self.recorder.record_failures
        self.recorder.record_failures = keep_failures or vetoed  # a veto is kept: the detector's best negative
        try:
            episode, why_not = self.recorder.finish(final_observation, success, metadata)
        finally:
            self.recorder.record_failures = keep_failures
        return summary, episode, why_not, verdict

    def _write(self, summary: dict, episode, why_not: str, verdict: Verdict | None) -> dict:
        """Outside the lock: write the recorded episode and log a disagreement."""
        if self.recorder is not None:
            summary["recorded"] = None
            if episode is None:
                summary["not_recorded"] = why_not
            else:
                try:
                    summary["recorded"] = str(self.recorder.write(episode))
                except Exception as exc:  # noqa: BLE001 -- a full disk must not stop the actor; the learner has it
                    summary["not_recorded"] = f"writing failed: {type(exc).__name__}: {exc}"
                    self.report(f"rl episode {summary['episode']} could not be written to {self.recorder.store.root}: "
                                f"{type(exc).__name__}: {exc}")
        if verdict is not None and verdict.disagreement and self.disagreements_path is not None:
            self._log_disagreement(summary, verdict)
        return summary

    def _log_disagreement(self, summary: dict, verdict: Verdict) -> None:
        line = {"episode": summary["episode"], "frame": verdict.frame,
                "p": None if verdict.probability is None else round(verdict.probability, 5),
                "kind": verdict.disagreement, "success": verdict.success, "time": round(time.time(), 3),
                "recorded": summary.get("recorded")}
        try:
            with self._log_lock, open(self.disagreements_path, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(line) + "\n")
        except OSError as exc:  # the label is in the episode's metadata; the log is a convenience
            self.report(f"{self.disagreements_path}: could not append the disagreement of episode "
                        f"{summary['episode']}: {exc}")
