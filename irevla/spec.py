"""The one contract every producer and consumer of robot data speaks.

Producers (sim envs, the real-robot env, the recorder, the dataset reader) and consumers (policy, learner, safety
filter) exchange these types. Shapes and dtypes are checked at the boundary; a violation raises `ContractError`
naming the offending field, e.g. ``Observation.images['wrist']: expected uint8 HxWx3, got float32 (96, 96)``.

Conventions
-----------
* Images: ``uint8`` arrays of shape ``(H, W, 3)``, RGB, upright (row 0 is the top of the picture).
* Proprio: ``float32[P]``, order given by ``ObservationSpec.proprio_names``. The real robot's default order is
  ``REAL_ROBOT_PROPRIO``: EE position (m, base frame), EE rotation (axis-angle, rad), gripper width (m).
  The EE rotation is taken *relative to the robot's home orientation* (`irevla.rotations.ee_rotation_feature`,
  where the quaternion, axis-angle and matrix conventions live; quaternions are x, y, z, w): a gripper pointing
  down or forward is ~pi away from the base frame, right where axis-angle flips sign, while relative to home it
  stays near zero and continuous. The reference is recorded in ``TaskSpec.extra["ee_rotation_reference"]``
  (row-major 3x3).
  Meta-World exposes ``METAWORLD_PROPRIO`` (hand position + gripper opening).
* Actions: ``float32[A]`` described by an `ActionSpec`. The real-robot default (`ActionSpec.ee_delta`) is
  dx dy dz (m), drx dry drz (rad, axis-angle), gripper (0 open ... 1 closed); Meta-World's native space is 4-D.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from irevla.errors import UserError

SCHEMA_VERSION = 1

Frame = Literal["base", "ee"]
Source = Literal["script", "teleop", "rl", "intervention"]
SOURCES: tuple[str, ...] = ("script", "teleop", "rl", "intervention")

REAL_ROBOT_PROPRIO: tuple[str, ...] = ("ee_x", "ee_y", "ee_z", "ee_rx", "ee_ry", "ee_rz", "gripper_width")
METAWORLD_PROPRIO: tuple[str, ...] = ("hand_x", "hand_y", "hand_z", "gripper_open")


class ContractError(UserError, ValueError):
    """A value crossing a module boundary does not match the contract. The message names the field."""


# ----------------------------------------------------------------------------------------------------------- checks
def check_image(name: str, image: Any) -> np.ndarray:
    """Return `image` as a uint8 HxWx3 array or raise ContractError naming `name`."""
    if not isinstance(image, np.ndarray):
        raise ContractError(f"{name}: expected a numpy uint8 HxWx3 array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ContractError(f"{name}: expected uint8 HxWx3, got {image.dtype} {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ContractError(f"{name}: image is empty, shape {tuple(image.shape)}")
    return image


def check_vector(name: str, value: Any, size: int | None = None, finite: bool = True) -> np.ndarray:
    """Return `value` as a float32 1-D array of `size` (if given) or raise ContractError naming `name`.

    Integers and float64 are converted; anything else (strings, objects, wrong rank) is rejected.
    """
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise ContractError(f"{name}: expected a float32 vector, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ContractError(f"{name}: expected a 1-D vector, got shape {tuple(array.shape)}")
    if size is not None and array.shape[0] != size:
        raise ContractError(f"{name}: expected {size} values, got {array.shape[0]}")
    array = array.astype(np.float32, copy=False)
    if finite and not np.all(np.isfinite(array)):
        bad = [int(i) for i in np.flatnonzero(~np.isfinite(array))]
        raise ContractError(f"{name}: non-finite values (NaN/inf) at indices {bad}")
    return array


# ----------------------------------------------------------------------------------------------------------- action
@dataclass(frozen=True)
class ActionSpec:
    """What the numbers of an action mean: names, bounds, frame and units, one entry per dimension."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    frame: Frame = "ee"
    units: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "low", tuple(float(v) for v in self.low))
        object.__setattr__(self, "high", tuple(float(v) for v in self.high))
        object.__setattr__(self, "units", tuple(str(u) for u in self.units) or ("",) * len(self.names))
        n = len(self.names)
        if n == 0:
            raise ContractError("ActionSpec.names: at least one action dimension is required")
        for field_name in ("low", "high", "units"):
            if len(getattr(self, field_name)) != n:
                raise ContractError(
                    f"ActionSpec.{field_name}: expected {n} entries (one per name), got {len(getattr(self, field_name))}"
                )
        if len(set(self.names)) != n:
            raise ContractError(f"ActionSpec.names: duplicate names in {self.names}")
        for name, lo, hi in zip(self.names, self.low, self.high):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ContractError(f"ActionSpec.low/high[{name!r}]: need finite low < high, got {lo} .. {hi}")
        if self.frame not in ("base", "ee"):
            raise ContractError(f"ActionSpec.frame: expected 'base' or 'ee', got {self.frame!r}")

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def low_array(self) -> np.ndarray:
        return np.asarray(self.low, dtype=np.float32)

    @property
    def high_array(self) -> np.ndarray:
        return np.asarray(self.high, dtype=np.float32)

    def validate(self, values: Any, name: str = "Action.values") -> np.ndarray:
        """float32[A], finite; raises ContractError otherwise. Does not clip."""
        return check_vector(name, values, self.dim)

    def clip(self, values: Any) -> np.ndarray:
        """Validate, then clip into [low, high]. NaN/inf are rejected, never clipped into range."""
        return np.clip(self.validate(values), self.low_array, self.high_array)

    def contains(self, values: Any) -> bool:
        try:
            array = self.validate(values)
        except ContractError:
            return False
        return bool(np.all(array >= self.low_array) and np.all(array <= self.high_array))

    def to_unit(self, values: Any) -> np.ndarray:
        """Map [low, high] linearly to [-1, 1] (what a tanh policy outputs)."""
        array = self.validate(values)
        return (2.0 * (array - self.low_array) / (self.high_array - self.low_array) - 1.0).astype(np.float32)

    def from_unit(self, unit: Any) -> np.ndarray:
        """Inverse of `to_unit`, clipped into [low, high]."""
        array = np.clip(check_vector("unit action", unit, self.dim), -1.0, 1.0)
        return (self.low_array + (array + 1.0) * 0.5 * (self.high_array - self.low_array)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "low": list(self.low), "high": list(self.high), "frame": self.frame,
                "units": list(self.units)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionSpec:
        try:
            return cls(names=tuple(data["names"]), low=tuple(data["low"]), high=tuple(data["high"]),
                       frame=data.get("frame", "ee"), units=tuple(data.get("units", ())))
        except KeyError as exc:
            raise ContractError(f"ActionSpec: missing field {exc.args[0]!r}") from None

    # Presets ----------------------------------------------------------------------------------------------------
    @classmethod
    def ee_delta(cls, max_translation: float = 0.02, max_rotation: float = 0.1) -> ActionSpec:
        """Real-robot default, A = 7: per-step EE delta in the EE frame + gripper (0 open ... 1 closed)."""
        t, r = float(max_translation), float(max_rotation)
        return cls(names=("dx", "dy", "dz", "drx", "dry", "drz", "gripper"),
                   low=(-t, -t, -t, -r, -r, -r, 0.0), high=(t, t, t, r, r, r, 1.0), frame="ee",
                   units=("m", "m", "m", "rad", "rad", "rad", "0 open..1 closed"))

    @classmethod
    def metaworld(cls) -> ActionSpec:
        """Meta-World's native 4-D space: hand displacement (1.0 = 1 cm of mocap motion per step) + gripper effort."""
        return cls(names=("dx", "dy", "dz", "gripper"), low=(-1.0,) * 4, high=(1.0,) * 4, frame="base",
                   units=("cm", "cm", "cm", "-1 open..+1 closed"))


@dataclass(frozen=True)
class Action:
    """One action: `values` float32[A] interpreted by `spec`. Validated (shape, finiteness) on construction."""

    values: np.ndarray
    spec: ActionSpec

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", self.spec.validate(self.values))

    def clipped(self) -> Action:
        return Action(self.spec.clip(self.values), self.spec)


# ------------------------------------------------------------------------------------------------------ observation
@dataclass(frozen=True)
class ObservationSpec:
    """Which cameras (name -> (height, width)) and which proprio entries an observation carries."""

    cameras: Mapping[str, tuple[int, int]]
    proprio_names: tuple[str, ...]

    def __post_init__(self) -> None:
        cams = {}
        for name, size in dict(self.cameras).items():
            if len(tuple(size)) != 2 or min(int(s) for s in size) <= 0:
                raise ContractError(f"ObservationSpec.cameras[{name!r}]: expected (height, width) > 0, got {size}")
            cams[str(name)] = (int(size[0]), int(size[1]))
        object.__setattr__(self, "cameras", cams)
        object.__setattr__(self, "proprio_names", tuple(str(n) for n in self.proprio_names))

    def to_dict(self) -> dict[str, Any]:
        return {"cameras": {k: list(v) for k, v in self.cameras.items()}, "proprio_names": list(self.proprio_names)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObservationSpec:
        try:
            return cls(cameras={k: tuple(v) for k, v in data["cameras"].items()},
                       proprio_names=tuple(data["proprio_names"]))
        except KeyError as exc:
            raise ContractError(f"ObservationSpec: missing field {exc.args[0]!r}") from None


@dataclass(frozen=True)
class Observation:
    """What a policy sees at one step. Validated on construction; see the module docstring for conventions."""

    images: Mapping[str, np.ndarray]
    proprio: np.ndarray
    instruction: str
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.images, Mapping) or not self.images:
            raise ContractError("Observation.images: expected a non-empty dict camera name -> uint8 HxWx3")
        images = {str(k): check_image(f"Observation.images[{k!r}]", v) for k, v in self.images.items()}
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "proprio", check_vector("Observation.proprio", self.proprio))
        if not isinstance(self.instruction, str):
            raise ContractError(f"Observation.instruction: expected str, got {type(self.instruction).__name__}")
        if not isinstance(self.timestamp, (int, float, np.floating, np.integer)) or not math.isfinite(self.timestamp):
            raise ContractError(f"Observation.timestamp: expected a finite float, got {self.timestamp!r}")
        object.__setattr__(self, "timestamp", float(self.timestamp))

    def check(self, spec: ObservationSpec) -> Observation:
        """Raise ContractError unless cameras, image sizes and proprio length match `spec`."""
        if set(self.images) != set(spec.cameras):
            raise ContractError(
                f"Observation.images: expected cameras {sorted(spec.cameras)}, got {sorted(self.images)}")
        for name, (h, w) in spec.cameras.items():
            if self.images[name].shape[:2] != (h, w):
                raise ContractError(f"Observation.images[{name!r}]: expected {h}x{w}, got "
                                    f"{self.images[name].shape[0]}x{self.images[name].shape[1]}")
        if self.proprio.shape[0] != len(spec.proprio_names):
            raise ContractError(f"Observation.proprio: expected {len(spec.proprio_names)} values "
                                f"{spec.proprio_names}, got {self.proprio.shape[0]}")
        return self

    @classmethod
    def from_gym(cls, obs: Mapping[str, Any], timestamp: float | None = None) -> Observation:
        """Build from the dict observation the irevla gymnasium envs return (images, proprio, instruction, time)."""
        missing = {"images", "proprio", "instruction"} - set(obs)
        if missing:
            raise ContractError(f"gym observation: missing keys {sorted(missing)}")
        time = obs.get("time", 0.0) if timestamp is None else timestamp
        return cls(images=dict(obs["images"]), proprio=obs["proprio"], instruction=str(obs["instruction"]),
                   timestamp=float(np.asarray(time).reshape(-1)[0]))


# ------------------------------------------------------------------------------------------------------------- task
@dataclass(frozen=True)
class TaskSpec:
    """A task an env (sim or real) poses: its name, instruction, what it observes and how it is commanded.

    `variation` names a task variation (e.g. ``"color:red"``) and `variation_seed` makes it reproducible; together
    with `family` and `name` they identify the env that produced an episode.
    """

    name: str
    family: str
    instruction: str
    action_spec: ActionSpec
    observation_spec: ObservationSpec
    max_episode_steps: int
    variation: str = ""
    variation_seed: int = 0
    control_hz: float = 10.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("name", "family", "instruction"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ContractError(f"TaskSpec.{name}: expected a non-empty string, got {getattr(self, name)!r}")
        if int(self.max_episode_steps) <= 0:
            raise ContractError(f"TaskSpec.max_episode_steps: expected > 0, got {self.max_episode_steps}")
        object.__setattr__(self, "max_episode_steps", int(self.max_episode_steps))

    @property
    def full_name(self) -> str:
        """`family/name` plus the variation, e.g. ``metaworld/button-press-v3@color:red#3``."""
        base = f"{self.family}/{self.name}"
        return f"{base}@{self.variation}#{self.variation_seed}" if self.variation else base

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "instruction": self.instruction,
                "action_spec": self.action_spec.to_dict(), "observation_spec": self.observation_spec.to_dict(),
                "max_episode_steps": self.max_episode_steps, "variation": self.variation,
                "variation_seed": self.variation_seed, "control_hz": self.control_hz, "extra": dict(self.extra)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        try:
            return cls(name=data["name"], family=data["family"], instruction=data["instruction"],
                       action_spec=ActionSpec.from_dict(data["action_spec"]),
                       observation_spec=ObservationSpec.from_dict(data["observation_spec"]),
                       max_episode_steps=data["max_episode_steps"], variation=data.get("variation", ""),
                       variation_seed=int(data.get("variation_seed", 0)),
                       control_hz=float(data.get("control_hz", 10.0)), extra=dict(data.get("extra", {})))
        except KeyError as exc:
            raise ContractError(f"TaskSpec: missing field {exc.args[0]!r}") from None

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        return cls.from_dict(json.loads(text))
