"""The VLA policy (torch): backbone adapters, token learner, action head, normalisation, LoRA, checkpoints, SFT.

Modules, one job each:

* `config`        -- PolicyConfig / SFTConfig (pydantic, no torch)
* `backbones`     -- BackboneAdapter interface, BLIP-2 and Qwen2-VL adapters -> TokenSequence latents
* `tokenizer`, `images` -- instruction tokens of fixed length; pixel preprocessing and shift augmentation
* `token_learner`, `head` -- attention pooling + MLP: the action head (and the critic's shape)
* `normalization` -- env units <-> network units for actions and proprio
* `lora`          -- LoRA injection / merging (peft) and backbone freezing
* `vla`           -- VLAPolicy: encode / head / act on the contract types
* `checkpoint`    -- safetensors + JSON checkpoints with content hashes
* `trainer_state`, `sft` -- optimizer state without pickle; the SFT trainer (resumable)
* `rollout`       -- closed-loop evaluation in simulation
* `cli`           -- ``irevla sft`` and ``irevla policy info|eval``
* `errors`        -- CheckpointError

The names below are imported lazily, so ``import irevla.policy`` (and the CLI) does not pay for torch until used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointError": "irevla.policy.errors",
    "PolicyConfig": "irevla.policy.config",
    "SFTConfig": "irevla.policy.config",
    "TokenSequence": "irevla.policy.backbones.base",
    "BackboneAdapter": "irevla.policy.backbones.base",
    "ActionHead": "irevla.policy.head",
    "VLAPolicy": "irevla.policy.vla",
    "save_policy": "irevla.policy.checkpoint",
    "load_policy": "irevla.policy.checkpoint",
    "save_head": "irevla.policy.checkpoint",
    "load_head": "irevla.policy.checkpoint",
    "run_sft": "irevla.policy.sft",
    "evaluate_policy": "irevla.policy.rollout",
}

__all__ = ["ActionHead", "BackboneAdapter", "CheckpointError", "PolicyConfig", "SFTConfig", "TokenSequence",
           "VLAPolicy", "evaluate_policy", "load_head", "load_policy", "run_sft", "save_head", "save_policy"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'irevla.policy' has no attribute {name!r}")
