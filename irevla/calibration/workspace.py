"""The workspace box the safety filter keeps the end effector in: build it, write it, read it.

The box is axis-aligned in the robot base frame. It comes from end-effector positions recorded at the corners of
the safe region (arm moved by hand in guiding mode) or from typed limits; either way it is then shrunk by `margin`
on every side, so the arm stops short of where the user touched (the table, a fixture). ``min``/``max`` in the file
are the limits to enforce; ``recorded_min``/``recorded_max`` are what was measured or typed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from irevla.atomic_io import atomic_write_yaml
from irevla.calibration.camera_model import now_iso
from irevla.calibration.errors import CalibrationError
from irevla.config import ConfigError, ConfigModel, load_config

Vector3 = tuple[float, float, float]
# A box thinner than this along an axis leaves the arm no room: almost certainly corners recorded at one height.
MIN_EXTENT_M = 0.05
# Nothing a Franka reaches is farther than this from its base; larger values are a unit mistake (mm typed as m).
MAX_ABS_COORDINATE_M = 2.0


class WorkspaceBox(ConfigModel):
    """What `config/workspace.yaml` holds; the safety filter loads it with `load_workspace_box`."""

    frame: str = Field(min_length=1, description="base frame the limits are expressed in")
    min: Vector3 = Field(description="lower limits x y z to enforce, metres (margin already applied)")
    max: Vector3 = Field(description="upper limits x y z to enforce, metres (margin already applied)")
    margin: float = Field(ge=0, description="metres the recorded box was shrunk by on each side")
    date: str = ""
    source: Literal["corners", "typed"] = "typed"
    recorded_min: Vector3 | None = None
    recorded_max: Vector3 | None = None
    points: int = Field(default=0, ge=0, description="how many corner positions were recorded")
    # Orientation limits (optional; the safety config's apply when absent): see irevla/robot/safety.py.
    orientation_nominal: tuple[float, float, float, float] | None = Field(
        default=None, description="nominal tool orientation x y z w in the base frame")
    max_tilt: float | None = Field(default=None, gt=0, le=math.pi,
                                   description="rad the tool axis may tilt from the nominal's")
    yaw_min: float | None = Field(default=None, ge=-math.pi, le=math.pi, description="rad about the tool axis")
    yaw_max: float | None = Field(default=None, ge=-math.pi, le=math.pi, description="rad about the tool axis")

    @model_validator(mode="after")
    def _check(self) -> WorkspaceBox:
        for axis, low, high in zip("xyz", self.min, self.max):
            if not (np.isfinite(low) and np.isfinite(high)):
                raise ValueError(f"{axis} limits must be finite, got {low} .. {high}")
            if high - low < MIN_EXTENT_M:
                raise ValueError(f"{axis}: max - min = {high - low:.3f} m, need at least {MIN_EXTENT_M} m")
        if (self.yaw_min is None) != (self.yaw_max is None):
            raise ValueError("yaw_min and yaw_max go together: give both or neither")
        if self.yaw_min is not None and not self.yaw_max > self.yaw_min:
            raise ValueError(f"yaw_max ({self.yaw_max}) must be greater than yaw_min ({self.yaw_min})")
        if (self.orientation_nominal is not None or self.yaw_min is not None) and self.max_tilt is None:
            raise ValueError("orientation limits need max_tilt (rad; pi for no cone)")
        if self.orientation_nominal is not None:
            norm = float(np.linalg.norm(self.orientation_nominal))
            if not (np.isfinite(norm) and abs(norm - 1.0) < 1e-3):
                raise ValueError(f"orientation_nominal {list(self.orientation_nominal)} must be a unit quaternion "
                                 f"x y z w (norm {norm:.3f})")
        return self

    def contains(self, position: Sequence[float]) -> bool:
        position = np.asarray(position, dtype=float)
        return bool(np.all(position >= np.asarray(self.min)) and np.all(position <= np.asarray(self.max)))

    def clip(self, position: Sequence[float]) -> np.ndarray:
        return np.clip(np.asarray(position, dtype=float), self.min, self.max)


def box_from_limits(low: Sequence[float], high: Sequence[float], margin: float, frame: str,
                    source: Literal["corners", "typed"] = "typed", points: int = 0) -> WorkspaceBox:
    """Shrink [low, high] by `margin` per side; errors say which axis is wrong and why."""
    low, high = np.asarray(low, dtype=float).reshape(-1), np.asarray(high, dtype=float).reshape(-1)
    if low.shape != (3,) or high.shape != (3,):
        raise CalibrationError(f"workspace limits need 3 values each (x y z), got {low.size} and {high.size}")
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise CalibrationError("workspace limits contain NaN or inf")
    if margin < 0:
        raise CalibrationError(f"margin must be >= 0 m, got {margin}")
    for axis, lo, hi in zip("xyz", low, high):
        if max(abs(lo), abs(hi)) > MAX_ABS_COORDINATE_M:
            raise CalibrationError(f"{axis}: limit {max(abs(lo), abs(hi)):.3f} m is beyond any arm's reach "
                                   f"(> {MAX_ABS_COORDINATE_M} m); limits are in metres, not millimetres")
        if hi <= lo:
            raise CalibrationError(f"{axis}: max ({hi:.3f} m) must be greater than min ({lo:.3f} m)")
        if (hi - margin) - (lo + margin) < MIN_EXTENT_M:
            raise CalibrationError(f"{axis}: the box is {hi - lo:.3f} m wide, which leaves "
                                   f"{(hi - lo) - 2 * margin:.3f} m after the {margin:.3f} m margin on each side; "
                                   f"need at least {MIN_EXTENT_M} m (record corners farther apart"
                                   + (", at a low and a high point" if axis == "z" else "") + ", or lower --margin)")
    # Micrometre rounding keeps the file readable (0.28, not 0.27999999999999997) and costs nothing.
    def rounded(values: np.ndarray) -> tuple[float, float, float]:
        return tuple(round(float(v), 6) for v in values)

    return WorkspaceBox(frame=frame, min=rounded(low + margin), max=rounded(high - margin), margin=float(margin),
                        date=now_iso(), source=source, recorded_min=rounded(low), recorded_max=rounded(high),
                        points=points)


def box_from_points(points: Sequence[Sequence[float]], margin: float, frame: str) -> WorkspaceBox:
    """The bounding box of recorded end-effector positions, shrunk by `margin`."""
    array = np.asarray(points, dtype=float)
    if array.ndim != 2 or array.shape[1] != 3:
        raise CalibrationError(f"workspace points must be x y z triples, got shape {array.shape}")
    if len(array) < 2:
        raise CalibrationError(f"need at least 2 recorded corners (opposite corners of the box), got {len(array)}")
    return box_from_limits(array.min(axis=0), array.max(axis=0), margin, frame, source="corners",
                           points=len(array))


def with_orientation_limits(box: WorkspaceBox, max_tilt: float, yaw: Sequence[float] | None = None,
                            nominal: Sequence[float] | None = None) -> WorkspaceBox:
    """The box with orientation limits: a cone of `max_tilt` rad around the nominal tool axis and a yaw range (rad)."""
    fields = {"max_tilt": float(max_tilt), "yaw_min": None if yaw is None else float(yaw[0]),
              "yaw_max": None if yaw is None else float(yaw[1]),
              "orientation_nominal": None if nominal is None else tuple(float(v) for v in nominal)}
    try:
        return WorkspaceBox.model_validate(box.model_dump() | fields)
    except ValueError as exc:
        raise CalibrationError(f"orientation limits: {exc}") from None


def write_workspace_box(path: str | Path, box: WorkspaceBox) -> Path:
    return atomic_write_yaml(path, box.model_dump(mode="json"))


def load_workspace_box(path: str | Path) -> WorkspaceBox:
    try:
        return load_config(path, WorkspaceBox)
    except ConfigError as exc:
        raise CalibrationError(str(exc)) from None
