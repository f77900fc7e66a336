"""Named real-size backbone architectures with random weights, for GPU benchmarks (no download, no weights).

    config = preset_backbone_config("blip2-opt-2.7b")          # a BackboneConfig with preset set
    backbone = build_backbone(config)                          # ~3.8 B random parameters: build on a GPU, in bf16

``BackboneConfig.preset`` names one of `PRESETS`; `BackboneAdapter.create` then builds the model from that
transformers config instead of the tiny size fields. Checkpoints store the full transformers config, so a saved
preset model reloads without the preset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from irevla.policy.config import BackboneConfig


def _blip2_opt_2_7b():
    """The architecture of Salesforce/blip2-opt-2.7b: EVA ViT-g/14 (39 layers, 1408 wide), a 12-layer Q-Former with
    32 queries, OPT-2.7B (32 layers, 2560 wide, vocabulary 50272). About 3.74 B parameters."""
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig

    vision = Blip2VisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                               num_attention_heads=16, image_size=224, patch_size=14, qkv_bias=True)
    qformer = Blip2QFormerConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, encoder_hidden_size=1408, vocab_size=30522,
                                 cross_attention_frequency=2, max_position_embeddings=512)
    text = OPTConfig(hidden_size=2560, ffn_dim=10240, num_hidden_layers=32, num_attention_heads=32,
                     vocab_size=50272, word_embed_proj_dim=2560, max_position_embeddings=2048,
                     pad_token_id=1, bos_token_id=2, eos_token_id=2, dropout=0.0, attention_dropout=0.0)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                       num_query_tokens=32, image_token_index=50265)


# name -> (backbone kind, transformers config factory, BackboneConfig fields that describe it)
PRESETS: dict[str, tuple[str, Callable[[], Any], dict[str, Any]]] = {
    "blip2-opt-2.7b": ("blip2", _blip2_opt_2_7b,
                       dict(image_size=224, patch_size=14, vision_hidden_size=1408, vision_layers=39,
                            hidden_size=2560, layers=32, heads=32, num_query_tokens=32)),
}


def preset_hf_config(name: str, kind: str):
    """The transformers config of preset `name`; it must be a `kind` architecture."""
    if name not in PRESETS:
        raise ValueError(f"backbone.preset: unknown preset {name!r}; known: {sorted(PRESETS)}")
    preset_kind, factory, _ = PRESETS[name]
    if preset_kind != kind:
        raise ValueError(f"backbone.preset: {name!r} is a {preset_kind} architecture, backbone.kind is {kind!r}")
    return factory()


def preset_backbone_config(name: str, **overrides: Any) -> BackboneConfig:
    """A BackboneConfig for preset `name` whose size fields describe it (image_size is what the model sees)."""
    if name not in PRESETS:
        raise ValueError(f"backbone.preset: unknown preset {name!r}; known: {sorted(PRESETS)}")
    kind, _, fields = PRESETS[name]
    return BackboneConfig(**{"kind": kind, "preset": name, **fields, **overrides})
