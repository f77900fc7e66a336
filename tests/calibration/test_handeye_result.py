"""The result file: easy_handeye2-compatible fields, irevla provenance, read back, TF publisher arguments."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from irevla.calibration.errors import CalibrationError
from irevla.calibration.pipeline import solve_from_directory
from irevla.calibration.result import (
    easy_handeye2_yaml,
    load_hand_eye_calibration,
    static_transform_publishers,
    write_hand_eye_result,
)
from irevla.calibration.transforms import from_translation_quaternion

# Field layout of an easy_handeye2 .calib file (values made up).
EASY_HANDEYE2_CALIB = """\
parameters:
  name: demo_eob
  calibration_type: eye_on_base
  robot_base_frame: panda_link0
  robot_effector_frame: panda_link8
  tracking_base_frame: camera_color_optical_frame
  tracking_marker_frame: marker
  freehand_robot_movement: true
  move_group_namespace: /
  move_group: manipulator
transform:
  translation: {x: 1.0, y: 0.2, z: 0.5}
  rotation: {x: 0.0, y: 0.0, z: 0.0, w: 1.0}
"""


@pytest.mark.parametrize("session_name, parent", [("eye_in_hand_session", "fr3_hand_tcp"),
                                                  ("eye_on_base_session", "fr3_link0")])
def test_result_round_trip(session_name, parent, request, tmp_path):
    session = request.getfixturevalue(session_name)
    run = solve_from_directory(session.directory)
    path = write_hand_eye_result(tmp_path / "calibration_wrist.yaml", run, name="wrist_camera")
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["parameters", "transform", "irevla"]
    assert data["parameters"]["calibration_type"] == run.session.mode.replace("-", "_")
    details = data["irevla"]
    assert details["method"] == run.solution.best.method and details["camera_serial"] == "sim-0001"
    assert details["date"] and len(details["residuals"]["per_sample"]) == len(run.solution.sample_names)
    assert set(details["methods"]) == {"tsai", "park", "horaud", "andreff", "daniilidis"}

    calibration = load_hand_eye_calibration(path)
    assert calibration.parent_frame == parent and calibration.child_frame == "camera_color_optical_frame"
    assert np.allclose(calibration.T_parent_child, run.solution.transform, atol=1e-9)
    T_link_optical = np.array([[0, 0, 1, 0.0], [-1, 0, 0, 0.015], [0, -1, 0, 0.0], [0, 0, 0, 1]], dtype=float)
    rebased = calibration.with_child_frame("camera_link", T_link_optical)
    assert rebased.child_frame == "camera_link"
    assert np.allclose(rebased.T_parent_child @ T_link_optical, calibration.T_parent_child)
    arguments = calibration.static_transform_publisher_arguments()
    assert arguments[-4:] == ["--frame-id", parent, "--child-frame-id", "camera_color_optical_frame"]
    assert float(arguments[arguments.index("--x") + 1]) == pytest.approx(run.solution.transform[0, 3], abs=1e-8)


def test_easy_handeye2_form_and_files(eye_in_hand_session, tmp_path):
    run = solve_from_directory(eye_in_hand_session.directory)
    path = write_hand_eye_result(tmp_path / "result.yaml", run)
    bare = yaml.safe_load(easy_handeye2_yaml(path))
    upstream = yaml.safe_load(EASY_HANDEYE2_CALIB)
    assert list(bare) == ["parameters", "transform"]
    assert set(bare["parameters"]) <= set(upstream["parameters"])
    assert set(bare["transform"]["rotation"]) == set(upstream["transform"]["rotation"])

    calib = tmp_path / "demo_eob.calib"
    calib.write_text(EASY_HANDEYE2_CALIB)
    loaded = load_hand_eye_calibration(calib)
    assert loaded.parent_frame == "panda_link0" and np.allclose(loaded.T_parent_child[:3, 3], [1.0, 0.2, 0.5])


def test_bad_result_file_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(EASY_HANDEYE2_CALIB.replace("calibration_type: eye_on_base", "calibration_type: eye_on_hand"))
    with pytest.raises(CalibrationError, match=r"bad.yaml: parameters.calibration_type"):
        load_hand_eye_calibration(path)


def publisher_pose(arguments: list[str]) -> tuple[dict[str, str], np.ndarray]:
    """Parse static_transform_publisher's named-flag arguments back: ({flag: value}, 4x4 parent <- child)."""
    assert len(arguments) % 2 == 0 and all(flag.startswith("--") for flag in arguments[::2]), arguments
    values = dict(zip(arguments[::2], arguments[1::2]))
    assert set(values) == {"--x", "--y", "--z", "--qx", "--qy", "--qz", "--qw", "--frame-id", "--child-frame-id"}
    pose = from_translation_quaternion([float(values[f"--{a}"]) for a in "xyz"],
                                       [float(values[f"--q{a}"]) for a in "xyzw"])
    return values, pose


def test_static_transform_publishers_from_result_files(eye_in_hand_session, tmp_path):
    run = solve_from_directory(eye_in_hand_session.directory)
    wrist = write_hand_eye_result(tmp_path / "calibration_wrist_camera.yaml", run, name="wrist_camera")
    fixed = tmp_path / "fixed.calib"
    fixed.write_text(EASY_HANDEYE2_CALIB.replace("rotation: {x: 0.0, y: 0.0, z: 0.0, w: 1.0}",
                                                 "rotation: {x: 0.0, y: 0.0, z: -0.7071068, w: -0.7071068}")
                     .replace("tracking_base_frame: camera_color_optical_frame",
                              "tracking_base_frame: fixed_color_optical_frame"))

    (name, arguments), = static_transform_publishers(str(wrist))
    values, pose = publisher_pose(arguments)
    assert name == "hand_eye_camera_color_optical_frame"
    assert values["--frame-id"] == "fr3_hand_tcp" and values["--child-frame-id"] == "camera_color_optical_frame"
    assert np.allclose(pose, run.solution.transform, atol=1e-8)  # 9 decimals: well below a micrometre

    # a launch argument: comma-separated files, the wrist camera renamed to the frame realsense_camera stamps
    publishers = static_transform_publishers(f" {wrist} , {fixed},", "wrist_color_optical_frame,")
    assert [name for name, _ in publishers] == ["hand_eye_wrist_color_optical_frame",
                                                "hand_eye_fixed_color_optical_frame"]
    (wrist_values, wrist_pose), (fixed_values, fixed_pose) = (publisher_pose(a) for _, a in publishers)
    assert wrist_values["--child-frame-id"] == "wrist_color_optical_frame"
    assert np.allclose(wrist_pose, run.solution.transform, atol=1e-8)  # a rename, not a new pose
    assert fixed_values["--frame-id"] == "panda_link0" and fixed_values["--child-frame-id"] == \
        "fixed_color_optical_frame"
    assert float(fixed_values["--qw"]) == pytest.approx(0.7071068) and float(fixed_values["--qz"]) == \
        pytest.approx(0.7071068)  # the same rotation, printed with w >= 0
    assert np.allclose(fixed_pose[:3, 3], [1.0, 0.2, 0.5])
    assert static_transform_publishers("") == [] and static_transform_publishers(" , ") == []


def test_static_transform_publishers_refuse_bad_input_naming_the_file(tmp_path):
    good = tmp_path / "good.calib"
    good.write_text(EASY_HANDEYE2_CALIB)
    with pytest.raises(CalibrationError, match=r"missing.yaml: config file not found"):
        static_transform_publishers(f"{good},{tmp_path / 'missing.yaml'}")
    broken = tmp_path / "broken.yaml"
    broken.write_text(EASY_HANDEYE2_CALIB.replace("w: 1.0", "w: 3.0"))
    with pytest.raises(CalibrationError, match=r"broken.yaml: transform: quaternion .* has norm 3.000"):
        static_transform_publishers(str(broken))
    truncated = tmp_path / "truncated.yaml"
    truncated.write_text(EASY_HANDEYE2_CALIB.split("transform:")[0])
    with pytest.raises(CalibrationError, match=r"truncated.yaml: transform: required key is missing"):
        static_transform_publishers(str(truncated))
    with pytest.raises(CalibrationError, match=r"2 given for 1 calibration files"):
        static_transform_publishers(str(good), "a,b")
    with pytest.raises(CalibrationError, match=r"frame 'camera_color_optical_frame' is already published from "
                                               r".*good.calib; a TF frame has one parent"):
        static_transform_publishers([str(good), str(good)])


def test_reading_a_result_does_not_import_opencv():
    """Launch files read results at launch time on the robot PC, which may not have the calibration extra."""
    code = "import sys, irevla.calibration.result; print('cv2' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
