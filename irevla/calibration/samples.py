"""Hand-eye samples on disk: one folder per session, so any solve can be repeated offline.

Layout::

    DIR/session.yaml        mode, board, camera intrinsics, frame names, camera serial, date
    DIR/sample_000.png      the camera image (lossless)
    DIR/sample_000.json     the robot pose T_base_gripper (translation + quaternion xyzw) and time stamps

Each file is written atomically; the JSON is written after its PNG, so a capture interrupted half-way leaves a PNG
without JSON, which loading reports by name. No pickle: images are PNG, everything else is text.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from irevla.atomic_io import (
    atomic_write_bytes,
    atomic_write_text,
    atomic_write_yaml,
)
from irevla.calibration.board import CharucoBoardConfig
from irevla.calibration.camera_model import CameraIntrinsics, now_iso
from irevla.calibration.config import FramesConfig, NoiseConfig
from irevla.calibration.errors import CalibrationError, CalibrationWarning
from irevla.calibration.transforms import (
    from_translation_quaternion,
    to_translation_quaternion,
)
from irevla.config import ConfigError, ConfigModel, load_config, validate_config

SESSION_FILE = "session.yaml"
SESSION_FORMAT = "irevla-handeye-session/1"
SAMPLE_FORMAT = "irevla-handeye-sample/1"
SAMPLE_NAME = re.compile(r"^sample_(\d{3,})$")


class HandEyeSession(ConfigModel):
    """What a sample folder was recorded with; a later offline solve needs all of it."""

    format: Literal["irevla-handeye-session/1"] = SESSION_FORMAT
    mode: Literal["eye-in-hand", "eye-on-base"]
    name: str = Field(default="", description="calibration name, e.g. wrist_camera")
    board: CharucoBoardConfig
    intrinsics: CameraIntrinsics
    frames: FramesConfig = FramesConfig()
    noise: NoiseConfig = NoiseConfig()
    camera_serial: str = ""
    created: str = ""


class SampleRecord(ConfigModel):
    format: Literal["irevla-handeye-sample/1"] = SAMPLE_FORMAT
    image: str
    translation: tuple[float, float, float] = Field(description="T_base_gripper translation, metres")
    quaternion_xyzw: tuple[float, float, float, float]
    stamp: float = Field(default=0.0, description="robot pose time stamp, seconds")
    image_stamp: float = 0.0


@dataclass(frozen=True)
class StoredSample:
    name: str
    image: np.ndarray  # RGB uint8
    T_base_gripper: np.ndarray


class SampleStore:
    """Reads and writes one session folder."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @classmethod
    def create(cls, directory: str | Path, session: HandEyeSession) -> SampleStore:
        """Start a session, or continue one with the same mode, board and camera (new samples are appended)."""
        store = cls(directory)
        path = store.directory / SESSION_FILE
        if path.exists():
            existing = store.session()
            same = (existing.mode == session.mode and existing.board == session.board
                    and existing.intrinsics == session.intrinsics)
            if not same:
                raise CalibrationError(f"{path}: this folder already holds a {existing.mode} session with a different "
                                       "board or camera; use a new folder (or delete it)")
            return store
        if not session.created:
            session = session.model_copy(update={"created": now_iso()})
        atomic_write_yaml(path, session.model_dump(mode="json"))
        return store

    def session(self) -> HandEyeSession:
        path = self.directory / SESSION_FILE
        if not self.directory.is_dir():
            raise CalibrationError(f"{self.directory}: sample folder not found")
        if not path.is_file():
            raise CalibrationError(f"{path}: missing; is {self.directory} a folder written by "
                                   "`irevla calibrate handeye`?")
        try:
            return load_config(path, HandEyeSession)
        except ConfigError as exc:
            raise CalibrationError(str(exc)) from None

    def sample_names(self) -> list[str]:
        stems = {p.stem for pattern in ("sample_*.json", "sample_*.png") for p in self.directory.glob(pattern)}
        return sorted((s for s in stems if SAMPLE_NAME.match(s)), key=lambda s: int(SAMPLE_NAME.match(s).group(1)))

    def add(self, image_rgb: np.ndarray, T_base_gripper: np.ndarray, stamp: float = 0.0,
            image_stamp: float = 0.0) -> str:
        names = self.sample_names()
        index = int(SAMPLE_NAME.match(names[-1]).group(1)) + 1 if names else 0
        name = f"sample_{index:03d}"
        ok, png = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise CalibrationError(f"{name}: could not encode the image as PNG")
        translation, quaternion = to_translation_quaternion(T_base_gripper)
        record = SampleRecord(image=f"{name}.png", translation=tuple(translation), quaternion_xyzw=tuple(quaternion),
                              stamp=float(stamp), image_stamp=float(image_stamp))
        atomic_write_bytes(self.directory / f"{name}.png", png.tobytes())
        atomic_write_text(self.directory / f"{name}.json", json.dumps(record.model_dump(mode="json"), indent=2))
        return name

    def remove(self, name: str) -> None:
        # JSON first: without it the sample no longer counts even if removing the PNG fails.
        (self.directory / f"{name}.json").unlink(missing_ok=True)
        (self.directory / f"{name}.png").unlink(missing_ok=True)

    def load(self, skip_bad: bool = False) -> list[StoredSample]:
        """Every sample, validated. A bad one is an error naming its file, or with `skip_bad` a warning + skip."""
        session = self.session()
        samples = []
        for name in self.sample_names():
            try:
                samples.append(self._load_one(name, session))
            except CalibrationError as exc:
                if not skip_bad:
                    raise
                warnings.warn(f"skipping {exc}", CalibrationWarning, stacklevel=2)
        return samples

    def _load_one(self, name: str, session: HandEyeSession) -> StoredSample:
        json_path, png_path = self.directory / f"{name}.json", self.directory / f"{name}.png"
        if not json_path.is_file():
            raise CalibrationError(f"{png_path}: image without {json_path.name} (mismatched sample files: an "
                                   "interrupted capture?); delete it or restore the pose file")
        try:
            data = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"{json_path}: corrupt sample, not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise CalibrationError(f"{json_path}: corrupt sample, expected a JSON object")
        try:
            record = validate_config(data, SampleRecord, str(json_path))
        except ConfigError as exc:
            raise CalibrationError(f"corrupt sample: {exc}") from None
        image_path = self.directory / record.image
        if not image_path.is_file():
            raise CalibrationError(f"{json_path}: its image {record.image} is missing (mismatched sample files)")
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationError(f"{image_path}: corrupt sample, not a readable image")
        expected = (session.intrinsics.height, session.intrinsics.width)
        if image.shape[:2] != expected:
            raise CalibrationError(f"{image_path}: image is {image.shape[1]}x{image.shape[0]}, the session's camera "
                                   f"intrinsics are for {expected[1]}x{expected[0]}")
        pose = from_translation_quaternion(record.translation, record.quaternion_xyzw, name=str(json_path))
        return StoredSample(name=name, image=cv2.cvtColor(image, cv2.COLOR_BGR2RGB), T_base_gripper=pose)
