"""The head file: the action head's parameters as float32 safetensors with a JSON description (no torch, no jax).

Both sides of the torch/JAX boundary read and write it -- the VLA checkpoint (``head.safetensors`` inside a policy
directory, via `irevla.policy.checkpoint.save_head` / `load_head`) and the stage-1 learner process, which must not
pay for importing torch and transformers just to read its starting head. Names are ``VLAPolicy.head_state()``'s
(docs/policy.md); the safetensors header holds one key, ``irevla``, with sorted JSON
``{"format": "irevla-head", "version": 1, "head": {...}}`` (one key: a multi-key header is written in no fixed order,
which would change the file's hash, and the checkpoint id, for the same weights).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from irevla.atomic_io import atomic_write_bytes
from irevla.errors import MissingFileError, UserError

# The exploration std the learner publishes beside the head's tensors (not a head tensor: the actor keeps it apart).
LOG_STD_NAME = "exploration.log_std"
HEAD_FORMAT = "irevla-head"
HEAD_VERSION = 1


class HeadFileError(UserError, ValueError):
    """A head file is unreadable, of another format, or holds NaN/inf (the message names the file)."""


def head_file_bytes(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None) -> bytes:
    from safetensors.numpy import save

    header = {"irevla": json.dumps({"format": HEAD_FORMAT, "version": HEAD_VERSION, "head": dict(metadata or {})},
                                   sort_keys=True)}
    return save({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in arrays.items()},
                metadata=header)


def save_head_arrays(path: str | Path, arrays: Mapping[str, np.ndarray],
                     metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a head file crash-safely (heads are a few MB: serialised in memory, written in one go)."""
    return atomic_write_bytes(path, head_file_bytes(arrays, metadata))


def load_head_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, metadata) of a head file; checks the format, the version and that every value is finite."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: head file not found")
    try:
        with safe_open(str(path), framework="np") as handle:
            header = handle.metadata() or {}
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise HeadFileError(f"{path}: not a readable safetensors file: {exc}") from None
    try:
        description = json.loads(header.get("irevla", "{}"))
    except json.JSONDecodeError as exc:
        raise HeadFileError(f"{path}: metadata 'irevla' is not valid JSON: {exc}") from None
    if not isinstance(description, dict) or description.get("format") != HEAD_FORMAT:
        found = description.get("format") if isinstance(description, dict) else description
        raise HeadFileError(f"{path}: metadata 'format': expected {HEAD_FORMAT!r}, got {found!r}")
    if description.get("version") != HEAD_VERSION:
        raise HeadFileError(f"{path}: metadata 'version': expected {HEAD_VERSION}, got "
                            f"{description.get('version')!r}")
    for name, value in arrays.items():
        if not np.isfinite(value).all():
            raise HeadFileError(f"{path}: tensor {name!r} contains NaN/inf")
    return arrays, dict(description.get("head") or {})
