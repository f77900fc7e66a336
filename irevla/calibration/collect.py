"""Guided collection at the robot: hand-eye samples and workspace corners, one key press per capture.

The user moves the arm (guiding mode or a teach pendant); these loops read the pose and the image, check them, save
them, and say what to do next: how many samples are left and which rotations are still missing. Input and output go
through `read_line`/`say` so tests (and other front ends) can drive them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from irevla.calibration.board import CharucoDetector, estimate_board_pose
from irevla.calibration.errors import CalibrationError
from irevla.calibration.rotation_coverage import (
    assess_rotation_diversity,
    missing_rotation_hints,
)
from irevla.calibration.samples import SampleStore
from irevla.calibration.sources import ImageSource, PoseSource
from irevla.calibration.transforms import poses_close

# The pose read before and after the image must agree this well, or the arm was still moving during the capture.
STILL_TRANSLATION_M = 0.001
STILL_ROTATION_DEG = 0.2
# A board fit worse than this usually means motion blur or a wrong/bent board.
POOR_FIT_PX = 2.0

ReadLine = Callable[[str], str]
Say = Callable[[str], None]


def collect_hand_eye_samples(store: SampleStore, pose_source: PoseSource, image_source: ImageSource,
                             target_samples: int = 15, read_line: ReadLine | None = None,
                             say: Say | None = None) -> list[str]:
    """Capture samples into `store` until the user types q; returns the names saved in this run."""
    read_line, say = read_line or (lambda prompt: input(prompt)), say or print
    session = store.session()
    detector = CharucoDetector(session.board)
    intrinsics = session.intrinsics
    existing = store.load(skip_bad=True)
    rotations = [s.T_base_gripper[:3, :3] for s in existing]
    positions = {s.name: s.T_base_gripper for s in existing}
    saved: list[str] = []
    where = ("camera on the gripper, board fixed on the table" if session.mode == "eye-in-hand"
             else "board fixed to the gripper, camera fixed")
    say(f"Hand-eye collection ({session.mode}: {where}); samples go to {store.directory}")
    say("Move the arm so that the whole board is in view, hold still, press Enter. Vary the distance "
        "(0.3-0.8 m), position, and above all the orientation: tilt the gripper by 15-30 deg about each of its axes.")
    while True:
        say(_status(len(positions), target_samples, rotations))
        try:
            command = read_line("[Enter] capture   [u] undo last   [q] finish > ").strip().lower()
        except EOFError:
            command = "q"
        if command == "q":
            return saved
        if command == "u":
            if not saved:
                say("  nothing captured in this run to undo")
                continue
            name = saved.pop()
            store.remove(name)
            positions.pop(name, None)
            rotations.pop()
            say(f"  removed {name}")
            continue
        # A live source is read before and after the image to catch an arm still moving; a typed one only once.
        live = getattr(pose_source, "live", True)
        try:
            before = pose_source.current_pose() if live else None
            captured = image_source.capture()
            after = pose_source.current_pose()
        except CalibrationError as exc:
            say(f"  capture failed: {exc}")
            continue
        if before is not None and not poses_close(before.T_base_gripper, after.T_base_gripper, STILL_TRANSLATION_M,
                                                  STILL_ROTATION_DEG):
            say("  the robot moved during the capture; hold it still and press Enter again")
            continue
        if captured.image.shape[:2] != (intrinsics.height, intrinsics.width):
            say(f"  image is {captured.image.shape[1]}x{captured.image.shape[0]} but the intrinsics are for "
                f"{intrinsics.width}x{intrinsics.height}; check the camera profile")
            continue
        detection = detector.detect(captured.image)
        if detection is None:
            say("  board not found in the image: make sure the whole board is visible, lit evenly and not "
                "blurred; nothing saved")
            continue
        try:
            board = estimate_board_pose(detection, intrinsics.camera_matrix, intrinsics.opencv_distortion,
                                        name="this capture")
        except CalibrationError as exc:
            say(f"  {exc}; nothing saved")
            continue
        twin = next((n for n, T in positions.items()
                     if poses_close(T, after.T_base_gripper, 0.005, 2.0)), None)
        name = store.add(captured.image, after.T_base_gripper, after.stamp, captured.stamp)
        saved.append(name)
        positions[name] = after.T_base_gripper
        rotations.append(after.T_base_gripper[:3, :3])
        say(f"  saved {name}: {detection.count}/{session.board.corner_count} corners, board "
            f"{np.linalg.norm(board.T_cam_board[:3, 3]):.2f} m away, fit {board.reprojection_rms_px:.2f} px")
        if board.reprojection_rms_px > POOR_FIT_PX:
            say(f"  note: the board fits poorly ({board.reprojection_rms_px:.2f} px); motion blur or a bent board? "
                "Undo with u if unsure")
        if twin:
            say(f"  note: almost the same pose as {twin}; it adds little, move further next time")


def _status(count: int, target: int, rotations: list[np.ndarray]) -> str:
    lines = [f"\n{count} samples so far (aim for {target})."]
    if count >= 2:
        diversity = assess_rotation_diversity(rotations)
        hints = missing_rotation_hints(diversity)
        # Two samples are one motion, always about one axis: only judge from three on.
        for problem in (diversity.errors + diversity.warnings if count >= 3 else []):
            lines.append(f"  ! {problem}")
        lines.extend(f"  - {hint}" for hint in hints)
        if count >= target and not hints and not diversity.errors:
            lines.append("  Enough samples with good rotation coverage: press q to solve (or add more).")
    elif count == 1:
        lines.append("  - next: change the orientation by 15-30 deg, not just the position")
    return "\n".join(lines)


def record_workspace_points(pose_source: PoseSource, read_line: ReadLine | None = None,
                            say: Say | None = None) -> list[np.ndarray]:
    """End-effector positions at the corners of the safe region, until the user types q."""
    read_line, say = read_line or (lambda prompt: input(prompt)), say or print
    say("Put the arm in guiding mode (press the pilot buttons / enable hand guiding) and move the gripper tip to a "
        "corner of the region it may work in: e.g. the 4 corners just above the table, then the 4 at the highest "
        "safe height. Press Enter at each corner.")
    points: list[np.ndarray] = []
    while True:
        if points:
            array = np.asarray(points)
            low, high = array.min(axis=0), array.max(axis=0)
            say(f"{len(points)} corners; box so far x {low[0]:+.3f}..{high[0]:+.3f}  y {low[1]:+.3f}..{high[1]:+.3f}"
                f"  z {low[2]:+.3f}..{high[2]:+.3f} m")
        try:
            command = read_line("[Enter] record corner   [u] undo last   [q] finish > ").strip().lower()
        except EOFError:
            command = "q"
        if command == "q":
            return points
        if command == "u":
            if points:
                points.pop()
            continue
        try:
            pose = pose_source.current_pose()
        except CalibrationError as exc:
            say(f"  could not read the pose: {exc}")
            continue
        points.append(pose.T_base_gripper[:3, 3].copy())
        x, y, z = points[-1]
        say(f"  corner {len(points)}: x {x:+.3f}  y {y:+.3f}  z {z:+.3f} m")
