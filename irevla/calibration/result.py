"""The hand-eye result file: written by `irevla calibrate handeye`, read by the robot stack and the real-robot env.

The top two sections are field for field easy_handeye2's ``.calib`` format, so tools that read those read this::

    parameters:            name, calibration_type (eye_in_hand | eye_on_base), robot_base_frame,
                           robot_effector_frame, tracking_base_frame (the camera frame),
                           tracking_marker_frame (the board), freehand_robot_movement
    transform:             translation {x, y, z} (m), rotation {x, y, z, w}
                           eye_in_hand: camera pose in robot_effector_frame (T_gripper_cam)
                           eye_on_base: camera pose in robot_base_frame (T_base_cam)

A third section, ``irevla``, records how it was obtained: method, residuals per sample and overall, every method's
answer, rotation diversity, date, camera serial, intrinsics and the sample folder. easy_handeye2's own loader
rejects unknown keys, so `easy_handeye2_yaml` gives the bare two-section form for it.
`load_hand_eye_calibration` reads both this file and easy_handeye2's; `static_transform_publishers` turns files
into the arguments of tf2_ros' static_transform_publisher (launch/robot.launch.py's ``hand_eye_file``). Reading a
result does not import OpenCV.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml
from pydantic import Field

from irevla.atomic_io import atomic_write_yaml
from irevla.calibration.camera_model import now_iso
from irevla.calibration.errors import CalibrationError
from irevla.calibration.transforms import (
    from_translation_quaternion,
    invert,
    to_translation_quaternion,
)
from irevla.config import ConfigError, ConfigModel, load_config

if TYPE_CHECKING:  # the solver (OpenCV) is not needed to read a result: launch files import this module
    from irevla.calibration.pipeline import HandEyeRun

CALIBRATION_TYPES = {"eye-in-hand": "eye_in_hand", "eye-on-base": "eye_on_base"}


class EasyHandeyeParameters(ConfigModel):
    name: str
    calibration_type: Literal["eye_in_hand", "eye_on_base"]
    robot_base_frame: str
    robot_effector_frame: str
    tracking_base_frame: str
    tracking_marker_frame: str
    freehand_robot_movement: bool = True
    # Present in files written by easy_handeye2 versions that could move the robot with MoveIt.
    move_group_namespace: str | None = None
    move_group: str | None = None


class Vector3(ConfigModel):
    x: float
    y: float
    z: float


class Quaternion(ConfigModel):
    x: float
    y: float
    z: float
    w: float


class TransformModel(ConfigModel):
    translation: Vector3
    rotation: Quaternion


class HandEyeFile(ConfigModel):
    parameters: EasyHandeyeParameters
    transform: TransformModel
    irevla: dict[str, Any] | None = Field(default=None, description="provenance and residuals; absent in "
                                                                    "easy_handeye2 files")


@dataclass(frozen=True)
class HandEyeCalibration:
    """A loaded result: ``T_parent_child`` maps points in the camera frame (child) to parent_frame."""

    name: str
    calibration_type: str
    parent_frame: str
    child_frame: str
    T_parent_child: np.ndarray
    details: dict[str, Any]

    def with_child_frame(self, child_frame: str, T_child_camera: np.ndarray) -> HandEyeCalibration:
        """The same calibration for another frame fixed to the camera, e.g. ``camera_link``.

        A camera driver that publishes its own TF tree (realsense-ros: camera_link -> ... -> color optical frame)
        leaves the optical frame with a parent already; publish the calibration to the root of that tree instead.
        `T_child_camera` is the optical frame's pose in `child_frame` (``ros2 run tf2_ros tf2_echo camera_link
        camera_color_optical_frame``).
        """
        return HandEyeCalibration(self.name, self.calibration_type, self.parent_frame, child_frame,
                                  self.T_parent_child @ invert(np.asarray(T_child_camera, dtype=float)),
                                  self.details)

    def static_transform_publisher_arguments(self) -> list[str]:
        """Arguments for ``ros2 run tf2_ros static_transform_publisher`` (the named-flag form, Humble and later)."""
        translation, quaternion = to_translation_quaternion(self.T_parent_child)
        values = [*translation, *quaternion]
        flags = ["--x", "--y", "--z", "--qx", "--qy", "--qz", "--qw"]
        arguments = [item for flag, value in zip(flags, values) for item in (flag, f"{value:.9f}")]
        return arguments + ["--frame-id", self.parent_frame, "--child-frame-id", self.child_frame]


def hand_eye_result_dict(run: HandEyeRun, name: str | None = None) -> dict[str, Any]:
    session, solution = run.session, run.solution
    frames = session.frames
    translation, quaternion = to_translation_quaternion(solution.transform)
    parent = frames.robot_effector_frame if session.mode == "eye-in-hand" else frames.robot_base_frame
    best = solution.best
    refinement = solution.refinement
    per_sample = []
    for index, residual in enumerate(best.residuals):
        entry = {"name": residual.name, "rotation_deg": round(residual.rotation_deg, 4),
                 "translation_mm": round(residual.translation_mm, 3),
                 "board_pnp_rms_px": round(run.board_reprojection_px.get(residual.name, float("nan")), 3)}
        if refinement is not None:
            entry.update(reprojection_rms_px=round(refinement.reprojection_rms_px[index], 3),
                         robot_correction_mm=round(refinement.robot_correction_mm[index], 3),
                         robot_correction_deg=round(refinement.robot_correction_deg[index], 4))
        per_sample.append(entry)
    methods = {}
    for method, candidate in solution.methods.items():
        t, q = to_translation_quaternion(candidate.transform)
        methods[method] = {"translation": [round(float(v), 6) for v in t],
                           "quaternion_xyzw": [round(float(v), 8) for v in q],
                           "rotation_rms_deg": round(candidate.rotation_rms_deg, 4),
                           "translation_rms_mm": round(candidate.translation_rms_mm, 3)}
    for method, reason in solution.failed_methods.items():
        methods[method] = {"failed": reason}
    return {
        "parameters": {
            "name": name or session.name or f"irevla_{CALIBRATION_TYPES[session.mode]}",
            "calibration_type": CALIBRATION_TYPES[session.mode],
            "robot_base_frame": frames.robot_base_frame,
            "robot_effector_frame": frames.robot_effector_frame,
            "tracking_base_frame": frames.camera_frame,
            "tracking_marker_frame": frames.board_frame,
            "freehand_robot_movement": True,
        },
        "transform": {
            "translation": {axis: float(v) for axis, v in zip("xyz", translation)},
            "rotation": {axis: float(v) for axis, v in zip("xyzw", quaternion)},
        },
        "irevla": {
            "format": "irevla-handeye-result/1",
            "mode": session.mode,
            "parent_frame": parent,
            "child_frame": frames.camera_frame,
            "method": best.method,
            "selected_closed_form_method": best.method.split("+")[0],
            "date": now_iso(),
            "camera_serial": session.camera_serial,
            "samples_dir": str(run.directory.resolve()),
            "sample_count": len(solution.sample_names),
            "skipped_samples": dict(run.skipped),
            "residuals": {
                "rotation_rms_deg": round(best.rotation_rms_deg, 4),
                "rotation_max_deg": round(best.rotation_max_deg, 4),
                "translation_rms_mm": round(best.translation_rms_mm, 3),
                "translation_max_mm": round(best.translation_max_mm, 3),
                "meaning": "spread of the board pose in its fixed frame (base for eye-in-hand, gripper for "
                           "eye-on-base) implied by each sample; lower is more consistent",
                "per_sample": per_sample,
            },
            "methods": methods,
            "rotation_diversity": solution.diversity.to_dict(),
            "warnings": list(solution.warnings),
            "intrinsics": session.intrinsics.model_dump(mode="json"),
            "board": session.board.model_dump(mode="json"),
        },
    }


def write_hand_eye_result(path: str | Path, run: HandEyeRun, name: str | None = None) -> Path:
    return atomic_write_yaml(path, hand_eye_result_dict(run, name))


def easy_handeye2_yaml(path: str | Path) -> str:
    """The result at `path` reduced to what easy_handeye2's loader accepts (parameters + transform)."""
    data = _load_file(path).model_dump(mode="json", exclude_none=True)
    data.pop("irevla", None)
    return yaml.safe_dump(data, sort_keys=False)


def load_hand_eye_calibration(path: str | Path) -> HandEyeCalibration:
    """Read an irevla or easy_handeye2 calibration file; errors name the file and key."""
    data = _load_file(path)
    parameters, transform = data.parameters, data.transform
    t, q = transform.translation, transform.rotation
    matrix = from_translation_quaternion([t.x, t.y, t.z], [q.x, q.y, q.z, q.w], name=f"{path}: transform")
    parent = (parameters.robot_effector_frame if parameters.calibration_type == "eye_in_hand"
              else parameters.robot_base_frame)
    return HandEyeCalibration(name=parameters.name, calibration_type=parameters.calibration_type,
                              parent_frame=parent, child_frame=parameters.tracking_base_frame,
                              T_parent_child=matrix, details=dict(data.irevla or {}))


def camera_extrinsics(names: Sequence[str], files: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What episodes record about their cameras' poses: per camera with a hand-eye file (`files[i]` for `names[i]`,
    '' for none), the calibrated transform as the file holds it, with the file's path and SHA-256 so an episode says
    exactly which calibration it was taken with. JSON-ready; `CalibrationError` names a missing or malformed file."""
    if files and len(files) != len(names):
        raise CalibrationError(f"hand-eye files: {len(files)} given for {len(names)} cameras {list(names)}; give one "
                               f"per camera ('' for a camera without one)")
    extrinsics: dict[str, dict[str, Any]] = {}
    for name, path in zip(names, files):
        if not path:
            continue
        calibration = load_hand_eye_calibration(path)
        extrinsics[name] = {
            "calibration_type": calibration.calibration_type, "parent_frame": calibration.parent_frame,
            "child_frame": calibration.child_frame,
            "T_parent_child": [[round(float(v), 12) for v in row] for row in calibration.T_parent_child],
            "file": str(Path(path).expanduser().resolve()),
            "sha256": hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest(),
            "date": str(calibration.details.get("date", "")),
        }
    return extrinsics


def extrinsics_from_metadata(metadata: Mapping[str, Any]) -> dict[str, HandEyeCalibration]:
    """The camera poses an episode recorded (its ``metadata['camera_extrinsics']``), as calibrations; {} if none."""
    return {name: HandEyeCalibration(name=name, calibration_type=entry["calibration_type"],
                                     parent_frame=entry["parent_frame"], child_frame=entry["child_frame"],
                                     T_parent_child=np.asarray(entry["T_parent_child"], dtype=float),
                                     details={"file": entry.get("file", ""), "sha256": entry.get("sha256", "")})
            for name, entry in dict(metadata.get("camera_extrinsics", {})).items()}


def _load_file(path: str | Path) -> HandEyeFile:
    try:
        return load_config(path, HandEyeFile)
    except ConfigError as exc:
        raise CalibrationError(str(exc)) from None


def _split(text: str | Sequence[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    return [item.strip() for item in items]


def static_transform_publishers(files: str | Sequence[str], child_frames: str | Sequence[str] = ""
                                ) -> list[tuple[str, list[str]]]:
    """(node name, arguments) of one tf2_ros ``static_transform_publisher`` per hand-eye result file.

    `files` is a list or a comma-separated string (a launch argument); empty entries are ignored. `child_frames`,
    when given, has one entry per file: a non-empty entry renames the camera frame the file publishes (the same
    physical frame under the name your camera driver stamps its images with, e.g. irevla's realsense_camera's
    ``wrist_color_optical_frame``); an empty entry keeps the file's. Raises `CalibrationError` naming the file for
    a file that is missing or malformed, and for two files publishing the same frame (a TF frame has one parent).
    """
    paths = [item for item in _split(files) if item]
    renames = _split(child_frames)
    if not any(renames):
        renames = [""] * len(paths)
    if len(renames) != len(paths):
        raise CalibrationError(f"hand-eye child frames: {len(renames)} given for {len(paths)} calibration files "
                               f"{paths}; give one per file (empty = the file's own)")
    publishers: list[tuple[str, list[str]]] = []
    publisher_of: dict[str, str] = {}
    for path, child_frame in zip(paths, renames):
        calibration = load_hand_eye_calibration(path)
        if child_frame:
            calibration = replace(calibration, child_frame=child_frame)
        if calibration.child_frame in publisher_of:
            raise CalibrationError(f"{path}: frame {calibration.child_frame!r} is already published from "
                                   f"{publisher_of[calibration.child_frame]}; a TF frame has one parent")
        publisher_of[calibration.child_frame] = path
        base = "hand_eye_" + re.sub(r"[^A-Za-z0-9_]", "_", calibration.child_frame)
        name, suffix = base, 2
        while any(name == existing for existing, _ in publishers):
            name, suffix = f"{base}_{suffix}", suffix + 1
        publishers.append((name, calibration.static_transform_publisher_arguments()))
    return publishers
