"""Backbone adapters: transformers VLMs -> `TokenSequence` latents (see `base`). Registry by config ``kind``.

BLIP-2 has its own adapter (``blip2.py``: Q-Former queries spliced in as embeddings); every other family goes
through the generic image-text-to-text adapter (``image_text.py``) with a small hook file per family.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from irevla.policy.backbones.base import BackboneAdapter, TokenSequence
from irevla.policy.config import BackboneConfig

_ADAPTERS = {"blip2": ("blip2", "Blip2Adapter"), "paligemma": ("paligemma", "PaliGemmaAdapter"),
             "smolvlm": ("smolvlm", "SmolVLMAdapter"), "qwen2_vl": ("qwen_vl", "Qwen2VLAdapter"),
             "qwen2_5_vl": ("qwen_vl", "Qwen2_5_VLAdapter"), "qwen3_vl": ("qwen_vl", "Qwen3VLAdapter")}
KINDS = tuple(_ADAPTERS)


def adapter_class(kind: str) -> type[BackboneAdapter]:
    """The adapter of a backbone kind; imported on demand (each pulls in its transformers model code)."""
    if kind not in _ADAPTERS:
        raise ValueError(f"backbone.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    module, name = _ADAPTERS[kind]
    return getattr(importlib.import_module(f"irevla.policy.backbones.{module}"), name)


def build_backbone(config: BackboneConfig, hf_config: Mapping[str, Any] | None = None) -> BackboneAdapter:
    """A backbone with random weights (from `hf_config` or the size fields) or loaded from ``config.pretrained``."""
    return adapter_class(config.kind).create(config, hf_config)


__all__ = ["KINDS", "BackboneAdapter", "TokenSequence", "adapter_class", "build_backbone"]
