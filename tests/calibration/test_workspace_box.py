"""Workspace box: from corners or typed limits, margin, validation, atomic write, read back."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from irevla.calibration.errors import CalibrationError
from irevla.calibration.workspace import (
    box_from_limits,
    box_from_points,
    load_workspace_box,
    write_workspace_box,
)


def test_box_from_corners_shrinks_by_the_margin(tmp_path):
    corners = [[0.30, -0.30, 0.02], [0.75, 0.30, 0.02], [0.30, 0.30, 0.55], [0.75, -0.30, 0.55], [0.5, 0.0, 0.3]]
    box = box_from_points(corners, margin=0.02, frame="fr3_link0")
    assert box.min == pytest.approx((0.32, -0.28, 0.04)) and box.max == pytest.approx((0.73, 0.28, 0.53))
    assert box.recorded_min == pytest.approx((0.30, -0.30, 0.02)) and box.points == 5 and box.source == "corners"
    assert box.contains([0.5, 0.0, 0.3]) and not box.contains([0.5, 0.0, 0.03])
    assert np.allclose(box.clip([1.0, 0.0, 0.0]), [0.73, 0.0, 0.04])
    path = write_workspace_box(tmp_path / "config" / "workspace.yaml", box)
    data = yaml.safe_load(path.read_text())
    assert set(data) >= {"frame", "min", "max", "margin", "date"} and data["frame"] == "fr3_link0"
    assert load_workspace_box(path) == box


@pytest.mark.parametrize("low, high, margin, message", [
    ([0.3, -0.3, 0.02], [0.75, 0.3, 0.05], 0.02, r"z: the box is 0.030 m wide.*at a low and a high point"),
    ([0.3, -0.3, 0.02], [0.2, 0.3, 0.5], 0.0, r"x: max \(0.200 m\) must be greater than min \(0.300 m\)"),
    ([300, -300, 20], [750, 300, 500], 0.0, r"beyond any arm's reach .* not millimetres"),
    ([0.3, float("nan"), 0.0], [0.7, 0.3, 0.5], 0.0, "NaN or inf"),
    ([0.3, -0.3, 0.0], [0.7, 0.3, 0.5], -0.01, "margin must be >= 0"),
])
def test_bad_limits_are_clear_errors(low, high, margin, message):
    with pytest.raises(CalibrationError, match=message):
        box_from_limits(low, high, margin, "fr3_link0")


def test_one_corner_is_not_a_box():
    with pytest.raises(CalibrationError, match="need at least 2 recorded corners"):
        box_from_points([[0.4, 0.0, 0.2]], 0.02, "fr3_link0")


def test_a_bad_file_names_the_key(tmp_path):
    path = tmp_path / "workspace.yaml"
    path.write_text("frame: fr3_link0\nmin: [0.3, -0.3]\nmax: [0.7, 0.3, 0.5]\nmargin: 0.0\n")
    with pytest.raises(CalibrationError, match=r"workspace.yaml: min"):
        load_workspace_box(path)
