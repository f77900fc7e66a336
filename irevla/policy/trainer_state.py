"""Optimizer state on disk without pickle: tensors in safetensors, everything else in JSON.

``torch.optim`` state dicts mix tensors (Adam's moments, its step counters) with Python numbers and lists (the
param groups); `torch.save` would pickle them. Here tensors go to ``optimizer.safetensors`` under
``state.<param index>.<name>`` and the rest to JSON, together with the parameter names of every group, so resuming
with a model whose trainable parameters differ fails with a message naming the first mismatch instead of silently
pairing moments with the wrong weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from irevla.policy.errors import CheckpointError

OPTIMIZER_FILE = "optimizer.safetensors"


def optimizer_state_to_files(optimizer: torch.optim.Optimizer, group_names: Sequence[Sequence[str]],
                             directory: Path) -> dict[str, Any]:
    """Write the tensors to `directory`/optimizer.safetensors; return the JSON part (store it in trainer.json)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    save_file(tensors, str(directory / OPTIMIZER_FILE), metadata={"format": "irevla-optimizer"})
    return {"param_groups": state["param_groups"], "scalars": scalars,
            "group_names": [list(names) for names in group_names]}


def load_optimizer_state(optimizer: torch.optim.Optimizer, group_names: Sequence[Sequence[str]],
                         directory: Path, saved: Mapping[str, Any]) -> None:
    """Restore what `optimizer_state_to_files` wrote; the trainable parameters must be the same, by name."""
    where = directory / "trainer.json"
    recorded = saved.get("group_names")
    if recorded is None:
        raise CheckpointError(f"{where}: field 'optimizer.group_names' is missing")
    if len(group_names) != len(recorded):
        raise CheckpointError(f"{where}: expected {len(recorded)} optimizer groups, the model has {len(group_names)}")
    for group, (names, old_names) in enumerate(zip(group_names, recorded, strict=True)):
        if list(names) != list(old_names):
            first = next((i for i, (a, b) in enumerate(zip(names, old_names, strict=False)) if a != b), min(len(names),
                                                                                           len(old_names)))
            raise CheckpointError(f"{where}: optimizer group {group}: trainable parameters differ from the saved run "
                                  f"at position {first} (expected {old_names[first:first + 1]}, model has "
                                  f"{list(names)[first:first + 1]}; {len(old_names)} saved vs {len(names)} now)")
    path = directory / OPTIMIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (needed to resume)")
    tensors = load_file(str(path))
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for key, value in saved.get("scalars", {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
