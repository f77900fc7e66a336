"""ChArUco intrinsic calibration for cameras without trustworthy factory intrinsics.

Detect the board in every image, run `cv2.calibrateCameraExtended`, and drop outlier images one at a time (the worst
first, since one bad view inflates everyone's error): an image is an outlier when its reprojection RMS exceeds both
`outlier_floor_px` and `outlier_factor` x the median. Every image gets a line in the report: used, rejected (with
its error) or skipped (board not found).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from irevla.calibration.board import BoardDetection, CharucoBoardConfig, CharucoDetector
from irevla.calibration.camera_model import CameraIntrinsics
from irevla.calibration.errors import CalibrationError, CalibrationWarning

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# With fewer corners a view adds little and its pose is ill-conditioned.
MIN_CORNERS_PER_IMAGE = 8


@dataclass(frozen=True)
class ImageReport:
    name: str
    status: str  # "used", "rejected" or "skipped"
    rms_px: float | None = None
    corners: int = 0
    reason: str = ""


@dataclass(frozen=True)
class IntrinsicsCalibration:
    intrinsics: CameraIntrinsics
    rms_px: float
    images: tuple[ImageReport, ...]
    warnings: list[str] = field(default_factory=list)

    @property
    def used(self) -> list[str]:
        return [r.name for r in self.images if r.status == "used"]

    @property
    def rejected(self) -> list[str]:
        return [r.name for r in self.images if r.status == "rejected"]

    def report_dict(self) -> dict:
        return {"rms_px": round(self.rms_px, 4), "used": len(self.used), "rejected": self.rejected,
                "skipped": [r.name for r in self.images if r.status == "skipped"],
                "per_image": [{"name": r.name, "status": r.status, "corners": r.corners,
                               "rms_px": None if r.rms_px is None else round(r.rms_px, 4),
                               **({"reason": r.reason} if r.reason else {})} for r in self.images]}


def load_images(directory: str | Path) -> list[tuple[str, np.ndarray]]:
    """(file name, RGB image) for every image file in `directory`, sorted; unreadable files are errors."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CalibrationError(f"{directory}: image folder not found")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CalibrationError(f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationError(f"{path}: not a readable image (corrupt file?)")
        images.append((path.name, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
    return images


def calibrate_intrinsics(images: Sequence[tuple[str, np.ndarray]], board_config: CharucoBoardConfig,
                         stream: str = "color", min_images: int = 8, outlier_factor: float = 3.0,
                         outlier_floor_px: float = 1.0, estimate_k3: bool = False) -> IntrinsicsCalibration:
    """Calibrate from named RGB images of the board. Raises CalibrationError when too few images are usable."""
    if not images:
        raise CalibrationError("no images given")
    detector = CharucoDetector(board_config)
    size = images[0][1].shape[:2]
    reports: dict[str, ImageReport] = {}
    detections: dict[str, BoardDetection] = {}
    notes: list[str] = []
    for name, image in images:
        if image.shape[:2] != size:
            raise CalibrationError(f"{name}: image is {image.shape[1]}x{image.shape[0]}, the first image "
                                   f"({images[0][0]}) is {size[1]}x{size[0]}; all images must share one resolution")
        detection = detector.detect(image)
        if detection is None or detection.count < MIN_CORNERS_PER_IMAGE:
            count = 0 if detection is None else detection.count
            reason = ("board not found" if detection is None
                      else f"only {count} corners (need {MIN_CORNERS_PER_IMAGE})")
            reports[name] = ImageReport(name, "skipped", corners=count, reason=reason)
            notes.append(f"{name}: {reason}; image skipped")
            continue
        detections[name] = detection
    if len(detections) < min_images:
        raise CalibrationError(f"too few usable images: {len(detections)} of {len(images)} show the board "
                               f"(need {min_images}); skipped: {', '.join(n for n in reports) or 'none'}")

    flags = 0 if estimate_k3 else cv2.CALIB_FIX_K3
    used = list(detections)
    while True:
        rms, camera_matrix, distortion, per_view = _calibrate([detections[n] for n in used], size, flags)
        median = float(np.median(per_view))
        worst = int(np.argmax(per_view))
        if per_view[worst] <= max(outlier_floor_px, outlier_factor * median) or len(used) <= min_images:
            if per_view[worst] > max(outlier_floor_px, outlier_factor * median):
                notes.append(f"{used[worst]} still looks like an outlier ({per_view[worst]:.2f} px) but removing it "
                             f"would leave fewer than {min_images} images")
            break
        name = used.pop(worst)
        reports[name] = ImageReport(name, "rejected", rms_px=float(per_view[worst]),
                                    corners=detections[name].count,
                                    reason=f"reprojection RMS {per_view[worst]:.2f} px vs median {median:.2f} px")
        notes.append(f"{name}: rejected as an outlier (reprojection RMS {per_view[worst]:.2f} px, median "
                     f"{median:.2f} px)")
    for name, error in zip(used, per_view):
        reports[name] = ImageReport(name, "used", rms_px=float(error), corners=detections[name].count)
    for note in notes:
        warnings.warn(note, CalibrationWarning, stacklevel=2)
    intrinsics = CameraIntrinsics(stream=stream, width=size[1], height=size[0], fx=float(camera_matrix[0, 0]),
                                  fy=float(camera_matrix[1, 1]), cx=float(camera_matrix[0, 2]),
                                  cy=float(camera_matrix[1, 2]), distortion_model="plumb_bob",
                                  distortion_coefficients=tuple(float(v) for v in distortion.reshape(-1)[:5]))
    return IntrinsicsCalibration(intrinsics=intrinsics, rms_px=float(rms),
                                 images=tuple(reports[name] for name, _ in images), warnings=notes)


def _calibrate(detections: list[BoardDetection], size: tuple[int, int],
               flags: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    object_points = [d.object_points.reshape(-1, 1, 3) for d in detections]
    image_points = [d.image_points.reshape(-1, 1, 2) for d in detections]
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-9)
    try:
        rms, camera_matrix, distortion, _, _, _, _, per_view = cv2.calibrateCameraExtended(
            object_points, image_points, (size[1], size[0]), None, None, flags=flags, criteria=criteria)
    except cv2.error as exc:
        raise CalibrationError(f"cv2.calibrateCamera failed: {str(exc).strip().splitlines()[-1]}") from None
    if not np.all(np.isfinite(camera_matrix)) or camera_matrix[0, 0] <= 0:
        raise CalibrationError("calibration diverged (non-finite focal length); use more varied board views")
    return float(rms), camera_matrix, distortion, per_view.reshape(-1)
