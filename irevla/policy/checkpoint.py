"""Policy checkpoints: a directory of safetensors weights, JSON settings and statistics, verified by content hash.

Layout (format ``irevla-policy``, version 1)::

    <dir>/policy.json            what to rebuild: PolicyConfig, the backbone's transformers config, ActionSpec,
                                 ObservationSpec, cameras, LoRA layers, where the backbone's base weights are,
                                 the sha256 of every other file and the checkpoint id; plus free-form ``info``
    <dir>/head.safetensors       the action head (float32, documented names; also readable on its own, see
                                 `load_head`: it is what the RL learner reads and writes)
    <dir>/backbone.safetensors   backbone tensors: all of them (``base_weights: included``) or, when the base
                                 weights are an unmodified local pretrained model, only the LoRA adapters
                                 (``base_weights: pretrained``; the model directory is recorded with a fingerprint)
    <dir>/stats.json             the DatasetStats the normaliser was built from (irevla.data.stats format)

``checkpoint_id`` is the sha256 of the settings and every file's hash: two checkpoints with the same id hold the same
policy. Loading re-hashes every file and refuses one that changed. Writing goes to a temporary directory that is
fsynced and renamed into place, so a crash leaves the old checkpoint or the new one, never half of one.

No pickle anywhere: weights are safetensors, everything else JSON. Every problem raises `CheckpointError` (or
`FileNotFoundError` for a missing directory) naming the file, the field and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from irevla.atomic_io import fsync_file, make_readable_by_all, new_temp_directory, replace_directory
from irevla.data.stats import DatasetStats
from irevla.errors import MissingFileError
from irevla.head_file import HeadFileError, load_head_arrays, save_head_arrays
from irevla.policy.backbones import build_backbone
from irevla.policy.config import LoraSettings, PolicyConfig
from irevla.policy.errors import CheckpointError
from irevla.policy.vla import VLAPolicy
from irevla.spec import ActionSpec, ContractError, ObservationSpec

FORMAT = "irevla-policy"
VERSION = 1
MANIFEST = "policy.json"
HEAD_FILE = "head.safetensors"
BACKBONE_FILE = "backbone.safetensors"
STATS_FILE = "stats.json"


# --------------------------------------------------------------------------------------------------------- helpers
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _checkpoint_id(manifest: Mapping[str, Any]) -> str:
    """Hash of everything but the id itself, the creation time and the free-form info."""
    content = {k: v for k, v in manifest.items() if k not in ("checkpoint_id", "created", "info")}
    return "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _dedupe_shared(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses tensors that share memory (tied embeddings): keep one name, record the others as aliases."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size(),
               tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            kept[name] = tensor.detach().contiguous().cpu()
    return kept, aliases


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a policy checkpoint needs {HEAD_FILE}, {BACKBONE_FILE}, "
                              f"{STATS_FILE} and {MANIFEST})")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from None


def _pretrained_fingerprint(directory: str) -> dict[str, Any]:
    """What identifies a local pretrained model directory: its config.json hash and weight file sizes."""
    path = Path(directory)
    config = path / "config.json"
    if not config.is_file():
        raise MissingFileError(f"{path}: backbone.pretrained directory has no config.json")
    weights = {p.name: p.stat().st_size for p in sorted(path.glob("*.safetensors"))}
    return {"path": str(path.resolve()), "config_sha256": file_sha256(config), "weight_files": weights}


# ------------------------------------------------------------------------------------------------------ head files
def save_head(path: str | Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> Path:
    """Write head parameters as float32 safetensors; `metadata` (JSON) describes the head (sizes, config).
    The format is `irevla.head_file`'s, which the learner process reads without torch."""
    return save_head_arrays(path, {name: tensor.detach().to("cpu", torch.float32).numpy()
                                   for name, tensor in state.items()}, metadata)


def load_head(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a head file written by `save_head`; checks the format and that values are finite."""
    try:
        arrays, metadata = load_head_arrays(path)
    except HeadFileError as exc:
        raise CheckpointError(str(exc)) from None
    return {name: torch.from_numpy(array) for name, array in arrays.items()}, metadata


def head_metadata(policy: VLAPolicy) -> dict[str, Any]:
    """Everything needed to rebuild the head elsewhere: its config and input/output sizes."""
    head = policy.head
    return {"head_config": policy.config.head.model_dump(mode="json"), "latent_dim": head.latent_dim,
            "latent_length": policy.latent_shape[0], "proprio_dim": head.proprio_dim,
            "action_dim": head.action_dim, "action_chunk": head.chunk,
            "action_names": list(policy.action_spec.names),
            "proprio_names": list(policy.observation_spec.proprio_names)}


# ------------------------------------------------------------------------------------------------------- save
def save_policy(policy: VLAPolicy, path: str | Path, info: Mapping[str, Any] | None = None) -> str:
    """Write `policy` to the directory `path` (replacing it); returns the checkpoint id."""
    path = Path(path)
    temp = new_temp_directory(path)
    try:
        backbone_config = policy.config.backbone
        include_base = policy.base_weights_modified or backbone_config.pretrained is None
        state = policy.backbone.model.state_dict()
        if not include_base:
            state = {name: tensor for name, tensor in state.items() if ".lora_" in name}
        tensors, aliases = _dedupe_shared(state)
        save_file(tensors, str(temp / BACKBONE_FILE), metadata={"format": "irevla-backbone"})
        make_readable_by_all(temp / BACKBONE_FILE)  # safetensors makes owner-only files
        save_head(temp / HEAD_FILE, policy.head_state(), head_metadata(policy))
        policy.stats.save(temp / STATS_FILE)

        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "config": policy.config.model_dump(mode="json"),
            "backbone_hf_config": policy.backbone.hf_config_dict(),
            "base_weights": "included" if include_base else "pretrained",
            "pretrained": None if include_base else _pretrained_fingerprint(backbone_config.pretrained),
            "backbone_aliases": aliases,
            "lora": ({"settings": policy.lora_settings.model_dump(mode="json"), "layers": policy.lora_layers}
                     if policy.lora_layers else None),
            "action_spec": policy.action_spec.to_dict(),
            "observation_spec": policy.observation_spec.to_dict(),
            "cameras": list(policy.cameras),
            "files": {name: file_sha256(temp / name) for name in (HEAD_FILE, BACKBONE_FILE, STATS_FILE)},
        }
        manifest["checkpoint_id"] = _checkpoint_id(manifest)
        manifest["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        manifest["info"] = json.loads(json.dumps(dict(info or {}), default=str))
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        for name in (MANIFEST, HEAD_FILE, BACKBONE_FILE, STATS_FILE):
            fsync_file(temp / name)
        replace_directory(temp, path)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    policy.checkpoint_id = manifest["checkpoint_id"]
    return manifest["checkpoint_id"]


# ------------------------------------------------------------------------------------------------------- load
def _require(manifest: Mapping[str, Any], field: str, where: Path) -> Any:
    if field not in manifest:
        raise CheckpointError(f"{where}: missing field {field!r}")
    return manifest[field]


def read_manifest(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """The validated policy.json of the checkpoint directory `path`; with `verify`, every file's hash is checked."""
    path = Path(path)
    if not path.is_dir():
        raise MissingFileError(f"{path}: policy checkpoint directory not found")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing; {path} is not an irevla policy checkpoint")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{manifest_path}: expected a JSON object at the top level")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_path}: field 'format': expected {FORMAT!r}, got {manifest.get('format')!r}")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{manifest_path}: field 'version': expected {VERSION} (this irevla reads version "
                              f"{VERSION}), got {manifest.get('version')!r}")
    for field in ("config", "backbone_hf_config", "base_weights", "action_spec", "observation_spec", "cameras",
                  "files", "checkpoint_id"):
        _require(manifest, field, manifest_path)
    files = manifest["files"]
    for name in (HEAD_FILE, BACKBONE_FILE, STATS_FILE):
        if name not in files:
            raise CheckpointError(f"{manifest_path}: field 'files' has no entry for {name!r}")
    if _checkpoint_id(manifest) != manifest["checkpoint_id"]:
        raise CheckpointError(f"{manifest_path}: field 'checkpoint_id' does not match the file's content "
                              f"(expected {_checkpoint_id(manifest)}): policy.json was edited or is corrupt")
    if verify:
        for name, expected in files.items():
            file_path = path / name
            if not file_path.is_file():
                raise CheckpointError(f"{file_path}: missing (listed in {MANIFEST} 'files')")
            actual = file_sha256(file_path)
            if actual != expected:
                raise CheckpointError(f"{file_path}: content hash {actual} does not match {MANIFEST} "
                                      f"files[{name!r}] = {expected}: the file is corrupt or was modified")
    return manifest


def load_policy(path: str | Path, device: str | torch.device | None = None, verify: bool = True) -> VLAPolicy:
    """Rebuild the policy saved at `path` (see the module docstring); `verify` re-hashes every file first."""
    path = Path(path)
    manifest = read_manifest(path, verify=verify)
    manifest_path = path / MANIFEST
    try:
        config = PolicyConfig.model_validate(manifest["config"])
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"{manifest_path}: field 'config.{key}': {first['msg']}") from None
    try:
        action_spec = ActionSpec.from_dict(manifest["action_spec"])
        observation_spec = ObservationSpec.from_dict(manifest["observation_spec"])
    except (ContractError, TypeError) as exc:
        raise CheckpointError(f"{manifest_path}: field 'action_spec'/'observation_spec': {exc}") from None
    try:
        stats = DatasetStats.load(path / STATS_FILE)
    except FileNotFoundError:
        raise CheckpointError(f"{path / STATS_FILE}: missing") from None
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None

    base_weights = manifest["base_weights"]
    if base_weights not in ("included", "pretrained"):
        raise CheckpointError(f"{manifest_path}: field 'base_weights': expected 'included' or 'pretrained', got "
                              f"{base_weights!r}")
    if base_weights == "pretrained":
        recorded = manifest.get("pretrained") or {}
        current = _pretrained_fingerprint(config.backbone.pretrained)
        if current["config_sha256"] != recorded.get("config_sha256") or \
                current["weight_files"] != recorded.get("weight_files"):
            raise CheckpointError(f"{manifest_path}: field 'pretrained': the base model directory "
                                  f"{config.backbone.pretrained} changed since this checkpoint was written "
                                  f"(expected config {recorded.get('config_sha256')}, weight files "
                                  f"{recorded.get('weight_files')}; found {current['config_sha256']}, "
                                  f"{current['weight_files']})")
        backbone = build_backbone(config.backbone)
    elif config.backbone.pretrained is not None:
        backbone = build_backbone(config.backbone)  # tokenizer and image statistics come from the directory
    else:
        backbone = build_backbone(config.backbone, manifest["backbone_hf_config"])

    try:
        policy = VLAPolicy(config, backbone, action_spec, observation_spec, stats, manifest["cameras"])
    except ContractError as exc:
        raise CheckpointError(f"{manifest_path}: {exc}") from None
    lora = manifest.get("lora")
    if lora:
        policy.add_lora(LoraSettings.model_validate(lora["settings"]), layers=lora["layers"])

    backbone_path = path / BACKBONE_FILE
    saved = _load_safetensors(backbone_path)
    for alias, source in (manifest.get("backbone_aliases") or {}).items():
        if source in saved:
            saved[alias] = saved[source]
    expected = policy.backbone.model.state_dict()
    if base_weights == "included":
        missing = sorted(set(expected) - set(saved))
    else:
        missing = sorted(name for name in expected if ".lora_" in name and name not in saved)
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{backbone_path}: tensors do not match the model {MANIFEST} describes: missing "
                              f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    for name, tensor in saved.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{backbone_path}: tensor {name!r}: expected shape {tuple(expected[name].shape)}, "
                                  f"got {tuple(tensor.shape)}")
    policy.backbone.model.load_state_dict(saved, strict=False)
    policy.base_weights_modified = base_weights == "included"

    head_state, _ = load_head(path / HEAD_FILE)
    try:
        policy.load_head_state(head_state, where=str(path / HEAD_FILE))
    except ContractError as exc:
        raise CheckpointError(str(exc)) from None

    mode = config.backbone_training if (config.backbone_training != "lora" or policy.lora_layers) else "frozen"
    policy.set_backbone_training(mode)
    policy.base_weights_modified = base_weights == "included"
    policy.checkpoint_id = manifest["checkpoint_id"]
    if device is not None:
        policy.to(device)
    return policy
