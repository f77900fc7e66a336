"""Synthetic ChArUco scenes with known ground truth: images of the board seen by a known camera at a known pose.

Used by the tests and by ``--simulate`` dry runs of the CLI. Each camera pixel is traced back through the lens model
(undistortion) to a ray, intersected with the board plane and looked up in the board texture (`board.generateImage`),
at 2x supersampling. Realistic imperfections are optional: a smooth random displacement field that moves
each corner by about `pixel_noise_px` independently (what detection noise looks like), blur and sensor noise.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from irevla.calibration.board import CharucoBoardConfig
from irevla.calibration.camera_model import CameraIntrinsics
from irevla.calibration.sources import CapturedImage, StampedPose
from irevla.calibration.transforms import invert, make_transform

BACKGROUND_GRAY = 70


class BoardRenderer:
    """Renders RGB uint8 images of one board through one camera. Construction caches the lens rays (the slow part)."""

    def __init__(self, board_config: CharucoBoardConfig, intrinsics: CameraIntrinsics, supersample: int = 2,
                 texture_px_per_square: int = 80):
        self.board_config = board_config
        self.intrinsics = intrinsics
        self.supersample = supersample
        # A one-square white paper margin around the pattern, as on a printed board.
        self._margin_px = texture_px_per_square
        size = (board_config.squares_x * texture_px_per_square + 2 * self._margin_px,
                board_config.squares_y * texture_px_per_square + 2 * self._margin_px)
        self._texture = board_config.build().generateImage(size, marginSize=self._margin_px, borderBits=1)
        self._pixels_per_metre = texture_px_per_square / board_config.square_length
        width, height = intrinsics.width * supersample, intrinsics.height * supersample
        # Sub-pixel centres of the supersampled grid, in original-pixel coordinates.
        us = (np.arange(width) + 0.5) / supersample - 0.5
        vs = (np.arange(height) + 0.5) / supersample - 0.5
        grid = np.stack(np.meshgrid(us, vs), axis=-1).reshape(-1, 1, 2)
        normalized = cv2.undistortPointsIter(grid, intrinsics.camera_matrix, intrinsics.opencv_distortion, None, None,
                                             (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-9))
        self._rays = normalized.reshape(height, width, 2).astype(np.float64)

    def render(self, T_cam_board: np.ndarray, rng: np.random.Generator | None = None, pixel_noise_px: float = 0.0,
               noise_cell_px: int = 10, blur_sigma_px: float = 0.0, intensity_noise: float = 0.0) -> np.ndarray:
        rays = self._rays
        height, width = rays.shape[:2]
        if pixel_noise_px > 0:
            rng = rng or np.random.default_rng()
            rays = rays + self._displacement(rng, pixel_noise_px, noise_cell_px, (height, width))
        # Ray (x, y, 1) meets the board plane where (X, Y, 1) ~ H^-1 (x, y, 1), H = [r1 r2 t] of T_cam_board.
        homography = np.column_stack([T_cam_board[:3, 0], T_cam_board[:3, 1], T_cam_board[:3, 3]])
        inverse = np.linalg.inv(homography)
        x, y = rays[..., 0], rays[..., 1]
        board_h = inverse[:, 0, None, None] * x + inverse[:, 1, None, None] * y + inverse[:, 2, None, None]
        depth_scale = board_h[2]
        in_front = depth_scale > 1e-9
        safe = np.where(in_front, depth_scale, 1.0)
        board_x, board_y = board_h[0] / safe, board_h[1] / safe
        map_x = (board_x * self._pixels_per_metre + self._margin_px - 0.5).astype(np.float32)
        map_y = (board_y * self._pixels_per_metre + self._margin_px - 0.5).astype(np.float32)
        map_x[~in_front] = -1e6
        supersampled = cv2.remap(self._texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=BACKGROUND_GRAY)
        image = cv2.resize(supersampled, (self.intrinsics.width, self.intrinsics.height),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        if blur_sigma_px > 0:
            image = cv2.GaussianBlur(image, (0, 0), blur_sigma_px)
        if intensity_noise > 0:
            rng = rng or np.random.default_rng()
            image = image + rng.normal(0.0, intensity_noise, image.shape)
        gray = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)

    def _displacement(self, rng: np.random.Generator, sigma_px: float, cell_px: int,
                      shape: tuple[int, int]) -> np.ndarray:
        """Smooth random shift of the image content, in normalized-ray units, ~`sigma_px` per corner."""
        height, width = shape
        cells = (max(2, height // (cell_px * self.supersample) + 2), max(2, width // (cell_px * self.supersample) + 2))
        coarse = rng.normal(0.0, 1.0, (cells[0], cells[1], 2)).astype(np.float32)
        field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float64)
        # Cubic upsampling changes the spread of white noise; rescale so each axis has std `sigma_px`.
        field *= sigma_px / field.reshape(-1, 2).std(axis=0)
        field[..., 0] /= self.intrinsics.fx
        field[..., 1] /= self.intrinsics.fy
        return field

    def project_corners(self, T_cam_board: np.ndarray) -> np.ndarray:
        """True pixel positions of all chessboard corners (ids in order), for measuring detection error."""
        corners = self.board_config.build().getChessboardCorners().astype(np.float64)
        rvec, _ = cv2.Rodrigues(T_cam_board[:3, :3])
        projected, _ = cv2.projectPoints(corners, rvec, T_cam_board[:3, 3], self.intrinsics.camera_matrix,
                                         self.intrinsics.opencv_distortion)
        return projected.reshape(-1, 2)


def look_at(camera_position: np.ndarray, target: np.ndarray, up_hint: tuple[float, float, float] = (0.0, 0.0, 1.0),
            roll_deg: float = 0.0) -> np.ndarray:
    """``T_world_cam`` of an optical-frame camera (z forward, x right, y down) at `camera_position` facing `target`."""
    forward = np.asarray(target, float) - np.asarray(camera_position, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up_hint, dtype=float))
    if np.linalg.norm(right) < 1e-6:
        right = np.cross(forward, np.array([1.0, 0.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.column_stack([right, down, forward])
    roll = np.radians(roll_deg)
    about_z = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    transform = np.eye(4)
    transform[:3, :3] = rotation @ about_z
    transform[:3, 3] = camera_position
    return transform


def camera_to_board(T_world_cam: np.ndarray, T_world_board: np.ndarray) -> np.ndarray:
    return invert(T_world_cam) @ T_world_board


# ------------------------------------------------------------------------------------------- simulated rig
DEFAULT_INTRINSICS = CameraIntrinsics(width=640, height=480, fx=612.0, fy=610.0, cx=322.0, cy=238.5,
                                      distortion_coefficients=(0.08, -0.15, 0.001, -0.0008, 0.0))


class SimulatedRig:
    """A Franka-like scene with known ground truth for either hand-eye mode; `advance()` moves the arm.

    eye-in-hand: board lying on the table in front of the robot, camera on the gripper looking down at it from
    0.3-0.5 m. eye-on-base: camera on a stand ~0.8 m from the workspace, board on the gripper turned towards it.
    Robot pose readings carry Gaussian noise (per axis), images the renderer's pixel noise, blur and sensor noise.
    """

    def __init__(self, mode: str, board_config: CharucoBoardConfig | None = None,
                 intrinsics: CameraIntrinsics = DEFAULT_INTRINSICS, seed: int = 0, pixel_noise_px: float = 0.3,
                 robot_translation_noise_mm: float = 0.3, robot_rotation_noise_deg: float = 0.06):
        if mode not in ("eye-in-hand", "eye-on-base"):
            raise ValueError(f"mode must be eye-in-hand or eye-on-base, got {mode!r}")
        self.mode = mode
        self.board_config = board_config or CharucoBoardConfig()
        self.intrinsics = intrinsics
        self.rng = np.random.default_rng(seed)
        self.renderer = BoardRenderer(self.board_config, intrinsics)
        self.pixel_noise_px = pixel_noise_px
        self.robot_translation_noise_m = robot_translation_noise_mm / 1000.0
        self.robot_rotation_noise_rad = np.radians(robot_rotation_noise_deg)
        width, height = self.board_config.size_m
        if mode == "eye-in-hand":
            # Printed side up: board z (into the board) points down into the table.
            self.T_base_board = make_transform(np.diag([1.0, -1.0, -1.0]), [0.40, 0.12, 0.0])
            # Wrist camera behind and beside the TCP, looking roughly along the gripper's z axis.
            self.T_gripper_cam = make_transform(Rotation.from_euler("zyx", [90, 8, -5], degrees=True),
                                                [0.07, 0.01, -0.08])
            self.true_hand_eye = self.T_gripper_cam
        else:
            self.T_base_cam = look_at(np.array([1.15, 0.25, 0.60]), np.array([0.50, 0.0, 0.25]))
            # Board plate on the hand, centred on the gripper axis, printed side facing away from the fingers.
            board_rotation = Rotation.from_euler("xyz", [180, 0, 90], degrees=True).as_matrix()
            board_origin = -board_rotation @ np.array([width / 2, height / 2, 0.0]) + np.array([0.0, 0.0, 0.02])
            self.T_gripper_board = make_transform(board_rotation, board_origin)
            self.true_hand_eye = self.T_base_cam
        self.T_base_gripper = np.eye(4)
        self.T_cam_board = np.eye(4)
        self._reading = np.eye(4)
        self.advance()

    def advance(self) -> None:
        """Move to a new random pose from which the camera sees the whole board."""
        for _ in range(1000):
            T_base_gripper, T_cam_board = (self._eye_in_hand_pose() if self.mode == "eye-in-hand"
                                           else self._eye_on_base_pose())
            if self._board_fully_visible(T_cam_board):
                break
        else:  # pragma: no cover - the scenes above always find a view within a few tries
            raise RuntimeError("could not find a pose with the board in view")
        self.T_base_gripper, self.T_cam_board = T_base_gripper, T_cam_board
        noise = make_transform(Rotation.from_rotvec(self.rng.normal(0.0, self.robot_rotation_noise_rad, 3)),
                           self.rng.normal(0.0, self.robot_translation_noise_m, 3))
        # The reading stays the same until the next move, as a robot standing still reports (up to its noise).
        self._reading = T_base_gripper @ noise

    def robot_pose_reading(self) -> np.ndarray:
        return self._reading.copy()

    def image(self) -> np.ndarray:
        return self.renderer.render(self.T_cam_board, self.rng, pixel_noise_px=self.pixel_noise_px,
                                    blur_sigma_px=0.7, intensity_noise=2.0)

    def pose_source(self) -> SimulatedPoseSource:
        return SimulatedPoseSource(self)

    def image_source(self) -> SimulatedImageSource:
        return SimulatedImageSource(self)

    def _eye_in_hand_pose(self) -> tuple[np.ndarray, np.ndarray]:
        center = self.T_base_board[:3, :3] @ np.array([*self.board_config.size_m, 0.0]) / 2 + self.T_base_board[:3, 3]
        distance = self.rng.uniform(0.30, 0.50)
        elevation = np.radians(self.rng.uniform(55, 90))
        azimuth = self.rng.uniform(0, 2 * np.pi)
        position = center + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                                 np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        T_base_cam = look_at(position, center + self.rng.normal(0, 0.02, 3), up_hint=(1.0, 0.0, 0.0),
                             roll_deg=self.rng.uniform(-45, 45))
        return T_base_cam @ invert(self.T_gripper_cam), invert(T_base_cam) @ self.T_base_board

    def _eye_on_base_pose(self) -> tuple[np.ndarray, np.ndarray]:
        center = np.array([0.5, 0.0, 0.3]) + self.rng.uniform(-0.15, 0.15, 3)
        view = center - self.T_base_cam[:3, 3]
        view /= np.linalg.norm(view)
        T_base_center = look_at(center, center + view, roll_deg=self.rng.uniform(-40, 40))
        tilt = Rotation.from_rotvec(np.radians(self.rng.uniform(-35, 35, 3)) * np.array([1.0, 1.0, 0.0]))
        T_base_center[:3, :3] = T_base_center[:3, :3] @ tilt.as_matrix()
        width, height = self.board_config.size_m
        T_base_board = T_base_center @ make_transform(np.eye(3), [-width / 2, -height / 2, 0.0])
        return T_base_board @ invert(self.T_gripper_board), invert(self.T_base_cam) @ T_base_board

    def _board_fully_visible(self, T_cam_board: np.ndarray) -> bool:
        if T_cam_board[2, 3] <= 0.1:
            return False
        corners = self.renderer.project_corners(T_cam_board)
        margin = 10
        return bool(np.all(corners[:, 0] > margin) and np.all(corners[:, 0] < self.intrinsics.width - margin)
                    and np.all(corners[:, 1] > margin) and np.all(corners[:, 1] < self.intrinsics.height - margin))


class SimulatedPoseSource:
    def __init__(self, rig: SimulatedRig):
        self.rig = rig

    def current_pose(self) -> StampedPose:
        return StampedPose(self.rig.robot_pose_reading(), time.time())

    def close(self) -> None:
        pass


class SimulatedImageSource:
    serial = "simulated"

    def __init__(self, rig: SimulatedRig):
        self.rig = rig

    def capture(self) -> CapturedImage:
        return CapturedImage(self.rig.image(), time.time())

    def intrinsics(self) -> CameraIntrinsics:
        return self.rig.intrinsics

    def close(self) -> None:
        pass
