"""A success detector on frozen VLM features: a small MLP, its threshold and decision rule, and its file format.

Directory layout (format ``irevla-success-detector``, version 1)::

    <dir>/detector.safetensors   the MLP, the principal components of the pooled hidden states and the
                                 standardisation of its inputs (float32)
    <dir>/detector.json          settings: the VLM fingerprint it was trained on (`irevla.reward.features`), the
                                 inputs (latent, proprio), the context, the decision threshold chosen for a target precision, the
                                 number of consecutive frames that must agree, validation figures, and the sha256
                                 of detector.safetensors

Decision rule (`SuccessDetector.decide`): an episode is declared a success at the first frame t >= 1 at which the
last ``confirm_frames`` frames all scored >= ``threshold``. Training picks the threshold on the validation split
for the target precision (`irevla.reward.train`).

Every problem raises `DetectorError` naming the file and field; using a detector with another VLM than the one it
was trained on is one of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from irevla.errors import MissingFileError, UserError

FORMAT = "irevla-success-detector"
VERSION = 1
WEIGHTS = "detector.safetensors"
SETTINGS = "detector.json"


class DetectorError(UserError, ValueError):
    """A detector cannot be trained, loaded or used as asked (the message names the file, field or data)."""


class DetectorNet(nn.Module):
    """Per-frame inputs -> one logit.

    Buffers: the principal components of the pooled hidden states (``latent_mean``, ``latent_basis``; empty when the
    detector reads no latent or keeps it whole) and the standardisation of the stacked vector (``feature_mean``,
    ``feature_std``). `SuccessDetector.frame_vectors` applies the projection; `forward` takes the stacked vector."""

    def __init__(self, features: int, hidden: int, latent_size: int = 0, latent_dims: int = 0) -> None:
        super().__init__()
        self.register_buffer("latent_mean", torch.zeros(latent_size if latent_dims else 0))
        self.register_buffer("latent_basis", torch.zeros(latent_size if latent_dims else 0, latent_dims))
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp((features - self.feature_mean) / self.feature_std).squeeze(-1)


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


class SuccessDetector:
    """A trained detector: `probabilities` of frames, `decide` on an episode, `save` / `load`."""

    def __init__(self, net: DetectorNet, settings: Mapping[str, Any]) -> None:
        self.net = net.eval()
        self.settings = dict(settings)

    # ---------------------------------------------------------------------------------------------- settings
    @property
    def threshold(self) -> float:
        return float(self.settings["threshold"])

    @property
    def confirm_frames(self) -> int:
        return int(self.settings["confirm_frames"])

    @property
    def context(self) -> int:
        return int(self.settings["features"]["context"])

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.settings["features"]["inputs"])

    @property
    def vlm(self) -> str:
        return str(self.settings["vlm"])

    def check_vlm(self, fingerprint: str, policy: str | Path = "the policy", where: str | Path = "") -> None:
        """Refuse a policy whose VLM is not the one this detector was trained on."""
        if fingerprint != self.vlm:
            raise DetectorError(
                f"{where or 'the detector'}: field 'vlm': trained on VLM {self.vlm}, but {policy} has VLM "
                f"{fingerprint}: its features mean something else to this detector; train one on this policy "
                f"(irevla reward train --policy {policy} ...)")

    # ------------------------------------------------------------------------------------------------- scoring
    def frame_vectors(self, latent: np.ndarray | None, proprio: np.ndarray | None) -> np.ndarray:
        """(N, 2 d) pooled hidden states and (N, P) proprio -> (N, F) per-frame vectors (before the context)."""
        parts = []
        features = self.settings["features"]
        for name, values, size in (("latent", latent, features["latent_size"]),
                                   ("proprio", proprio, features["proprio_size"])):
            if name not in self.inputs:
                continue
            if values is None:
                raise DetectorError(f"the detector reads {list(self.inputs)}: give the frame's {name}")
            values = np.asarray(values, np.float32)
            values = values.reshape(1, -1) if values.ndim == 1 else values
            if values.shape[1] != size:
                raise DetectorError(f"detector {name}: expected {size} values per frame, got {values.shape[1]} (a "
                                    f"policy with another {'VLM' if name == 'latent' else 'proprio layout'}?)")
            if name == "latent" and self.net.latent_basis.shape[1]:
                values = (values - self.net.latent_mean.numpy()) @ self.net.latent_basis.numpy()
            parts.append(values)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def episode_features(self, latent: np.ndarray | None, proprio: np.ndarray | None) -> np.ndarray:
        """The stacked inputs of every frame of one episode."""
        from irevla.reward.features import with_context

        return with_context(self.frame_vectors(latent, proprio), self.context)

    @torch.inference_mode()
    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, F) stacked inputs (`episode_features`) -> (N,) probabilities of success."""
        features = np.asarray(features, np.float32)
        expected = self.net.feature_mean.shape[0]
        if features.ndim != 2 or features.shape[1] != expected:
            raise DetectorError(f"detector features: expected shape (N, {expected}), got {features.shape}")
        return torch.sigmoid(self.net(torch.from_numpy(features))).numpy().astype(np.float64)

    def decide(self, probabilities: np.ndarray) -> int | None:
        """The frame at which the rule declares success (>= 1), or None."""
        run = 0
        for t, p in enumerate(np.asarray(probabilities)):
            run = run + 1 if p >= self.threshold else 0
            if t >= 1 and run >= self.confirm_frames:
                return t
        return None

    # ------------------------------------------------------------------------------------------------------ io
    def save(self, directory: str | Path) -> Path:
        """Write the detector into `directory` (replaced as a whole, atomically)."""
        import shutil

        from irevla.atomic_io import atomic_write_text, fsync_file, new_temp_directory, replace_directory

        directory = Path(directory)
        temp = new_temp_directory(directory)
        try:
            save_file({name: t.contiguous() for name, t in self.net.state_dict().items()}, str(temp / WEIGHTS),
                      metadata={"format": FORMAT})
            fsync_file(temp / WEIGHTS)
            settings = {**self.settings, "format": FORMAT, "version": VERSION, "weights_sha256": _sha256(temp / WEIGHTS)}
            atomic_write_text(temp / SETTINGS, json.dumps(settings, indent=1))
            replace_directory(temp, directory)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        self.settings = settings
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> SuccessDetector:
        directory = Path(directory)
        if not directory.is_dir():
            raise MissingFileError(f"{directory}: success detector directory not found")
        settings_path, weights_path = directory / SETTINGS, directory / WEIGHTS
        if not settings_path.is_file():
            raise DetectorError(f"{settings_path}: missing; {directory} is not a success detector (irevla reward "
                                f"train writes one)")
        try:
            settings = json.loads(settings_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DetectorError(f"{settings_path}: not valid JSON: {exc}") from None
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise DetectorError(f"{settings_path}: field 'format': expected {FORMAT!r}, got "
                                f"{settings.get('format') if isinstance(settings, dict) else settings!r}")
        if settings.get("version") != VERSION:
            raise DetectorError(f"{settings_path}: field 'version': expected {VERSION}, got {settings.get('version')!r}")
        for field in ("vlm", "threshold", "confirm_frames", "features", "hidden", "weights_sha256"):
            if field not in settings:
                raise DetectorError(f"{settings_path}: missing field {field!r}")
        features = settings["features"]
        for field in ("inputs", "latent_size", "latent_dims", "proprio_size", "context", "dim"):
            if not isinstance(features, dict) or field not in features:
                raise DetectorError(f"{settings_path}: field 'features' has no {field!r}")
        if not features["inputs"] or set(features["inputs"]) - {"latent", "proprio"}:
            raise DetectorError(f"{settings_path}: field 'features.inputs': expected a non-empty subset of "
                                f"['latent', 'proprio'], got {features['inputs']!r}")
        threshold = settings["threshold"]
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise DetectorError(f"{settings_path}: field 'threshold': expected a number in [0, 1], got {threshold!r}")
        if not isinstance(settings["confirm_frames"], int) or settings["confirm_frames"] < 1:
            raise DetectorError(f"{settings_path}: field 'confirm_frames': expected an int >= 1, got "
                                f"{settings['confirm_frames']!r}")
        if not weights_path.is_file():
            raise DetectorError(f"{weights_path}: missing (listed by {settings_path})")
        if _sha256(weights_path) != settings["weights_sha256"]:
            raise DetectorError(f"{weights_path}: content hash does not match {SETTINGS} field 'weights_sha256': the "
                                f"file is corrupt or was replaced")
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError) as exc:
            raise DetectorError(f"{weights_path}: not a readable safetensors file: {exc}") from None
        dim = int(features["dim"])
        net = DetectorNet(dim, int(settings["hidden"]), int(features["latent_size"]), int(features["latent_dims"]))
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise DetectorError(f"{weights_path}: tensors do not match the settings in {SETTINGS} "
                                f"(features {dim}, hidden {settings['hidden']}): {exc}") from None
        detector = cls(net, settings)
        detector.directory = directory
        return detector


class EpisodeScorer:
    """Scores an episode frame by frame as it runs (the reward sources' side of the detector): keeps the last
    ``context`` frames' vectors for the stacked input and the run of frames above the threshold."""

    def __init__(self, detector: SuccessDetector) -> None:
        self.detector = detector
        self.reset()

    def reset(self) -> None:
        self.history: list[np.ndarray] = []
        self.probabilities: list[float] = []
        self.run = 0

    def add(self, latent: np.ndarray | None, proprio: np.ndarray | None) -> float:
        """Score the next frame (its pooled hidden states (2 d,) and proprio (P,)); returns its probability."""
        from irevla.reward.features import with_context

        self.history.append(self.detector.frame_vectors(latent, proprio)[0])
        context = self.detector.context
        window = np.stack(self.history[-(context + 1):])
        if len(window) < context + 1:  # the first frames: frame 0 stands in for the missing past, as in training
            window = np.concatenate([np.repeat(window[:1], context + 1 - len(window), axis=0), window])
        p = float(self.detector.probabilities(with_context(window, context)[-1:])[0])
        self.probabilities.append(p)
        self.run = self.run + 1 if p >= self.detector.threshold else 0
        del self.history[:-(context + 1)]
        return p

    @property
    def fired(self) -> bool:
        """The decision rule holds at the last frame added (never at frame 0)."""
        return len(self.probabilities) >= 2 and self.run >= self.detector.confirm_frames
