"""Joint refinement of a hand-eye transform against the detected board corners (a small bundle adjustment).

OpenCV's closed-form hand-eye methods treat every robot pose and every solvePnP board pose as exact and weigh
rotation and translation errors arbitrarily. Here the unknowns are estimated the way the data was produced:

- parameters: the hand-eye transform X, the pose F of the board in the frame it is fixed to (base for eye-in-hand,
  gripper for eye-on-base), and a small correction d_i of every recorded robot pose;
- residuals: pixel error of every detected ChArUco corner / sigma_pixel, and each correction d_i / its expected size
  (robot pose noise: sigma_translation, sigma_rotation) as a Gaussian prior.

This is the maximum-a-posteriori estimate under those noise models. It starts from the best closed-form solution,
so it only has to polish. The corrections it needs per sample are also a diagnostic: a sample whose robot pose must
move far more than the robot's noise to fit the image is named as suspicious.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix
from scipy.spatial.transform import Rotation

from irevla.calibration.board import BoardDetection
from irevla.calibration.camera_model import CameraIntrinsics
from irevla.calibration.errors import CalibrationError
from irevla.calibration.transforms import invert, make_transform


@dataclass(frozen=True)
class NoiseModel:
    """Expected measurement noise (one standard deviation per axis); sets how much each source is trusted."""

    pixel_px: float = 0.5
    robot_translation_mm: float = 0.5
    robot_rotation_deg: float = 0.1


DEFAULT_NOISE = NoiseModel()


@dataclass(frozen=True)
class RefinedHandEye:
    transform: np.ndarray  # T_gripper_cam (eye-in-hand) or T_base_cam (eye-on-base)
    fixed_board_pose: np.ndarray
    reprojection_rms_px: tuple[float, ...]  # per sample
    robot_correction_mm: tuple[float, ...]  # per sample, size of the fitted robot pose correction
    robot_correction_deg: tuple[float, ...]
    iterations: int


def refine_hand_eye(mode: str, initial_transform: np.ndarray, initial_board_pose: np.ndarray,
                    robot_poses: Sequence[np.ndarray], detections: Sequence[BoardDetection],
                    intrinsics: CameraIntrinsics, noise: NoiseModel = DEFAULT_NOISE) -> RefinedHandEye:
    """MAP refinement; `robot_poses` are ``T_base_gripper``, `detections` the corners seen in each sample."""
    if len(robot_poses) != len(detections):
        raise CalibrationError(f"mismatched sample counts: {len(robot_poses)} robot poses, {len(detections)} "
                               "detections")
    camera_matrix, distortion = intrinsics.camera_matrix, intrinsics.opencv_distortion
    count = len(robot_poses)
    object_points = [d.object_points.astype(np.float64) for d in detections]
    image_points = [d.image_points.astype(np.float64) for d in detections]
    sigma_translation = noise.robot_translation_mm / 1000.0
    sigma_rotation = np.radians(noise.robot_rotation_deg)

    def corrected_motion(index: int, correction: np.ndarray) -> np.ndarray:
        # The correction acts in the gripper frame: T_base_gripper @ exp(d).
        T_base_gripper = robot_poses[index] @ make_transform(Rotation.from_rotvec(correction[:3]), correction[3:])
        return T_base_gripper if mode == "eye-in-hand" else invert(T_base_gripper)

    def residuals(params: np.ndarray) -> np.ndarray:
        camera_from_motion = invert(_unpack(params[:6]))
        board_in_fixed = _unpack(params[6:12])
        corrections = params[12:].reshape(count, 6)
        parts = []
        for i in range(count):
            T_cam_board = camera_from_motion @ invert(corrected_motion(i, corrections[i])) @ board_in_fixed
            rvec = Rotation.from_matrix(T_cam_board[:3, :3]).as_rotvec()
            projected, _ = cv2.projectPoints(object_points[i], rvec, T_cam_board[:3, 3], camera_matrix, distortion)
            parts.append(((projected.reshape(-1, 2) - image_points[i]) / noise.pixel_px).ravel())
        parts.append((corrections[:, :3] / sigma_rotation).ravel())
        parts.append((corrections[:, 3:] / sigma_translation).ravel())
        return np.concatenate(parts)

    # Sample i's pixels depend on X, F and d_i only; telling the solver makes finite differences ~count x cheaper.
    rows = sum(2 * len(p) for p in object_points) + 6 * count
    sparsity = lil_matrix((rows, 12 + 6 * count), dtype=int)
    row = 0
    for i, points in enumerate(object_points):
        sparsity[row:row + 2 * len(points), :12] = 1
        sparsity[row:row + 2 * len(points), 12 + 6 * i:18 + 6 * i] = 1
        row += 2 * len(points)
    for i in range(count):
        for k in range(3):
            sparsity[row + 3 * i + k, 12 + 6 * i + k] = 1
            sparsity[row + 3 * count + 3 * i + k, 12 + 6 * i + 3 + k] = 1

    start = np.concatenate([_pack(initial_transform), _pack(initial_board_pose), np.zeros(6 * count)])
    result = least_squares(residuals, start, jac_sparsity=sparsity, method="trf", x_scale="jac", max_nfev=200)
    if not np.all(np.isfinite(result.x)):
        raise CalibrationError(f"hand-eye refinement diverged: {result.message}")
    transform, board_pose = _unpack(result.x[:6]), _unpack(result.x[6:12])
    corrections = result.x[12:].reshape(count, 6)
    pixel_residuals = result.fun[:rows - 6 * count] * noise.pixel_px
    per_sample_rms, start_row = [], 0
    for points in object_points:
        chunk = pixel_residuals[start_row:start_row + 2 * len(points)].reshape(-1, 2)
        per_sample_rms.append(float(np.sqrt(np.mean(np.sum(chunk ** 2, axis=1)))))
        start_row += 2 * len(points)
    return RefinedHandEye(
        transform=transform, fixed_board_pose=board_pose, reprojection_rms_px=tuple(per_sample_rms),
        robot_correction_mm=tuple(float(v) for v in 1000.0 * np.linalg.norm(corrections[:, 3:], axis=1)),
        robot_correction_deg=tuple(float(v) for v in np.degrees(np.linalg.norm(corrections[:, :3], axis=1))),
        iterations=int(result.nfev))


def _pack(transform: np.ndarray) -> np.ndarray:
    return np.concatenate([Rotation.from_matrix(transform[:3, :3]).as_rotvec(), transform[:3, 3]])


def _unpack(vector: np.ndarray) -> np.ndarray:
    return make_transform(Rotation.from_rotvec(vector[:3]), vector[3:6])
