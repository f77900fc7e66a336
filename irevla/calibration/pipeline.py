"""From a folder of saved samples to a hand-eye solution: detect the board, solvePnP, solve, refine.

This is what `irevla calibrate handeye --from DIR` runs, and what the guided collection runs at its end, so a
live calibration and its offline repetition give the same answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from irevla.calibration.board import (
    BoardDetection,
    CharucoDetector,
    estimate_board_pose,
)
from irevla.calibration.errors import CalibrationError, CalibrationWarning
from irevla.calibration.handeye import METHODS, HandEyeSolution, solve_hand_eye
from irevla.calibration.samples import HandEyeSession, SampleStore


@dataclass(frozen=True)
class HandEyeRun:
    session: HandEyeSession
    solution: HandEyeSolution
    directory: Path
    skipped: dict[str, str] = field(default_factory=dict)  # sample name -> why it was not used
    board_reprojection_px: dict[str, float] = field(default_factory=dict)  # solvePnP fit per used sample


def solve_from_directory(directory: str | Path, skip_bad_samples: bool = False, refine: bool = True,
                         methods: Sequence[str] = tuple(METHODS), min_samples: int = 5) -> HandEyeRun:
    """Solve the session in `directory`. Raises CalibrationError (naming the file/sample) on unusable input."""
    store = SampleStore(directory)
    session = store.session()
    samples = store.load(skip_bad=skip_bad_samples)
    if not samples:
        raise CalibrationError(f"{store.directory}: no samples (sample_NNN.json + .png) in the folder")
    detector = CharucoDetector(session.board)
    intrinsics = session.intrinsics
    camera_matrix, distortion = intrinsics.camera_matrix, intrinsics.opencv_distortion
    names, robot_poses, board_poses, detections = [], [], [], []
    skipped: dict[str, str] = {}
    reprojection: dict[str, float] = {}
    for sample in samples:
        detection: BoardDetection | None = detector.detect(sample.image)
        if detection is None:
            skipped[sample.name] = "board not found in the image"
        else:
            try:
                pose = estimate_board_pose(detection, camera_matrix, distortion, name=sample.name)
            except CalibrationError as exc:
                skipped[sample.name] = str(exc).removeprefix(f"{sample.name}: ")
            else:
                names.append(sample.name)
                robot_poses.append(sample.T_base_gripper)
                board_poses.append(pose.T_cam_board)
                detections.append(detection)
                reprojection[sample.name] = pose.reprojection_rms_px
                continue
        warnings.warn(f"{store.directory / (sample.name + '.png')}: {skipped[sample.name]}; sample skipped",
                      CalibrationWarning, stacklevel=2)
    if len(names) < min_samples:
        detail = f" ({len(skipped)} skipped: {', '.join(skipped)})" if skipped else ""
        raise CalibrationError(f"{store.directory}: too few usable samples: {len(names)} of {len(samples)}{detail}, "
                               f"need at least {min_samples}")
    solution = solve_hand_eye(robot_poses, board_poses, session.mode, names=names, methods=methods,
                              min_samples=min_samples, detections=detections, intrinsics=intrinsics,
                              noise=session.noise.model(), refine=refine)
    return HandEyeRun(session=session, solution=solution, directory=store.directory, skipped=skipped,
                      board_reprojection_px=reprojection)

