"""irevla.rotations: the conventions the whole stack relies on, against hand-computed values, plus round trips."""

import numpy as np
import pytest

from irevla.errors import UserError
from irevla.rotations import (
    Pose,
    PoseError,
    ee_rotation_feature,
    matrix_angle,
    matrix_to_quaternion,
    matrix_to_rotvec,
    normalize_quaternion,
    proprio_from_pose,
    quaternion_angle,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_to_matrix,
    quaternion_to_rotvec,
    rotate_towards,
    rotvec_to_matrix,
    rotvec_to_quaternion,
    wxyz_to_xyzw,
    xyzw_to_wxyz,
)

H = np.sqrt(0.5)
# 90 degrees about z, written out by hand: x -> y, y -> -x.
RZ90_MATRIX = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
RZ90_QUATERNION = np.array([0.0, 0.0, H, H])  # x y z w: the scalar is last
RZ90_ROTVEC = np.array([0.0, 0.0, np.pi / 2])
# 180 degrees about x: the robot's home orientation (gripper pointing down).
RX180_MATRIX = np.diag([1.0, -1.0, -1.0])


def _rot(axis, angle):
    """Rodrigues' formula, independent of the module under test."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_quaternions_are_x_y_z_w_against_hand_computed_values():
    np.testing.assert_allclose(quaternion_to_matrix(RZ90_QUATERNION), RZ90_MATRIX, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quaternion(RZ90_MATRIX), RZ90_QUATERNION, atol=1e-12)
    np.testing.assert_allclose(rotvec_to_quaternion(RZ90_ROTVEC), RZ90_QUATERNION, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_rotvec(RZ90_QUATERNION), RZ90_ROTVEC, atol=1e-12)
    np.testing.assert_allclose(rotvec_to_matrix(RZ90_ROTVEC), RZ90_MATRIX, atol=1e-12)
    np.testing.assert_allclose(matrix_to_rotvec(RZ90_MATRIX), RZ90_ROTVEC, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quaternion(RX180_MATRIX), [1.0, 0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix([1.0, 0.0, 0.0, 0.0]), RX180_MATRIX, atol=1e-12)


def test_mujoco_order_is_w_x_y_z():
    np.testing.assert_allclose(xyzw_to_wxyz(RZ90_QUATERNION), [H, 0.0, 0.0, H])
    np.testing.assert_allclose(wxyz_to_xyzw([1.0, 0.0, 0.0, 0.0]), [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(wxyz_to_xyzw(xyzw_to_wxyz([0.1, 0.2, 0.3, 0.4])), [0.1, 0.2, 0.3, 0.4])


def test_product_applies_the_right_factor_first():
    rx90 = rotvec_to_quaternion([np.pi / 2, 0, 0])
    # a * b applies b, then a: Rz90 * Rx90 maps y -> z (by Rx) -> z (Rz leaves z)
    product = quaternion_to_matrix(quaternion_multiply(RZ90_QUATERNION, rx90))
    np.testing.assert_allclose(product @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(product, RZ90_MATRIX @ quaternion_to_matrix(rx90), atol=1e-12)
    np.testing.assert_allclose(quaternion_multiply(RZ90_QUATERNION, quaternion_conjugate(RZ90_QUATERNION)),
                               [0, 0, 0, 1], atol=1e-12)


def test_rotation_vectors_have_angle_in_0_pi_and_quaternions_w_nonnegative():
    q = rotvec_to_quaternion([0.0, 0.0, 1.5 * np.pi])  # 270 degrees = -90 degrees the short way
    assert q[3] >= 0
    np.testing.assert_allclose(quaternion_to_rotvec(q), [0, 0, -np.pi / 2], atol=1e-12)
    np.testing.assert_allclose(quaternion_to_rotvec(-RZ90_QUATERNION), RZ90_ROTVEC, atol=1e-12)  # q and -q alike
    np.testing.assert_allclose(normalize_quaternion(-2 * RZ90_QUATERNION), RZ90_QUATERNION, atol=1e-12)


def test_round_trips_on_random_rotations():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = normalize_quaternion(rng.normal(size=4))
        matrix = quaternion_to_matrix(q)
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(matrix_to_quaternion(matrix), q, atol=1e-12)
        np.testing.assert_allclose(rotvec_to_quaternion(quaternion_to_rotvec(q)), q, atol=1e-12)
        rotvec = matrix_to_rotvec(matrix)
        assert np.linalg.norm(rotvec) <= np.pi + 1e-12
        np.testing.assert_allclose(rotvec_to_matrix(rotvec), matrix, atol=1e-12)
        np.testing.assert_allclose(_rot(rotvec, np.linalg.norm(rotvec)), matrix, atol=1e-12)


def test_angles_between_rotations():
    assert quaternion_angle([0, 0, 0, 1], RZ90_QUATERNION) == pytest.approx(np.pi / 2)
    assert quaternion_angle(RZ90_QUATERNION, -RZ90_QUATERNION) == pytest.approx(0.0, abs=1e-7)
    assert matrix_angle(np.eye(3), RX180_MATRIX) == pytest.approx(np.pi)
    assert matrix_angle(RZ90_MATRIX, RZ90_MATRIX @ _rot([0, 1, 0], 0.25)) == pytest.approx(0.25)


def test_rotate_towards_caps_the_step_along_the_shortest_path():
    start = np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(rotate_towards(start, RZ90_QUATERNION, 2.0), RZ90_QUATERNION)  # within reach
    step = rotate_towards(start, RZ90_QUATERNION, 0.5)
    np.testing.assert_allclose(quaternion_to_rotvec(step), [0, 0, 0.5], atol=1e-12)
    # from a turned start the step is taken in the base frame
    turned = rotvec_to_quaternion([np.pi / 2, 0, 0])
    goal = quaternion_multiply(RZ90_QUATERNION, turned)
    np.testing.assert_allclose(quaternion_to_matrix(rotate_towards(turned, goal, 0.5)),
                               _rot([0, 0, 1], 0.5) @ quaternion_to_matrix(turned), atol=1e-12)


def test_bad_quaternions_raise_a_user_error_naming_the_field():
    with pytest.raises(PoseError, match="target: non-finite"):
        normalize_quaternion([0, 0, np.nan, 1], "target")
    with pytest.raises(PoseError, match=r"norm 0.000 \(zero length\)"):
        normalize_quaternion([0, 0, 0, 0])
    with pytest.raises(PoseError, match="expected 4 values"):
        normalize_quaternion([0, 0, 1])
    with pytest.raises(PoseError, match="norm 2.000"):
        normalize_quaternion([0, 0, 0, 2], tolerance=0.1)
    assert issubclass(PoseError, UserError) and issubclass(PoseError, ValueError)


def test_pose_matrix_and_proprio():
    pose = Pose([0.45, 0.0, 0.35], [1.0, 0.0, 0.0, 0.0])
    expected = np.eye(4)
    expected[:3, :3], expected[:3, 3] = RX180_MATRIX, [0.45, 0.0, 0.35]
    np.testing.assert_allclose(pose.matrix(), expected, atol=1e-12)
    again = Pose.from_matrix(pose.matrix())
    assert again.distance_to(pose) == pytest.approx((0.0, 0.0), abs=1e-7)
    proprio = proprio_from_pose(pose, 0.08)
    assert proprio.dtype == np.float32 and proprio.shape == (7,)
    np.testing.assert_allclose(proprio, [0.45, 0, 0.35, np.pi, 0, 0, 0.08], atol=1e-6)


def test_rotation_feature_is_zero_at_home_and_continuous_where_plain_axis_angle_flips():
    for axis, angle in [([1, 0, 0], 0.3), ([0, 1, 1], 2.0), ([1, 2, 3], np.pi - 1e-6), ([0, 1, 0], np.pi),
                        ([0, 0, 1], 1e-8)]:
        rotvec = matrix_to_rotvec(_rot(axis, angle))
        assert np.linalg.norm(rotvec) == pytest.approx(angle, abs=1e-6)
        if angle > 1e-6:
            np.testing.assert_allclose(_rot(rotvec, np.linalg.norm(rotvec)), _rot(axis, angle), atol=1e-5)
    home = _rot([1, 0, 0], np.pi)  # gripper pointing down: pi away from the base frame
    feature = ee_rotation_feature(home, home)
    assert feature.dtype == np.float32
    np.testing.assert_allclose(feature, 0.0, atol=1e-7)
    # Wobbling around home: plain axis-angle jumps by ~2 pi in norm, the feature stays small and smooth.
    wobble = [_rot([1, 0, 0], a) @ home for a in (-0.05, 0.05)]
    plain = [matrix_to_rotvec(m) for m in wobble]
    feature = [ee_rotation_feature(m, home) for m in wobble]
    assert np.linalg.norm(plain[0] - plain[1]) > 3.0
    np.testing.assert_allclose(feature, [[-0.05, 0, 0], [0.05, 0, 0]], atol=1e-6)
    # A base-frame turn about z after leaving home reads as a rotation about base z.
    np.testing.assert_allclose(ee_rotation_feature(_rot([0, 0, 1], 0.3) @ home, home), [0, 0, 0.3], atol=1e-6)


def test_conversions_work_while_another_thread_is_half_way_through_importing_torch():
    # The policy imports torch on a worker thread; scipy's dispatch must not look at the half-imported module then.
    code = ("import sys, types; import irevla.rotations as r; sys.modules['torch'] = types.ModuleType('torch'); "
            "print(r.quaternion_to_rotvec([1.0, 0.0, 0.0, 0.0]), r.matrix_to_quaternion(r.rotvec_to_matrix([0, 0, 1])))")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
