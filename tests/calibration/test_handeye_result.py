"""The result file: easy_handeye2-compatible fields, irevla provenance, read back, TF publisher arguments."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from irevla.calibration.errors import CalibrationError
from irevla.calibration.pipeline import solve_from_directory
from irevla.calibration.result import (
    easy_handeye2_yaml,
    load_hand_eye_calibration,
    write_hand_eye_result,
)

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
