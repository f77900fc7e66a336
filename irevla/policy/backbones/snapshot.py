"""A local model snapshot, checked before transformers reads it: every problem is an error that names the file.

A snapshot is the directory the model hub's ``snapshot_download`` (or ``hf download``) leaves, or what
``save_pretrained`` writes::

    config.json                          the model's transformers config (``model_type`` says its family)
    model.safetensors                    the weights in one file, or
    model.safetensors.index.json         ... an index whose ``weight_map`` names the shards
    model-00001-of-00002.safetensors     ... and the shards
    tokenizer.json / tokenizer.model     the tokenizer (with tokenizer_config.json, special_tokens_map.json)
    preprocessor_config.json             optional: the image mean / std the model was trained with

irevla never downloads: a hub name where a directory is expected is an error that says so. Weights load from
safetensors only (a pickle-based ``pytorch_model.bin`` is refused, with the command that converts it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irevla.errors import MissingFileError, UserError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")


class SnapshotError(UserError):
    """A local model snapshot is incomplete, of the wrong family, or does not fit its own config."""


@dataclass(frozen=True)
class Snapshot:
    """A checked snapshot directory: its parsed config.json and its weight files (one, or the index's shards)."""

    path: Path
    config: dict[str, Any]
    weight_files: tuple[Path, ...]
    index_file: Path | None

    def locate(self, model_key: str, shape: tuple[int, ...]) -> Path | None:
        """The weight file holding the tensor transformers calls `model_key`, of `shape` as stored. Checkpoints may
        use an older key layout (Qwen's ``model.layers.0...`` for ``model.language_model.layers.0...``), so the
        tensor is found by the longest run of trailing name parts in common, among tensors of that shape."""
        from safetensors import safe_open

        wanted = model_key.split(".")
        best, best_score = None, 0
        for path in self.weight_files:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    if tuple(handle.get_slice(key).get_shape()) != tuple(shape):
                        continue
                    parts, score = key.split("."), 0
                    while score < min(len(parts), len(wanted)) and parts[-1 - score] == wanted[-1 - score]:
                        score += 1
                    if score > best_score:
                        best, best_score = path, score
        return best


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SnapshotError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_snapshot(directory: str | Path, kind: str, model_types: tuple[str, ...]) -> Snapshot:
    """Check `directory` is a complete local snapshot of a `kind` model (config.json's ``model_type`` one of
    `model_types`); see the module docstring for the layout."""
    path = Path(directory)
    if not path.is_dir():
        raise MissingFileError(f"{path}: backbone.pretrained must be a local model directory (config.json, "
                               f"*.safetensors, tokenizer files); irevla never downloads models -- download the "
                               f"snapshot first (e.g. `hf download <repo> --local-dir {path}`)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise MissingFileError(f"{config_file}: missing (backbone.pretrained must be a local model directory with "
                               f"config.json and *.safetensors; irevla never downloads models)")
    config = read_json(config_file)
    model_type = config.get("model_type")
    if model_type not in model_types:
        raise SnapshotError(f"{config_file}: field 'model_type': backbone.kind {kind!r} expects "
                            f"{' or '.join(repr(t) for t in model_types)}, the snapshot is {model_type!r} "
                            f"(set backbone.kind to the snapshot's family)")

    index_file = path / INDEX_FILE
    if index_file.is_file():
        index = read_json(index_file)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise SnapshotError(f"{index_file}: field 'weight_map': expected a non-empty mapping of tensor names "
                                f"to shard files")
        shards = sorted(set(weight_map.values()))
        missing = [shard for shard in shards if not (path / shard).is_file()]
        if missing:
            raise MissingFileError(f"{path / missing[0]}: missing ({len(missing)} of the {len(shards)} shards "
                                   f"{index_file.name} names are absent: an interrupted download?)")
        weight_files = tuple(path / shard for shard in shards)
    elif (path / SINGLE_FILE).is_file():
        index_file, weight_files = None, (path / SINGLE_FILE,)
    else:
        legacy = sorted(p.name for p in path.glob("*.bin"))
        hint = (f"; it has {legacy[0]} (pickle), which irevla does not load: convert it with "
                f"`python -c \"from transformers import AutoModelForImageTextToText as M; "
                f"M.from_pretrained('{path}').save_pretrained('{path}-safetensors')\"` on a trusted machine"
                if legacy else "")
        raise MissingFileError(f"{path / SINGLE_FILE}: missing (a snapshot needs {SINGLE_FILE} or {INDEX_FILE} "
                               f"and its shards){hint}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise MissingFileError(f"{path / TOKENIZER_FILES[0]}: missing (the snapshot needs its tokenizer: one of "
                               f"{', '.join(TOKENIZER_FILES)})")
    return Snapshot(path, config, weight_files, index_file)


def check_loading_info(snapshot: Snapshot, info: dict[str, Any]) -> None:
    """Turn transformers' loading report into an error naming the file: weights the model expects but the snapshot
    lacks (they would be left random), and weights of a shape the config does not describe."""
    mismatched = sorted(info.get("mismatched_keys") or [], key=str)
    if mismatched:
        name, stored, expected = _mismatch_fields(mismatched[0])
        where = snapshot.locate(name, stored) or snapshot.path
        raise SnapshotError(f"{where}: tensor {name!r} has shape {stored}, config.json describes {expected} "
                            f"({len(mismatched)} tensor(s) differ: weights and config.json are from different "
                            f"models?)")
    missing = [key for key in info.get("missing_keys") or [] if not key.startswith("lm_head.")]
    if missing:
        raise SnapshotError(f"{snapshot.index_file or snapshot.weight_files[0]}: {len(missing)} weight(s) the "
                            f"model needs are not in the snapshot, e.g. {sorted(missing)[:3]} (an incomplete or "
                            f"mixed download?)")


def _mismatch_fields(entry: Any) -> tuple[str, tuple, tuple]:
    """transformers reports a mismatch as (name, stored shape, model shape)."""
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        name, stored, expected = entry
        return str(name), tuple(stored), tuple(expected)
    return str(entry), (), ()
