"""Backbone adapters: any transformers VLM -> `TokenSequence` latents (see `base`). Registry by config ``kind``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from irevla.policy.backbones.base import BackboneAdapter, TokenSequence
from irevla.policy.config import BackboneConfig


def adapter_class(kind: str) -> type[BackboneAdapter]:
    """The adapter of a backbone kind; imported on demand (each pulls in its transformers model code)."""
    if kind == "blip2":
        from irevla.policy.backbones.blip2 import Blip2Adapter

        return Blip2Adapter
    if kind == "qwen2_vl":
        from irevla.policy.backbones.qwen2_vl import Qwen2VLAdapter

        return Qwen2VLAdapter
    raise ValueError(f"backbone.kind: expected 'blip2' or 'qwen2_vl', got {kind!r}")


def build_backbone(config: BackboneConfig, hf_config: Mapping[str, Any] | None = None) -> BackboneAdapter:
    """A backbone with random weights (from `hf_config` or the size fields) or loaded from ``config.pretrained``."""
    return adapter_class(config.kind).create(config, hf_config)


__all__ = ["BackboneAdapter", "TokenSequence", "adapter_class", "build_backbone"]
