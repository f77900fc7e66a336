"""The ChArUco calibration target: its description, detection in an image, and its pose from solvePnP.

The board frame is OpenCV's: origin at the outer corner of the top-left square, x along the squares_x direction,
y along squares_y, z into the board (so a camera facing the printed side sees z pointing away from it).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field, model_validator

from irevla.calibration.errors import CalibrationError
from irevla.calibration.transforms import from_rvec_tvec
from irevla.config import ConfigModel

# Fewer corners than this give a pose that is too sensitive to one bad corner to be worth keeping.
MIN_CORNERS_FOR_POSE = 6


class CharucoBoardConfig(ConfigModel):
    """A printed ChArUco board. Measure the printed square with a caliper: printers scale."""

    squares_x: int = Field(default=7, ge=3, description="chessboard squares along x (columns)")
    squares_y: int = Field(default=5, ge=3, description="chessboard squares along y (rows)")
    square_length: float = Field(default=0.035, gt=0, description="side of one chessboard square, metres")
    marker_length: float = Field(default=0.026, gt=0, description="side of one ArUco marker, metres")
    dictionary: str = Field(default="DICT_5X5_100", description="cv2.aruco predefined dictionary name")
    legacy_pattern: bool = Field(default=False, description="boards made by OpenCV < 4.6 with an even row count")

    @model_validator(mode="after")
    def _check(self) -> CharucoBoardConfig:
        if self.marker_length >= self.square_length:
            raise ValueError(f"marker_length ({self.marker_length}) must be smaller than square_length "
                             f"({self.square_length})")
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_5X5_100, DICT_4X4_50)")
        markers_needed = (self.squares_x * self.squares_y) // 2
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        if dictionary.bytesList.shape[0] < markers_needed:
            raise ValueError(f"dictionary {self.dictionary} has {dictionary.bytesList.shape[0]} markers, the board "
                             f"needs {markers_needed}")
        return self

    def build(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        board = cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_length, self.marker_length,
                                       dictionary)
        board.setLegacyPattern(self.legacy_pattern)
        return board

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_length, self.squares_y * self.square_length

    @property
    def corner_count(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)


@dataclass(frozen=True)
class BoardDetection:
    """ChArUco corners found in one image: ids, pixel positions and the matching board-frame 3-D points."""

    corner_ids: np.ndarray  # int[N]
    image_points: np.ndarray  # float32[N, 2]
    object_points: np.ndarray  # float32[N, 3], board frame, metres

    @property
    def count(self) -> int:
        return int(self.corner_ids.shape[0])


class CharucoDetector:
    """Find ChArUco corners; one instance per board (the OpenCV detector is reused across images)."""

    def __init__(self, board_config: CharucoBoardConfig):
        self.board_config = board_config
        self.board = board_config.build()
        self._detector = cv2.aruco.CharucoDetector(self.board)

    def detect(self, image: np.ndarray) -> BoardDetection | None:
        """Corners in `image` (gray, RGB or BGR; colour order does not matter), or None when fewer than 4 are seen."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        corners, ids, _, _ = self._detector.detectBoard(gray)
        if ids is None or len(ids) < 4:
            return None
        object_points, image_points = self.board.matchImagePoints(corners, ids)
        image_points = self._refine(gray, image_points.reshape(-1, 2).astype(np.float32))
        return BoardDetection(corner_ids=ids.reshape(-1).astype(int), image_points=image_points,
                              object_points=object_points.reshape(-1, 3).astype(np.float32))

    def _refine(self, gray: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Sub-pixel refinement with a window that stays clear of the neighbouring markers.

        OpenCV's own ChArUco refinement leaves ~0.15 px of error on clean synthetic images; a window sized to the
        white gap between a chessboard corner and the nearest marker brings that to ~0.05 px.
        """
        if points.shape[0] < 2:
            return points
        distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
        np.fill_diagonal(distances, np.inf)
        square_px = float(np.median(distances.min(axis=1)))
        config = self.board_config
        gap_px = square_px * (config.square_length - config.marker_length) / (2.0 * config.square_length)
        half_window = int(np.clip(round(0.6 * gap_px), 2, 8))
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 50, 1e-3)
        refined = cv2.cornerSubPix(gray, points.reshape(-1, 1, 2).copy(), (half_window, half_window), (-1, -1),
                                   criteria).reshape(-1, 2)
        # A corner that wandered more than a pixel latched onto something else; keep OpenCV's estimate there.
        moved_too_far = np.linalg.norm(refined - points, axis=1) > 1.0
        refined[moved_too_far] = points[moved_too_far]
        return refined.astype(np.float32)


@dataclass(frozen=True)
class BoardPose:
    """Pose of the board in the camera frame (``T_cam_board``) and how well it explains the corners."""

    T_cam_board: np.ndarray
    reprojection_rms_px: float
    corner_count: int


def estimate_board_pose(detection: BoardDetection, camera_matrix: np.ndarray, distortion: np.ndarray,
                        name: str = "image") -> BoardPose:
    """solvePnP on the detected corners: IPPE (made for planar targets) then Levenberg-Marquardt refinement."""
    if detection.count < MIN_CORNERS_FOR_POSE:
        raise CalibrationError(f"{name}: only {detection.count} ChArUco corners found, need at least "
                               f"{MIN_CORNERS_FOR_POSE} for a reliable board pose (move closer or improve lighting)")
    object_points = detection.object_points.astype(np.float64)
    image_points = detection.image_points.astype(np.float64)
    camera_matrix = np.asarray(camera_matrix, dtype=np.float64)
    distortion = np.asarray(distortion, dtype=np.float64)
    found, rvec, tvec = cv2.solvePnP(object_points, image_points, camera_matrix, distortion,
                                     flags=cv2.SOLVEPNP_IPPE)
    if not found:
        raise CalibrationError(f"{name}: solvePnP failed on {detection.count} corners")
    rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, camera_matrix, distortion, rvec, tvec)
    projected, _ = cv2.projectPoints(object_points, rvec, tvec, camera_matrix, distortion)
    rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - image_points) ** 2, axis=1))))
    T_cam_board = from_rvec_tvec(rvec, tvec)
    if T_cam_board[2, 3] <= 0:
        raise CalibrationError(f"{name}: board pose puts the board behind the camera (z = {T_cam_board[2, 3]:.3f} m)")
    return BoardPose(T_cam_board=T_cam_board, reprojection_rms_px=rms, corner_count=detection.count)


def render_printable_board(board_config: CharucoBoardConfig, dots_per_inch: int = 300,
                           margin_m: float = 0.01) -> np.ndarray:
    """Board image at `dots_per_inch` with a white margin, for printing at 100 % scale."""
    pixels_per_metre = dots_per_inch / 0.0254
    width_m, height_m = board_config.size_m
    margin_px = round(margin_m * pixels_per_metre)
    size = (round(width_m * pixels_per_metre) + 2 * margin_px, round(height_m * pixels_per_metre) + 2 * margin_px)
    return board_config.build().generateImage(size, marginSize=margin_px, borderBits=1)
