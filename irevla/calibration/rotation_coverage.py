"""Is there enough rotation in a set of robot poses for hand-eye calibration, and which rotations are missing?

Hand-eye calibration needs the gripper to rotate between samples about at least two different axes: with one
rotation axis the camera offset along that axis is unobservable, and with no rotation nothing is. The check looks at
the relative rotations between every pair of samples (expressed in the gripper frame):
- the largest relative angle (all-identical orientations give ~0),
- the spread of their rotation axes: the second singular value of the stacked rotation vectors, in degrees; it is
  ~0 when every motion turns about the same axis.
Coverage per gripper axis (relative to the first sample) drives the "what to do next" hints during collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

# Below these the solution is undefined or dominated by noise: refuse to solve.
MIN_ANGLE_DEG = 2.0
MIN_AXIS_SPREAD_DEG = 1.0
# Below these the solution exists but is weak: warn, and tell the user which rotation to add.
GOOD_ANGLE_DEG = 20.0
GOOD_AXIS_SPREAD_DEG = 4.0
# Per-axis span of tilt relative to the first sample that the guidance asks for (e.g. -15 .. +15 deg).
TARGET_AXIS_SPAN_DEG = 30.0
AXIS_NAMES = ("x", "y", "z")


@dataclass(frozen=True)
class RotationDiversity:
    sample_count: int
    max_relative_angle_deg: float
    axis_spread_deg: float
    axis_range_deg: tuple[tuple[float, float], ...]  # per gripper axis: (min, max) tilt relative to sample 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def degenerate(self) -> bool:
        return bool(self.errors)

    def to_dict(self) -> dict:
        return {"max_relative_angle_deg": round(self.max_relative_angle_deg, 3),
                "axis_spread_deg": round(self.axis_spread_deg, 3),
                "axis_range_deg": {name: [round(lo, 2), round(hi, 2)]
                                   for name, (lo, hi) in zip(AXIS_NAMES, self.axis_range_deg)}}


def assess_rotation_diversity(gripper_rotations: Sequence[np.ndarray],
                              names: Sequence[str] | None = None) -> RotationDiversity:
    """Diversity of 3x3 gripper orientations (in the robot base frame); errors/warnings name the samples involved."""
    count = len(gripper_rotations)
    names = list(names) if names is not None else [f"sample {i}" for i in range(count)]
    if count < 2:
        return RotationDiversity(count, 0.0, 0.0, ((0.0, 0.0),) * 3,
                                 errors=[f"need at least 2 samples to judge rotation diversity, got {count}"])
    rotations = Rotation.from_matrix(np.asarray(gripper_rotations, dtype=float))
    first, second = np.triu_indices(count, k=1)
    relative = (rotations[first].inv() * rotations[second]).as_rotvec(degrees=True)
    angles = np.linalg.norm(relative, axis=1)
    # Make each axis point into the same half-space so that +a and -a about one axis count as one axis.
    reference = relative[np.argmax(angles)]
    signs = np.where(relative @ reference < 0, -1.0, 1.0)
    singular_values = np.linalg.svd(relative * signs[:, None], compute_uv=False) / np.sqrt(len(relative))
    singular_values = np.pad(singular_values, (0, 3 - len(singular_values)))  # two samples give one motion
    max_angle = float(angles.max())
    spread = float(singular_values[1])
    tilt = (rotations[0].inv() * rotations).as_rotvec(degrees=True)
    axis_range = tuple((float(tilt[:, k].min()), float(tilt[:, k].max())) for k in range(3))

    errors, warnings = [], []
    if max_angle < MIN_ANGLE_DEG:
        errors.append(f"all {count} samples have (almost) the same gripper orientation (largest relative rotation "
                      f"{max_angle:.2f} deg between any two of {_name_range(names)}); rotate the gripper between "
                      f"samples by at least {GOOD_ANGLE_DEG:.0f} deg about different axes")
    elif spread < MIN_AXIS_SPREAD_DEG:
        errors.append(f"all rotations between samples ({_name_range(names)}) are about one axis (axis spread "
                      f"{spread:.2f} deg): the camera offset along that axis cannot be determined; also tilt the "
                      "gripper about a second axis")
    else:
        if max_angle < GOOD_ANGLE_DEG:
            warnings.append(f"little rotation between samples (largest {max_angle:.1f} deg, want >= "
                            f"{GOOD_ANGLE_DEG:.0f} deg): the result will be noisy")
        if spread < GOOD_AXIS_SPREAD_DEG:
            warnings.append(f"rotations are mostly about one axis (axis spread {spread:.1f} deg, want >= "
                            f"{GOOD_AXIS_SPREAD_DEG:.0f} deg): the result will be noisy along that axis")
    return RotationDiversity(count, max_angle, spread, axis_range, errors, warnings)


def missing_rotation_hints(diversity: RotationDiversity, target_span_deg: float = TARGET_AXIS_SPAN_DEG) -> list[str]:
    """One line per gripper axis whose tilt range (relative to the first sample) is still narrower than wanted."""
    hints = []
    half = target_span_deg / 2.0
    for name, (low, high) in zip(AXIS_NAMES, diversity.axis_range_deg):
        if high - low >= target_span_deg:
            continue
        wanted = []
        if high < half:
            wanted.append(f"+{half:.0f}")
        if low > -half:
            wanted.append(f"-{half:.0f}")
        hints.append(f"rotate about the gripper {name} axis: covered {low:+.0f}..{high:+.0f} deg, "
                     f"also go to about {' and '.join(wanted)} deg")
    return hints


def _name_range(names: Sequence[str]) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} .. {names[-1]}"
