"""What actors and the stage-1 learner exchange: transitions, episode ends, head parameters, and the link protocol.

Plain numpy dataclasses, no framework: the robot's RL actor (`irevla.robot.rl_actor`), the sim loop and the learner
all speak these types, and `irevla.transport.actor_side` / `learner_side` carry them between processes (whole
episodes, no pickle on the wire). It lives in `transport`, which imports neither `robot` nor a framework.

The latent of an observation is what the frozen VLM produced for it (DESIGN.md: latents, not images, in the replay):
either its tokens ``(m, d)`` with a bool mask ``(m,)``, or an already pooled vector ``(D,)``, which travels as tokens
of shape ``(1, D)`` with mask ``[True]`` (`pooled_latent`). Next observations are by index (step t + 1 of the same
episode, then the episode end's final latent), so each latent is sent once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

LATENT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def pooled_latent(vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pooled latent (D,) as the (tokens (1, D), mask [True]) pair every message carries."""
    vector = np.asarray(vector)
    if vector.ndim != 1:
        raise ValueError(f"pooled latent: expected shape (D,), got {vector.shape}")
    return vector[None, :], np.ones((1,), dtype=bool)


def _check_int(name: str, value, minimum: int | None = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected >= {minimum}, got {value}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected a bool, got {type(value).__name__}")


def _check_array(name: str, array, ndim: int, dtypes: tuple[np.dtype, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(array).__name__}")
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {array.shape}")
    if array.dtype not in dtypes:
        raise ValueError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {array.dtype}")


def check_latent(name: str, tokens, mask) -> None:
    """Tokens float16/float32 (m, d) with m >= 1, mask bool (m,)."""
    _check_array(f"{name} tokens", tokens, 2, LATENT_DTYPES)
    _check_array(f"{name} mask", mask, 1, (np.dtype(bool),))
    if tokens.shape[0] < 1 or mask.shape[0] != tokens.shape[0]:
        raise ValueError(f"{name}: mask shape {mask.shape} does not match tokens shape {tokens.shape}")


@dataclass(frozen=True)
class Transition:
    """One control step of one actor: the observation's latent, the executed action, who chose it."""

    episode: int
    step: int
    latent_tokens: np.ndarray  # float16 (m, d): the frozen VLM's output for observation `step`; pooled: (1, D)
    latent_mask: np.ndarray  # bool (m,); pooled: [True]
    proprio: np.ndarray  # float32 (P,)
    action: np.ndarray  # float32 (A,): what was executed (the human's during an intervention)
    intervention: bool
    policy_version: int  # the head version that produced the action (the human's actions keep the current one)

    def validate(self) -> None:
        """Raise ValueError naming the first malformed field."""
        _check_int("episode", self.episode)
        _check_int("step", self.step)
        check_latent("latent", self.latent_tokens, self.latent_mask)
        _check_array("proprio", self.proprio, 1, FLOAT_DTYPES)
        _check_array("action", self.action, 1, FLOAT_DTYPES)
        _check_bool("intervention", self.intervention)
        _check_int("policy_version", self.policy_version, minimum=None)


@dataclass(frozen=True)
class EpisodeEnd:
    """The end of an episode: its length, the binary success label (from the env in sim, a human on the robot) and
    the final observation's latent (the next-observation of the last transition)."""

    episode: int
    steps: int
    success: bool
    final_tokens: np.ndarray  # like Transition.latent_tokens
    final_mask: np.ndarray
    final_proprio: np.ndarray

    def validate(self) -> None:
        _check_int("episode", self.episode)
        _check_int("steps", self.steps)
        _check_bool("success", self.success)
        check_latent("final latent", self.final_tokens, self.final_mask)
        _check_array("final_proprio", self.final_proprio, 1, FLOAT_DTYPES)


class Received(NamedTuple):
    """One item the learner received, with the id of the actor that sent it."""

    actor: str
    item: Transition | EpisodeEnd


class LearnerLink(Protocol):
    """The actor -> learner link. Several actors may feed one learner; each link names its actor (`actor_id`).

    `send_*` must never block the control loop; `poll_head` returns the newest head (version, parameters named as in
    ``VLAPolicy.head_state``) not returned before, or None. Implementations: `InMemoryLearnerLink` (one process) and
    `irevla.transport.actor_side.ZmqLearnerLink` (the learner in another process or on another machine).
    """

    actor_id: str

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
    episodes: list[dict] = field(default_factory=list)  # summaries: {"episode", "steps", "success"}
    episode_ends: list[EpisodeEnd] = field(default_factory=list)
    pending_head: tuple[int, Mapping[str, np.ndarray]] | None = None
    actor_id: str = "local"

    def send_transition(self, transition: Transition) -> None:
        self.transitions.append(transition)

    def send_episode_end(self, episode, steps, success, final_latent, final_proprio) -> None:
        tokens, mask = final_latent
        self.episode_ends.append(EpisodeEnd(episode, steps, bool(success), tokens, mask, final_proprio))
        self.episodes.append({"episode": episode, "steps": steps, "success": success})

    def poll_head(self):
        head, self.pending_head = self.pending_head, None
        return head
