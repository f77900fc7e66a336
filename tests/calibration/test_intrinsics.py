"""ChArUco intrinsic calibration on rendered images with known intrinsics, outlier rejection, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml
from scipy.spatial.transform import Rotation

from irevla.calibration.board import CharucoBoardConfig
from irevla.calibration.camera_model import load_intrinsics
from irevla.calibration.cli import main
from irevla.calibration.errors import CalibrationError, CalibrationWarning
from irevla.calibration.intrinsics import calibrate_intrinsics
from irevla.calibration.synthetic import DEFAULT_INTRINSICS, BoardRenderer
from irevla.calibration.transforms import make_transform

BOARD = CharucoBoardConfig()
TRUTH = DEFAULT_INTRINSICS
# An image from a different camera setting (zoom/resolution) slipped into the folder: it cannot fit the others.
OUTLIER_CAMERA = TRUTH.model_copy(update={"fx": TRUTH.fx * 1.15, "fy": TRUTH.fy * 1.15,
                                          "distortion_coefficients": (-0.35, 0.1, 0.0, 0.0, 0.0)})


def random_view(renderer: BoardRenderer, rng: np.random.Generator) -> np.ndarray:
    """A board pose, tilted up to 40 deg, anywhere in the picture, fully visible."""
    width, height = BOARD.size_m
    while True:
        rotation = Rotation.from_euler("xyz", [rng.uniform(-40, 40), rng.uniform(-40, 40), rng.uniform(-30, 30)],
                                       degrees=True)
        depth = rng.uniform(0.28, 0.5)
        u, v = rng.uniform(0.25, 0.75) * TRUTH.width, rng.uniform(0.25, 0.75) * TRUTH.height
        centre = depth * np.array([(u - TRUTH.cx) / TRUTH.fx, (v - TRUTH.cy) / TRUTH.fy, 1.0])
        T_cam_board = make_transform(rotation, centre - rotation.as_matrix() @ np.array([width / 2, height / 2, 0]))
        corners = renderer.project_corners(T_cam_board)
        if (np.all(corners > 5) and np.all(corners[:, 0] < TRUTH.width - 5)
                and np.all(corners[:, 1] < TRUTH.height - 5)):
            return T_cam_board


@pytest.fixture(scope="module")
def images() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    renderer, other_camera = BoardRenderer(BOARD, TRUTH), BoardRenderer(BOARD, OUTLIER_CAMERA)

    def render(r: BoardRenderer) -> np.ndarray:
        return r.render(random_view(r, rng), rng, pixel_noise_px=0.3, blur_sigma_px=0.7, intensity_noise=2.0)

    views = [(f"view_{i:02d}.png", render(renderer)) for i in range(14)]
    return views + [("other_camera.png", render(other_camera)), ("no_board.png", np.full((480, 640, 3), 90, np.uint8))]


def test_recovers_focal_length_within_one_percent_and_rejects_the_outlier(images):
    with pytest.warns(CalibrationWarning) as caught:
        calibration = calibrate_intrinsics(images, BOARD)
    found = calibration.intrinsics
    fx_error, fy_error = 100 * abs(found.fx / TRUTH.fx - 1), 100 * abs(found.fy / TRUTH.fy - 1)
    print(f"fx {found.fx:.2f} ({fx_error:.2f} %), fy {found.fy:.2f} ({fy_error:.2f} %), cx {found.cx:.1f}, "
          f"cy {found.cy:.1f}, k1 k2 {found.distortion_coefficients[:2]}, rms {calibration.rms_px:.3f} px")
    assert fx_error < 1.0 and fy_error < 1.0
    assert abs(found.cx - TRUTH.cx) < 10 and abs(found.cy - TRUTH.cy) < 10
    assert calibration.rejected == ["other_camera.png"]
    statuses = {r.name: r.status for r in calibration.images}
    assert statuses["no_board.png"] == "skipped" and statuses["view_00.png"] == "used"
    assert all(r.rms_px is not None for r in calibration.images if r.status != "skipped")
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("no_board.png: board not found") for m in messages)
    assert any(m.startswith("other_camera.png: rejected as an outlier") for m in messages)


def test_too_few_images_is_an_error(images):
    with pytest.raises(CalibrationError, match=r"too few usable images: 3 of 4 .* skipped: no_board.png"):
        calibrate_intrinsics(images[:3] + images[-1:], BOARD)


def test_images_of_different_sizes_are_an_error(images):
    small = ("small.png", cv2.resize(images[0][1], (320, 240)))
    with pytest.raises(CalibrationError, match=r"small.png: image is 320x240, the first image \(view_00.png\)"):
        calibrate_intrinsics(images[:9] + [small], BOARD)


def test_cli_writes_intrinsics_and_camera_info(images, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in images:
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out, camera_info = tmp_path / "intrinsics.yaml", tmp_path / "camera_info.yaml"
    assert main(["calibrate", "intrinsics", "--images", str(folder), "--out", str(out),
                 "--camera-info-out", str(camera_info), "--camera-name", "side"]) == 0
    printed = capsys.readouterr()
    assert "other_camera.png" in printed.out and "rejected" in printed.out
    loaded = load_intrinsics(out)
    assert abs(loaded.fx / TRUTH.fx - 1) < 0.01
    report = yaml.safe_load(out.read_text())["calibration_report"]
    assert report["rejected"] == ["other_camera.png"] and report["skipped"] == ["no_board.png"]
    info = yaml.safe_load(camera_info.read_text())
    assert info["camera_name"] == "side" and info["image_width"] == 640
    assert info["camera_matrix"]["data"][0] == pytest.approx(loaded.fx)


def test_cli_writes_nothing_on_bad_input(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "intrinsics.yaml"
    assert main(["calibrate", "intrinsics", "--images", str(folder), "--out", str(out)]) == 2
    assert "broken.png: not a readable image" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [folder]
