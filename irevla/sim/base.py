"""What every irevla gymnasium env shares: the observation space that carries the contract.

An env's observation is a dict ``{"images": {camera: uint8 HxWx3}, "proprio": float32[P], "instruction": str,
"time": float32[1]}`` so that `gymnasium.utils.env_checker.check_env` can check it, and
`irevla.spec.Observation.from_gym(obs)` turns it into the contract's `Observation`. Every env also exposes
``env.task_spec`` (a `TaskSpec`) and reports ``info["success"]`` at every step; reward is sparse: 1.0 on success.
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from irevla.errors import UserError
from irevla.spec import Observation, ObservationSpec, TaskSpec

INSTRUCTION_MAX_LENGTH = 256
# gymnasium's Text space defaults to alphanumerics only; instructions have spaces and punctuation.
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " .,;:'!?-_()/"


def observation_space(spec: ObservationSpec) -> spaces.Dict:
    images = spaces.Dict({name: spaces.Box(0, 255, (h, w, 3), np.uint8) for name, (h, w) in spec.cameras.items()})
    return spaces.Dict({
        "images": images,
        "proprio": spaces.Box(-np.inf, np.inf, (len(spec.proprio_names),), np.float32),
        "instruction": spaces.Text(INSTRUCTION_MAX_LENGTH, charset=INSTRUCTION_CHARSET),
        "time": spaces.Box(0.0, np.inf, (1,), np.float32),
    })


def check_instruction(instruction: str) -> str:
    bad = sorted(set(instruction) - set(INSTRUCTION_CHARSET))
    if bad or not instruction or len(instruction) > INSTRUCTION_MAX_LENGTH:
        raise ValueError(f"instruction {instruction!r}: must be 1..{INSTRUCTION_MAX_LENGTH} characters from "
                         f"letters, digits and {INSTRUCTION_CHARSET[62:]!r}; bad characters {bad}")
    return instruction


class UnknownTaskError(UserError, ValueError):
    """A task, family or camera name that no env knows; the message lists or points to the valid names."""


class ContractEnv(gym.Env):
    """Base class: subclasses set `task_spec`, build `observation_space`/`action_space`, and call `_make_obs`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    task_spec: TaskSpec

    def _make_obs(self, images: dict[str, np.ndarray], proprio: np.ndarray, time: float) -> dict[str, Any]:
        return {
            "images": images,
            "proprio": np.asarray(proprio, dtype=np.float32),
            "instruction": self.task_spec.instruction,
            "time": np.asarray([time], dtype=np.float32),
        }

    def _blank_images(self) -> dict[str, np.ndarray]:
        """Black frames when rendering is off; new arrays every call so no two observations share memory."""
        return {name: np.zeros((h, w, 3), np.uint8) for name, (h, w) in self.task_spec.observation_spec.cameras.items()}

    @staticmethod
    def to_observation(obs: dict[str, Any]) -> Observation:
        return Observation.from_gym(obs)
