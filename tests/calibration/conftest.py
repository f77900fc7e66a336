"""Shared synthetic calibration data: sample folders recorded through the real collection loop from a simulated rig.

Building them takes a few seconds, so they are made once per test session and copied where a test damages them.
Noise (see `irevla.calibration.synthetic.SimulatedRig`): corners ~0.45 px RMS (0.3 px per axis plus detection
error), robot pose 0.3 mm and 0.06 deg per axis (0.52 mm / 0.10 deg as 3-D RMS).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from irevla.calibration.board import CharucoBoardConfig
from irevla.calibration.collect import collect_hand_eye_samples
from irevla.calibration.samples import HandEyeSession, SampleStore
from irevla.calibration.synthetic import SimulatedRig

# A fixed camera ~0.8 m away wants a bigger board: A3 with 50 mm squares (as docs/calibration.md recommends).
FIXED_CAMERA_BOARD = CharucoBoardConfig(square_length=0.05, marker_length=0.037)


@dataclass
class RecordedSession:
    directory: Path
    rig: SimulatedRig
    names: list[str]


def record_session(directory: Path, mode: str, count: int, board: CharucoBoardConfig, seed: int) -> RecordedSession:
    rig = SimulatedRig(mode, board, seed=seed)
    store = SampleStore.create(directory, HandEyeSession(mode=mode, name="test", board=board,
                                                         intrinsics=rig.intrinsics, camera_serial="sim-0001"))
    presses = iter([""] * count + ["q"])

    def read_line(prompt: str) -> str:
        answer = next(presses)
        if answer == "":
            rig.advance()  # the "user" moves the arm before pressing Enter
        return answer

    names = collect_hand_eye_samples(store, rig.pose_source(), rig.image_source(), count, read_line,
                                     say=lambda text: None)
    assert len(names) == count
    return RecordedSession(directory, rig, names)


@pytest.fixture(scope="session")
def eye_in_hand_session(tmp_path_factory: pytest.TempPathFactory) -> RecordedSession:
    return record_session(tmp_path_factory.mktemp("eye_in_hand"), "eye-in-hand", 16, CharucoBoardConfig(), seed=0)


@pytest.fixture(scope="session")
def eye_on_base_session(tmp_path_factory: pytest.TempPathFactory) -> RecordedSession:
    return record_session(tmp_path_factory.mktemp("eye_on_base"), "eye-on-base", 20, FIXED_CAMERA_BOARD, seed=0)


@pytest.fixture
def damaged_copy(tmp_path: Path, eye_in_hand_session: RecordedSession):
    """A fresh copy of the eye-in-hand samples that a test may break."""

    def make() -> Path:
        target = tmp_path / "samples"
        shutil.copytree(eye_in_hand_session.directory, target)
        return target

    return make
