"""D_RL on the robot: the rl_actor's episodes, with their pixels, into the crash-safe episode store.

The learner gets latents only (DESIGN.md: latents, not images, in the replay). Stage 2 retrains the whole VLA
(LoRA + head) on D_e ∪ D_RL, so it needs what the camera saw. The simulation loop keeps every successful stage-1
episode in ``d_rl/`` (``source: rl``, irevla/iterate/loop.py). `RlEpisodeRecorder` does the same for vla_policy's
``rl_actor`` mode (``rl_actor.record_dir``). `irevla.robot.rl_actor.RlActorCore` calls it on every step, with the
observation the actor acted on and the action it executed: the policy's, or the human's during an intervention
(flagged in ``Episode.interventions``). At the episode's end it adds the final observation and the label.

* One episode file per finished episode, written with `EpisodeStore.write` (temp file, fsync, atomic rename).
  Successes only by default, as D_RL in simulation; ``record_failures`` keeps the failures too (they are marked
  ``success: false``, and stage 2 should filter them out).
* Images: every camera in the observation, which is every camera of vla_policy's ``cameras.names`` while
  recording, not only the ones the policy looks at, at the size the camera delivers. Proprio in
  `irevla.spec.REAL_ROBOT_PROPRIO` order. Sparse reward: 1.0 on the last step of a success.
* Metadata: the actor, the policy's source, the latent mode, ``explore``, the actor's episode index, the head
  versions that acted (``policy_version``: the last one; ``policy_versions``: all of them), the number of
  interventions and how the episode ended.

A step that breaks the episode contract (a camera changed its size mid-episode, a NaN in the state) makes the
episode unrecordable: it is reported once and not written. Recording never stops the arm or the learner's stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from irevla.data.episode import Episode, EpisodeBuilder, finish_labelled
from irevla.data.store import EpisodeStore
from irevla.spec import REAL_ROBOT_PROPRIO, ActionSpec, ContractError, Observation, ObservationSpec, TaskSpec

log = logging.getLogger(__name__)


class RlEpisodeRecorder:
    """`begin` an episode, `add` each executed step, `finish` with the final observation and the label (it returns
    the episode to keep, or why none), then `write` it -- outside the actor's lock: writing takes a while."""

    def __init__(self, store: EpisodeStore | str | Path, action_spec: ActionSpec, task: str = "pick-cube",
                 family: str = "robot", round: int = 1, record_failures: bool = False,
                 max_episode_steps: int = 100, control_hz: float = 10.0, metadata: Mapping[str, Any] | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        self.store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
        self.action_spec = action_spec
        self.task, self.family, self.round = task, family, int(round)
        self.record_failures = bool(record_failures)
        self.max_episode_steps, self.control_hz = int(max_episode_steps), float(control_hz)
        self.metadata = dict(metadata or {})
        self.report = report or log.warning
        self.written = 0
        self.last_path: Path | None = None
        self._episode = -1
        self._builder: EpisodeBuilder | None = None
        self._versions: list[int] = []
        self._interventions = 0
        self._problem = ""

    def begin(self, episode: int) -> None:
        self._episode = int(episode)
        self._builder = None  # made at the first step: the cameras' sizes come from the images
        self._versions, self._interventions, self._problem = [], 0, ""

    def add(self, observation: Observation, action: np.ndarray, intervention: bool, policy_version: int) -> None:
        if self._problem:
            return
        try:
            if self._builder is None:
                self._builder = self._new_builder(observation)
            self._builder.add(observation, np.asarray(action, np.float32), 0.0, intervention=bool(intervention))
        except ContractError as exc:
            self._problem = f"step {len(self._versions)}: {exc}"
            self._builder = None  # frees the frames kept so far
            self.report(f"rl episode {self._episode} will not be recorded: {self._problem}")
            return
        self._versions.append(int(policy_version))
        self._interventions += int(bool(intervention))

    def _new_builder(self, observation: Observation) -> EpisodeBuilder:
        sizes = {camera: tuple(np.shape(image)[:2]) for camera, image in observation.images.items()}
        task = TaskSpec(name=self.task, family=self.family, instruction=observation.instruction or self.task,
                        action_spec=self.action_spec,
                        observation_spec=ObservationSpec(cameras=sizes, proprio_names=REAL_ROBOT_PROPRIO),
                        max_episode_steps=self.max_episode_steps, control_hz=self.control_hz)
        return EpisodeBuilder(task, source="rl", round=self.round)

    def finish(self, final_observation: Observation, success: bool,
               metadata: Mapping[str, Any] | None = None) -> tuple[Episode | None, str]:
        """(the episode to write, "") or (None, why it is not kept); ends the episode either way."""
        builder, self._builder = self._builder, None
        if self._problem:
            return None, f"not recorded: {self._problem}"
        if builder is None:
            return None, "not recorded: no steps"
        if not success and not self.record_failures:
            return None, "not recorded: a failure (rl_actor.record_failures is false)"
        builder.metadata = {**self.metadata, "recorder": "irevla.robot.rl_episodes", "episode": self._episode,
                            "policy_version": self._versions[-1], "policy_versions": sorted(set(self._versions)),
                            "interventions": self._interventions, **dict(metadata or {})}
        try:
            episode = finish_labelled(builder, final_observation, bool(success))
        except ContractError as exc:
            return None, f"not recorded: the final observation: {exc}"
        return episode, ""

    def write(self, episode: Episode) -> Path:
        path = self.store.write(episode)
        self.written += 1
        self.last_path = path
        return path
