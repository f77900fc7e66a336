"""Hand-eye calibration against synthetic ground truth, and every kind of bad input the issue lists."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from irevla.calibration.board import CharucoDetector, estimate_board_pose
from irevla.calibration.errors import CalibrationError, CalibrationWarning
from irevla.calibration.handeye import METHODS, solve_hand_eye
from irevla.calibration.pipeline import solve_from_directory
from irevla.calibration.rotation_coverage import (
    assess_rotation_diversity,
    missing_rotation_hints,
)
from irevla.calibration.samples import SampleStore
from irevla.calibration.transforms import invert, make_transform, rotation_angle_deg

MAX_ERROR_MM = 2.0
MAX_ERROR_DEG = 0.5


def errors(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return (1000.0 * float(np.linalg.norm(found[:3, 3] - truth[:3, 3])),
            rotation_angle_deg(found[:3, :3], truth[:3, :3]))


# ------------------------------------------------------------------------------------- synthetic ground truth
@pytest.mark.parametrize("session_name", ["eye_in_hand_session", "eye_on_base_session"])
def test_recovers_the_hand_eye_transform_from_rendered_images(session_name, request):
    session = request.getfixturevalue(session_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # good data must not raise any warning
        run = solve_from_directory(session.directory)
    error_mm, error_deg = errors(run.solution.transform, session.rig.true_hand_eye)
    print(f"{run.session.mode}: {run.solution.best.method}: {error_mm:.2f} mm, {error_deg:.3f} deg; closed-form "
          + ", ".join(f"{m} {errors(s.transform, session.rig.true_hand_eye)[0]:.2f} mm"
                      for m, s in run.solution.methods.items()))
    assert error_mm < MAX_ERROR_MM and error_deg < MAX_ERROR_DEG
    assert set(run.solution.methods) == set(METHODS)  # every OpenCV method ran
    assert run.solution.best.method.endswith("+refined")
    assert len(run.solution.best.residuals) == len(session.names)
    best = run.solution.best
    print(f"  consistency residual rms {best.translation_rms_mm:.2f} mm {best.rotation_rms_deg:.3f} deg, max "
          f"{best.translation_max_mm:.2f} mm {best.rotation_max_deg:.3f} deg")
    # The residual reports the spread of the board pose across samples: a few mm / under ~1 deg for clean data.
    assert best.translation_rms_mm < 4.0 and best.rotation_rms_deg < 1.0


def test_detected_corners_carry_realistic_pixel_noise(eye_in_hand_session):
    """The renderer's noise is what the accuracy claim rests on: check it is 0.3-0.6 px, not a clean image."""
    rig = eye_in_hand_session.rig
    detector = CharucoDetector(rig.board_config)
    squared = []
    for _ in range(4):
        rig.advance()
        detection = detector.detect(rig.image())
        truth = rig.renderer.project_corners(rig.T_cam_board)[detection.corner_ids]
        squared.extend(np.sum((detection.image_points - truth) ** 2, axis=1))
    rms = float(np.sqrt(np.mean(squared)))
    print(f"corner error RMS {rms:.3f} px")
    assert 0.3 < rms < 0.6


def test_closed_form_methods_are_exact_on_noise_free_poses():
    rng = np.random.default_rng(3)
    T_gripper_cam = make_transform(Rotation.from_euler("xyz", [10, -20, 95], degrees=True), [0.05, -0.03, 0.07])
    T_base_board = make_transform(Rotation.from_euler("xyz", [180, 0, 30], degrees=True), [0.5, 0.1, 0.0])
    robot, board = [], []
    for _ in range(12):
        T_base_gripper = make_transform(Rotation.from_rotvec(rng.uniform(-0.5, 0.5, 3)) *
                                        Rotation.from_euler("x", 180, degrees=True), rng.uniform(-0.1, 0.1, 3)
                                        + [0.5, 0.1, 0.4])
        robot.append(T_base_gripper)
        board.append(invert(T_base_gripper @ T_gripper_cam) @ T_base_board)
    solution = solve_hand_eye(robot, board, "eye-in-hand")
    for method, candidate in solution.methods.items():
        error_mm, error_deg = errors(candidate.transform, T_gripper_cam)
        assert error_mm < 0.01 and error_deg < 0.001, method
    assert solution.best.translation_rms_mm < 0.01


# ------------------------------------------------------------------------------------------------ bad input
def _poses(session, count):
    """(robot poses, board poses) of the first `count` recorded samples."""
    store = SampleStore(session.directory)
    samples = store.load()[:count]
    detector = CharucoDetector(store.session().board)
    intrinsics = store.session().intrinsics
    boards = [estimate_board_pose(detector.detect(s.image), intrinsics.camera_matrix,
                                  intrinsics.opencv_distortion).T_cam_board for s in samples]
    return [s.T_base_gripper for s in samples], boards


def test_too_few_samples_is_an_error(eye_in_hand_session):
    robot, board = _poses(eye_in_hand_session, count=4)
    with pytest.raises(CalibrationError, match="too few samples: 4"):
        solve_hand_eye(robot, board, "eye-in-hand")


def test_mismatched_sample_counts_is_an_error(eye_in_hand_session):
    robot, board = _poses(eye_in_hand_session, count=8)
    with pytest.raises(CalibrationError, match="mismatched sample counts: 8 robot poses but 7 board poses"):
        solve_hand_eye(robot, board[:7], "eye-in-hand")


def test_all_identical_rotations_are_refused_before_solving():
    rotation = Rotation.from_euler("x", 180, degrees=True)
    robot = [make_transform(rotation, [0.4 + 0.02 * i, 0.01 * i, 0.3]) for i in range(8)]
    board = [make_transform(np.eye(3), [0.0, 0.0, 0.4 + 0.01 * i]) for i in range(8)]
    with pytest.raises(CalibrationError, match="same gripper orientation"):
        solve_hand_eye(robot, board, "eye-in-hand")


def test_rotations_about_one_axis_only_are_refused():
    robot = [make_transform(Rotation.from_euler("z", 12 * i, degrees=True), [0.4, 0.0, 0.3]) for i in range(8)]
    board = [make_transform(np.eye(3), [0.0, 0.0, 0.4]) for _ in range(8)]
    with pytest.raises(CalibrationError, match="about one axis"):
        solve_hand_eye(robot, board, "eye-in-hand")


def test_weak_rotation_diversity_warns_and_hints_what_is_missing():
    rotations = [Rotation.from_euler("xy", [3 * (i % 2), 2 * (i // 2)], degrees=True).as_matrix() for i in range(6)]
    diversity = assess_rotation_diversity(rotations)
    assert not diversity.degenerate
    assert any("little rotation" in w for w in diversity.warnings)
    hints = missing_rotation_hints(diversity)
    assert len(hints) == 3 and "gripper z axis" in hints[2] and "+15 and -15" in hints[2]


def test_board_not_found_is_a_warning_naming_the_sample(damaged_copy, eye_in_hand_session):
    import cv2

    directory = damaged_copy()
    blank = np.full((480, 640, 3), 128, np.uint8)
    cv2.imwrite(str(directory / "sample_004.png"), blank)
    with pytest.warns(CalibrationWarning, match=r"sample_004\.png: board not found in the image; sample skipped"):
        run = solve_from_directory(directory)
    assert run.skipped == {"sample_004": "board not found in the image"}
    assert "sample_004" not in run.solution.sample_names
    assert errors(run.solution.transform, eye_in_hand_session.rig.true_hand_eye)[0] < MAX_ERROR_MM


def test_corrupt_sample_is_an_error_naming_the_file(damaged_copy):
    directory = damaged_copy()
    (directory / "sample_002.json").write_text('{"image": "sample_002.png", "translation": [0.1, 0.2')
    with pytest.raises(CalibrationError, match=r"sample_002\.json: corrupt sample, not valid JSON"):
        solve_from_directory(directory)


def test_corrupt_sample_can_be_skipped_with_a_warning(damaged_copy):
    directory = damaged_copy()
    (directory / "sample_002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.warns(CalibrationWarning, match=r"sample_002\.png: corrupt sample, not a readable image"):
        run = solve_from_directory(directory, skip_bad_samples=True)
    assert "sample_002" not in run.solution.sample_names


def test_bad_pose_values_name_the_file_and_key(damaged_copy):
    directory = damaged_copy()
    record = json.loads((directory / "sample_001.json").read_text())
    record["quaternion_xyzw"] = [0.0, 0.0, 0.0, 0.0]
    (directory / "sample_001.json").write_text(json.dumps(record))
    with pytest.raises(CalibrationError, match=r"sample_001\.json: quaternion .* has norm 0.000"):
        solve_from_directory(directory)
    record["quaternion_xyzw"] = "north"
    (directory / "sample_001.json").write_text(json.dumps(record))
    with pytest.raises(CalibrationError, match=r"sample_001\.json: quaternion_xyzw"):
        solve_from_directory(directory)


def test_image_without_pose_file_is_reported_as_mismatched(damaged_copy):
    directory = damaged_copy()
    (directory / "sample_007.json").unlink()
    with pytest.raises(CalibrationError, match=r"sample_007\.png: image without sample_007\.json \(mismatched"):
        solve_from_directory(directory)


def test_too_few_usable_samples_after_skipping_is_an_error(damaged_copy):
    directory = damaged_copy()
    for path in sorted(directory.glob("sample_*.json"))[4:]:
        path.unlink()
        path.with_suffix(".png").unlink()
    with pytest.raises(CalibrationError, match="too few usable samples: 4 of 4"):
        solve_from_directory(directory)


def test_sample_folder_without_session_is_explained(tmp_path):
    with pytest.raises(CalibrationError, match="session.yaml: missing"):
        solve_from_directory(tmp_path)
