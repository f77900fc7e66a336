"""One recorded episode in memory (`Episode`) and the step-by-step recorder that builds it (`EpisodeBuilder`).

An episode of ``T`` steps holds ``T + 1`` observations and ``T`` actions: observation ``t`` is what the policy saw
before action ``t``, and observation ``T`` is the final one after the last action, so RL code builds next-observations
by index (``obs[t + 1]``) without storing anything twice.

=================  =====================  ========================================================================
field              type / shape           meaning
=================  =====================  ========================================================================
images             {camera: uint8         RGB frames, upright; cameras and (H, W) exactly as in
                   (T+1, H, W, 3)}        ``task.observation_spec.cameras``
proprio            float32 (T+1, P)       P == len(task.observation_spec.proprio_names), same order
actions            float32 (T, A)         A == task.action_spec.dim; the action *commanded* at step t
rewards            float32 (T,)           reward received after action t
success            bool                   did the episode end in success
instruction        str                    the language instruction the policy was given
task               irevla.spec.TaskSpec   stored as JSON; normalised through JSON on construction
source             str                    one of irevla.spec.SOURCES: script, teleop, rl, intervention
round              int >= 0               iRe-VLA iteration that produced it (0 = expert demos / first round)
schema_version     int                    irevla.spec.SCHEMA_VERSION
created            str                    timezone-aware ISO-8601 time, UTC by default
timestamps         float64 (T+1,) | None  per-observation time (s), e.g. Observation.timestamp
interventions      bool (T,) | None       True where a human overrode the policy's action at step t
depth              {camera: uint16        optional depth in millimetres (0 = no reading), aligned to the colour
                   (T+1, H, W)} | None    camera of the same name: same frames and (H, W); any subset of cameras
metadata           dict                   small, JSON-serialisable: seed, variation, expert name, ...
=================  =====================  ========================================================================

Every field is validated on construction; a violation raises `irevla.spec.ContractError` naming the field, e.g.
``Episode.actions: expected shape (50, 7) (T=50, A=7 from task.action_spec), got (50, 4)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from irevla.spec import SCHEMA_VERSION, SOURCES, Action, ContractError, Observation, TaskSpec


def utc_now_iso() -> str:
    """Current UTC time as ISO-8601 with microseconds, e.g. ``2025-01-31T12:00:00.123456+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def parse_created(value: str, name: str = "Episode.created") -> datetime:
    """Parse a timezone-aware ISO-8601 time; naive times are rejected because episodes move between machines."""
    if not isinstance(value, str):
        raise ContractError(f"{name}: expected an ISO-8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ContractError(f"{name}: not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ContractError(f"{name}: time {value!r} has no timezone (use UTC, e.g. '...+00:00')")
    return parsed


def _json_default(value: Any) -> Any:
    # numpy scalars (a seed drawn from np.random) are the common non-JSON value in metadata; accept them as numbers.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def normalise_json(name: str, value: Any) -> Any:
    """Round-trip `value` through strict JSON so memory equals what a reader gets back (tuples become lists)."""
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"{name}: must be JSON-serialisable (no NaN/inf, no objects): {exc}") from None
    return json.loads(text)


def _float_array(name: str, value: Any, shape: tuple[int, ...], meaning: str, dtype: type = np.float32) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise ContractError(f"{name}: expected a numeric array, got dtype {array.dtype}")
    if array.shape != shape:
        raise ContractError(f"{name}: expected shape {shape} ({meaning}), got {tuple(array.shape)}")
    array = np.ascontiguousarray(array, dtype=dtype)
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[:5].tolist()
        raise ContractError(f"{name}: non-finite values (NaN/inf) at indices {bad}")
    return array


def _arrays_identical(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@dataclass(frozen=True, eq=False)
class Episode:
    """A validated episode; see the module docstring for fields, shapes and dtypes.

    Equality (``==``) is bit-identity of every array plus equality of every other field.
    """

    images: Mapping[str, np.ndarray]
    proprio: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: bool
    instruction: str
    task: TaskSpec
    source: str
    round: int = 0
    schema_version: int = SCHEMA_VERSION
    created: str = field(default_factory=utc_now_iso)
    timestamps: np.ndarray | None = None
    interventions: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    depth: Mapping[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: normalised values are written once, here
        if not isinstance(self.task, TaskSpec):
            raise ContractError(f"Episode.task: expected irevla.spec.TaskSpec, got {type(self.task).__name__}")
        # The task is stored as JSON; normalising here makes a read-back episode compare equal to the written one.
        try:
            task_json = self.task.to_json()
        except (TypeError, ValueError) as exc:
            raise ContractError(f"Episode.task: TaskSpec must be JSON-serialisable (check task.extra): {exc}") from None
        set_(self, "task", TaskSpec.from_json(task_json))
        task = self.task

        if self.schema_version != SCHEMA_VERSION:
            raise ContractError(f"Episode.schema_version: this irevla writes version {SCHEMA_VERSION}, "
                                f"got {self.schema_version!r}")
        if self.source not in SOURCES:
            raise ContractError(f"Episode.source: expected one of {SOURCES}, got {self.source!r}")
        if not isinstance(self.instruction, str):
            raise ContractError(f"Episode.instruction: expected str, got {type(self.instruction).__name__}")
        if not isinstance(self.success, (bool, np.bool_)):
            raise ContractError(f"Episode.success: expected bool, got {type(self.success).__name__}")
        set_(self, "success", bool(self.success))
        if isinstance(self.round, (bool, np.bool_)) or not isinstance(self.round, (int, np.integer)) or self.round < 0:
            raise ContractError(f"Episode.round: expected an int >= 0, got {self.round!r}")
        set_(self, "round", int(self.round))
        parse_created(self.created)
        if not isinstance(self.metadata, Mapping):
            raise ContractError(f"Episode.metadata: expected a dict, got {type(self.metadata).__name__}")
        set_(self, "metadata", normalise_json("Episode.metadata", dict(self.metadata)))

        # T comes from the actions; every other per-step array must agree with it.
        actions = np.asarray(self.actions)
        if actions.ndim != 2:
            raise ContractError(f"Episode.actions: expected shape (T, {task.action_spec.dim}), "
                                f"got {tuple(actions.shape)}")
        n_steps = actions.shape[0]
        if n_steps == 0:
            raise ContractError("Episode.actions: episode has no steps (T=0); record at least one action")
        action_dim = task.action_spec.dim
        set_(self, "actions", _float_array("Episode.actions", actions, (n_steps, action_dim),
                                           f"T={n_steps}, A={action_dim} from task.action_spec"))
        proprio_dim = len(task.observation_spec.proprio_names)
        set_(self, "proprio", _float_array("Episode.proprio", self.proprio, (n_steps + 1, proprio_dim),
                                           f"T+1={n_steps + 1} observations, P={proprio_dim} from "
                                           f"task.observation_spec.proprio_names"))
        set_(self, "rewards", _float_array("Episode.rewards", self.rewards, (n_steps,), f"T={n_steps}"))
        if self.timestamps is not None:
            set_(self, "timestamps", _float_array("Episode.timestamps", self.timestamps, (n_steps + 1,),
                                                  f"T+1={n_steps + 1} observations", dtype=np.float64))
        if self.interventions is not None:
            flags = np.asarray(self.interventions)
            if flags.dtype != np.bool_:
                raise ContractError(f"Episode.interventions: expected dtype bool, got {flags.dtype}")
            if flags.shape != (n_steps,):
                raise ContractError(f"Episode.interventions: expected shape ({n_steps},) (T={n_steps}), "
                                    f"got {tuple(flags.shape)}")
            set_(self, "interventions", np.ascontiguousarray(flags))

        if not isinstance(self.images, Mapping) or not self.images:
            raise ContractError("Episode.images: expected a non-empty dict camera -> uint8 (T+1, H, W, 3)")
        expected_cameras = task.observation_spec.cameras
        if set(self.images) != set(expected_cameras):
            raise ContractError(f"Episode.images: cameras {sorted(self.images)} do not match "
                                f"task.observation_spec.cameras {sorted(expected_cameras)}")
        images = {}
        for camera, (height, width) in expected_cameras.items():
            frames = self.images[camera]
            name = f"Episode.images[{camera!r}]"
            if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
                got = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
                raise ContractError(f"{name}: expected a uint8 array, got {got}")
            expected = (n_steps + 1, height, width, 3)
            if frames.shape != expected:
                raise ContractError(f"{name}: expected shape {expected} (T+1 frames of {height}x{width} RGB from "
                                    f"task.observation_spec), got {tuple(frames.shape)}")
            images[camera] = np.ascontiguousarray(frames)
        set_(self, "images", images)

        if self.depth is not None:
            if not isinstance(self.depth, Mapping):
                raise ContractError(f"Episode.depth: expected None or a dict camera -> uint16 (T+1, H, W), "
                                    f"got {type(self.depth).__name__}")
            depth = {}
            for camera, frames in self.depth.items():
                name = f"Episode.depth[{camera!r}]"
                if camera not in expected_cameras:
                    raise ContractError(f"{name}: depth must belong to one of the colour cameras "
                                        f"{sorted(expected_cameras)} (aligned to it)")
                if not isinstance(frames, np.ndarray) or frames.dtype != np.uint16:
                    got = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
                    raise ContractError(f"{name}: expected a uint16 array (millimetres), got {got}")
                height, width = expected_cameras[camera]
                if frames.shape != (n_steps + 1, height, width):
                    raise ContractError(f"{name}: expected shape {(n_steps + 1, height, width)} (T+1 frames aligned "
                                        f"to the {height}x{width} colour camera), got {tuple(frames.shape)}")
                depth[str(camera)] = np.ascontiguousarray(frames)
            set_(self, "depth", depth or None)

    # ------------------------------------------------------------------------------------------------- accessors
    @property
    def n_steps(self) -> int:
        """T: the number of actions (there are T + 1 observations)."""
        return int(self.actions.shape[0])

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.images)

    @property
    def nbytes(self) -> int:
        """Uncompressed size of the arrays in memory."""
        arrays = [*self.images.values(), *(self.depth or {}).values(), self.proprio, self.actions, self.rewards,
                  self.timestamps, self.interventions]
        return sum(a.nbytes for a in arrays if a is not None)

    def observation(self, t: int) -> Observation:
        """Observation `t` (0 <= t <= T) in the contract's type, e.g. to replay an episode through a policy."""
        if not 0 <= t <= self.n_steps:
            raise IndexError(f"observation {t} out of range 0..{self.n_steps}")
        timestamp = float(self.timestamps[t]) if self.timestamps is not None else 0.0
        return Observation(images={c: f[t] for c, f in self.images.items()}, proprio=self.proprio[t],
                           instruction=self.instruction, timestamp=timestamp)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Episode):
            return NotImplemented
        if set(self.images) != set(other.images) or set(self.depth or {}) != set(other.depth or {}):
            return False
        if not all(_arrays_identical(self.depth[c], other.depth[c]) for c in self.depth or {}):
            return False
        arrays_equal = all(_arrays_identical(self.images[c], other.images[c]) for c in self.images) and all(
            _arrays_identical(getattr(self, n), getattr(other, n))
            for n in ("proprio", "actions", "rewards", "timestamps", "interventions"))
        return arrays_equal and all(getattr(self, n) == getattr(other, n) for n in (
            "success", "instruction", "task", "source", "round", "schema_version", "created", "metadata"))

    __hash__ = None  # mutable arrays inside: not hashable

    def __repr__(self) -> str:
        cams = ", ".join(f"{c}:{f.shape[1]}x{f.shape[2]}" for c, f in self.images.items())
        return (f"Episode(task={self.task.full_name!r}, T={self.n_steps}, success={self.success}, "
                f"source={self.source!r}, round={self.round}, cameras=[{cams}], created={self.created!r})")


class EpisodeBuilder:
    """Records an episode step by step from an env / robot loop.

    >>> builder = EpisodeBuilder(env.task_spec, source="script", metadata={"seed": 3})
    >>> obs = env.reset()
    >>> for ...: builder.add(obs, action, reward); obs = env.step(action)...
    >>> episode = builder.finish(obs, success=info["success"])

    Every observation is checked against ``task.observation_spec`` as it arrives (a camera that drops out fails at
    the step it happens, not at the end) and copied, because envs may reuse their image buffers.
    """

    def __init__(self, task: TaskSpec, source: str, round: int = 0, metadata: Mapping[str, Any] | None = None,
                 instruction: str | None = None) -> None:
        if source not in SOURCES:
            raise ContractError(f"EpisodeBuilder.source: expected one of {SOURCES}, got {source!r}")
        self.task = task
        self.source = source
        self.round = round
        self.metadata = dict(metadata or {})
        self.instruction = instruction
        self.created = utc_now_iso()
        self._frames: dict[str, list[np.ndarray]] = {camera: [] for camera in task.observation_spec.cameras}
        self._proprio: list[np.ndarray] = []
        self._timestamps: list[float] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._interventions: list[bool | None] = []
        self._finished = False

    def __len__(self) -> int:
        return len(self._actions)

    def _record_observation(self, observation: Observation, where: str) -> None:
        if not isinstance(observation, Observation):
            raise ContractError(f"{where}: expected irevla.spec.Observation, got {type(observation).__name__}")
        try:
            observation.check(self.task.observation_spec)
        except ContractError as exc:
            raise ContractError(f"{where}: {exc}") from None
        if self.instruction is None:
            self.instruction = observation.instruction
        elif observation.instruction != self.instruction:
            raise ContractError(f"{where}: Observation.instruction {observation.instruction!r} differs from the "
                                f"episode's {self.instruction!r}")
        for camera, image in observation.images.items():
            self._frames[camera].append(np.array(image, copy=True))
        self._proprio.append(np.array(observation.proprio, copy=True))
        self._timestamps.append(observation.timestamp)

    def add(self, observation: Observation, action: Action | np.ndarray, reward: float,
            intervention: bool | None = None) -> None:
        """Record observation t, the action taken from it and the reward that followed."""
        if self._finished:
            raise ContractError("EpisodeBuilder.add: episode already finished; start a new builder")
        step = len(self._actions)
        values = action.values if isinstance(action, Action) else action
        try:
            values = self.task.action_spec.validate(values, name="action")
        except ContractError as exc:
            raise ContractError(f"EpisodeBuilder.add step {step}: {exc}") from None
        if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, (int, float, np.number)) \
                or not math.isfinite(float(reward)):
            raise ContractError(f"EpisodeBuilder.add step {step}: reward: expected a finite number, got {reward!r}")
        self._record_observation(observation, f"EpisodeBuilder.add step {step}")
        self._actions.append(np.array(values, dtype=np.float32, copy=True))
        self._rewards.append(float(reward))
        self._interventions.append(None if intervention is None else bool(intervention))

    def finish(self, final_observation: Observation, success: bool) -> Episode:
        """Record the final observation (after the last action) and return the validated Episode."""
        if self._finished:
            raise ContractError("EpisodeBuilder.finish: episode already finished; start a new builder")
        if not self._actions:
            raise ContractError("EpisodeBuilder.finish: no steps recorded; call add() at least once")
        self._record_observation(final_observation, f"EpisodeBuilder.finish (observation {len(self._actions)})")
        self._finished = True
        # Interventions are stored only if the caller ever said something about them; unspecified steps were not.
        interventions = None
        if any(flag is not None for flag in self._interventions):
            interventions = np.asarray([bool(flag) for flag in self._interventions], dtype=np.bool_)
        return Episode(
            images={camera: np.stack(frames) for camera, frames in self._frames.items()},
            proprio=np.stack(self._proprio), actions=np.stack(self._actions),
            rewards=np.asarray(self._rewards, dtype=np.float32), success=bool(success),
            instruction=self.instruction or "", task=self.task, source=self.source, round=self.round,
            created=self.created, timestamps=np.asarray(self._timestamps, dtype=np.float64),
            interventions=interventions, metadata=self.metadata)


def finish_labelled(builder: EpisodeBuilder, final: Observation, success: bool) -> Episode:
    """The builder's episode with its label: a success gets the sparse reward 1.0 on its last step (known only
    once a human, the env or a success detector labelled the episode; the steps were recorded with 0)."""
    episode = builder.finish(final, success=success)
    if not success:
        return episode
    rewards = episode.rewards.copy()
    rewards[-1] = 1.0
    return replace(episode, rewards=rewards)
