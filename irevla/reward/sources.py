"""Where an episode's success comes from: one interface, four sources.

An actor (the simulated loop, the robot loop, vla_policy's rl_actor mode) calls, for every observation of an
episode, `RewardSource.observe(frame, features=..., proprio=..., env_success=...)` (``features``: the frame's pooled
VLM hidden states, `irevla.reward.features.pool_tokens`; ``proprio``: its proprio vector); a returned `Verdict` ends the episode with its
label. At the time limit, `time_up` gives the label of an episode nobody ended.

* ``env`` (`EnvReward`): the simulator's ground truth (``info["success"]``); a robot has none.
* ``human`` (`HumanReward`): a person's label (vla_policy's services, the keyboard): `label` sets it, the next
  `observe` returns it.
* ``classifier`` (`ClassifierReward`): a trained `irevla.reward.detector.SuccessDetector` on the frozen VLM's
  features ends the episode as a success when its rule fires. In simulation the env's success is still passed in
  and kept with the verdict, so every decision can be scored against the truth.
* ``classifier+human`` (`ClassifierHumanReward`): the classifier ends the episode; then a human has
  ``review_window_s`` to confirm or veto (`review` -> a `Review`). A veto makes it a failure; a human can also end an
  episode as a success the classifier missed. Every disagreement is a `Verdict` with ``disagreement`` set and a
  ``human_label`` (frame, success) that goes into the episode's metadata (``human_labels``), which
  `irevla.reward.labels` reads: the next detector trains on it.

Each verdict says which source decided (``source``): ``env``, ``human``, ``classifier``, ``classifier+human``
(confirmed by a person) -- recorded with the episode.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SOURCES = ("env", "human", "classifier", "classifier+human")


@dataclass(frozen=True)
class Verdict:
    """How an episode ended: the label, which source decided, at which frame, and what else is known."""

    success: bool
    source: str
    frame: int
    probability: float | None = None  # the detector's, where one scored the frame
    env_success: bool | None = None  # the simulator's truth at that frame (simulation only)
    disagreement: str | None = None  # "veto" (human said no to the classifier), "missed" (human said yes first)
    human_labels: tuple[dict, ...] = field(default_factory=tuple)  # [{"frame", "success"}] for the next detector

    def metadata(self) -> dict[str, Any]:
        """What the episode records about its label."""
        record: dict[str, Any] = {"success_source": self.source, "success_frame": self.frame}
        if self.probability is not None:
            record["detector_p"] = round(self.probability, 5)
        if self.env_success is not None:
            record["env_success_at_decision"] = self.env_success
        if self.disagreement:
            record["disagreement"] = self.disagreement
        if self.human_labels:
            record["human_labels"] = [dict(label) for label in self.human_labels]
        return record


class RewardSource:
    """Base: `start_episode`, `observe` every frame, `time_up` at the limit."""

    name = "?"
    needs_features = False  # True: `observe` needs the frame's pooled hidden states and proprio

    def start_episode(self) -> None:
        """Forget the last episode."""

    def observe(self, frame: int, *, features: np.ndarray | None = None, proprio: np.ndarray | None = None,
                env_success: bool | None = None) -> Verdict | None:
        raise NotImplementedError

    def time_up(self, frame: int, env_success: bool | None = None) -> Verdict:
        """The label of an episode that reached its time limit without a verdict: a failure."""
        return Verdict(False, self.name, frame, env_success=env_success)


class EnvReward(RewardSource):
    name = "env"

    def observe(self, frame: int, *, features: np.ndarray | None = None, proprio: np.ndarray | None = None,
                env_success: bool | None = None) -> Verdict | None:
        if env_success is None:
            raise ValueError("the env reward source needs the env's success (info['success']); a robot has none: "
                             "use human, classifier or classifier+human")
        return Verdict(True, "env", frame, env_success=True) if env_success else None


class HumanReward(RewardSource):
    """A person's label, set from another thread (a service, a key) and returned at the next frame."""

    name = "human"

    def __init__(self) -> None:
        self._label: bool | None = None
        self._lock = threading.Lock()

    def start_episode(self) -> None:
        with self._lock:
            self._label = None

    def label(self, success: bool) -> None:
        with self._lock:
            self._label = bool(success)

    def observe(self, frame: int, *, features: np.ndarray | None = None, proprio: np.ndarray | None = None,
                env_success: bool | None = None) -> Verdict | None:
        with self._lock:
            label, self._label = self._label, None
        return None if label is None else Verdict(label, "human", frame, env_success=env_success)


class ClassifierReward(RewardSource):
    name = "classifier"
    needs_features = True

    def __init__(self, detector) -> None:
        from irevla.reward.detector import EpisodeScorer

        self.detector = detector
        self.scorer = EpisodeScorer(detector)

    def start_episode(self) -> None:
        self.scorer.reset()

    @property
    def probabilities(self) -> list[float]:
        return list(self.scorer.probabilities)

    def observe(self, frame: int, *, features: np.ndarray | None = None, proprio: np.ndarray | None = None,
                env_success: bool | None = None) -> Verdict | None:
        p = self.scorer.add(features, proprio)
        if self.scorer.fired:
            return Verdict(True, "classifier", frame, probability=p, env_success=env_success)
        return None


class Review:
    """The human's window after the classifier ended an episode: `confirm` or `veto` from any thread; `wait` returns
    the final verdict when the human answered or the window closed (no answer: the classifier's verdict stands)."""

    def __init__(self, verdict: Verdict, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.verdict, self.window_s, self.clock = verdict, float(window_s), clock
        self.opened = clock()
        self._answer: bool | None = None
        self._answered = threading.Event()

    def answer(self, success: bool) -> bool:
        """Record the human's answer; False if the window had already closed (the answer is ignored)."""
        if self.closed:
            return False
        self._answer = bool(success)
        self._answered.set()
        return True

    def confirm(self) -> bool:
        return self.answer(True)

    def veto(self) -> bool:
        return self.answer(False)

    @property
    def closed(self) -> bool:
        return self._answered.is_set() or self.clock() - self.opened >= self.window_s

    def remaining_s(self) -> float:
        return max(0.0, self.window_s - (self.clock() - self.opened))

    def wait(self, poll_s: float = 0.05) -> Verdict:
        while not self._answered.is_set() and self.remaining_s() > 0:
            self._answered.wait(min(poll_s, self.remaining_s()))
        return self.outcome()

    def outcome(self) -> Verdict:
        base = self.verdict
        if self._answer is None:
            return base
        if self._answer:
            return Verdict(True, "classifier+human", base.frame, base.probability, base.env_success)
        return Verdict(False, "human", base.frame, base.probability, base.env_success, disagreement="veto",
                       human_labels=({"frame": base.frame, "success": False},))


class ClassifierHumanReward(ClassifierReward):
    """The classifier ends the episode; a person reviews within ``window_s`` (`review`), or ends it first."""

    name = "classifier+human"

    def __init__(self, detector, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(detector)
        self.window_s, self.clock = float(window_s), clock
        self.human = HumanReward()

    def start_episode(self) -> None:
        super().start_episode()
        self.human.start_episode()

    def label(self, success: bool) -> None:
        """A person ends the running episode (before the classifier did)."""
        self.human.label(success)

    def observe(self, frame: int, *, features: np.ndarray | None = None, proprio: np.ndarray | None = None,
                env_success: bool | None = None) -> Verdict | None:
        human = self.human.observe(frame, env_success=env_success)
        verdict = super().observe(frame, features=features, proprio=proprio, env_success=env_success)
        if human is not None:
            if human.success and verdict is None:  # the classifier had not seen it: a label for the next detector
                return Verdict(True, "human", frame, self.scorer.probabilities[-1], env_success, disagreement="missed",
                               human_labels=({"frame": frame, "success": True},))
            return Verdict(human.success, "human" if verdict is None or not human.success else "classifier+human",
                           frame, self.scorer.probabilities[-1], env_success,
                           disagreement="veto" if verdict is not None and not human.success else None,
                           human_labels=({"frame": frame, "success": False},)
                           if verdict is not None and not human.success else ())
        return verdict

    def review(self, verdict: Verdict) -> Review:
        """The review window of a classifier verdict (its source is "classifier")."""
        return Review(verdict, self.window_s, self.clock)


def make_reward_source(kind: str, detector=None, review_window_s: float = 10.0) -> RewardSource:
    """The source named `kind` (one of `SOURCES`); the classifier kinds need a loaded detector."""
    if kind not in SOURCES:
        raise ValueError(f"reward source: expected one of {list(SOURCES)}, got {kind!r}")
    if kind in ("classifier", "classifier+human") and detector is None:
        raise ValueError(f"reward source {kind}: needs a success detector (a directory from irevla reward train)")
    if kind == "env":
        return EnvReward()
    if kind == "human":
        return HumanReward()
    if kind == "classifier":
        return ClassifierReward(detector)
    return ClassifierHumanReward(detector, review_window_s)
