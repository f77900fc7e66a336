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


def _paligemma2_3b_pt_224():
    """google/paligemma2-3b-pt-224: SigLIP-So400m/14 at 224 px (27 layers, 1152 wide, 256 image tokens), a linear
    projector to 2304, Gemma 2 2B (26 layers, 2304 wide, 8 heads of 256, 4 KV heads, vocabulary 257216, tied)."""
    from transformers import PaliGemmaConfig

    vision = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                  num_attention_heads=16, patch_size=14, image_size=224, projection_dim=2304, vision_use_head=False)
    text = dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=257216,
                query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=30.0,
                attn_logit_softcapping=50.0, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192)
    return PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=257152, vocab_size=257216,
                           projection_dim=2304, hidden_size=2304)


def _smolvlm2_500m():
    """HuggingFaceTB/SmolVLM2-500M-Video-Instruct: SigLIP-B/16 at 512 px (12 layers, 768 wide), a 4x4 pixel shuffle
    (64 image tokens), SmolLM2-360M (32 layers, 960 wide, 15 heads, 5 KV heads, vocabulary 49280, lm_head untied)."""
    from transformers import SmolVLMConfig

    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  patch_size=16, image_size=512)
    text = dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                num_attention_heads=15, num_key_value_heads=5, head_dim=64, vocab_size=49280,
                max_position_embeddings=8192, rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                rms_norm_eps=1e-5, tie_word_embeddings=False)
    return SmolVLMConfig(vision_config=vision, text_config=text, image_token_id=49190, scale_factor=4,
                         tie_word_embeddings=False)


def _qwen_markers() -> dict[str, int]:
    return dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                vision_end_token_id=151653)


def _qwen2_vl_2b():
    """Qwen/Qwen2-VL-2B-Instruct: a 32-layer ViT (1280 wide, 14-px patches, 2x2 merge) and Qwen2-1.5B (28 layers,
    1536 wide, 12 heads, 2 KV heads, vocabulary 151936, tied)."""
    from transformers import Qwen2VLConfig

    text = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
    vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_qwen_markers())


def _qwen2_5_vl_3b():
    """Qwen/Qwen2.5-VL-3B-Instruct: a 32-layer windowed ViT (1280 wide, full attention in layers 7, 15, 23, 31) and
    Qwen2.5-3B (36 layers, 2048 wide, 16 heads, 2 KV heads, vocabulary 151936, tied)."""
    from transformers import Qwen2_5_VLConfig

    text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
                tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_qwen_markers())


def _qwen3_vl_2b():
    """Qwen/Qwen3-VL-2B-Instruct: a 24-layer ViT (1024 wide, 16-px patches, DeepStack taps 5, 11, 17) and Qwen3-1.7B
    (28 layers, 2048 wide, 16 heads of 128, 8 KV heads, vocabulary 151936, tied)."""
    from transformers import Qwen3VLConfig

    text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                tie_word_embeddings=True, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                 "mrope_interleaved": True})
    vision = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  deepstack_visual_indexes=[5, 11, 17])
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_qwen_markers())


# name -> (backbone kind, transformers config factory, BackboneConfig fields that describe it, published parameters)
# The published counts: the model hub's safetensors totals (and keras-hub's for BLIP-2); PaliGemma 2's is 3,032,094,960
# in keras-hub with the 257152-token vocabulary, 3,032,242,416 with the 257216 rows the transformers checkpoint has.
PRESETS: dict[str, tuple[str, Callable[[], Any], dict[str, Any], int]] = {
    "blip2-opt-2.7b": ("blip2", _blip2_opt_2_7b,
                       dict(image_size=224, patch_size=14, vision_hidden_size=1408, vision_layers=39,
                            hidden_size=2560, layers=32, heads=32, num_query_tokens=32), 3_744_761_856),
    "paligemma2-3b-pt-224": ("paligemma", _paligemma2_3b_pt_224,
                             dict(image_size=224, patch_size=14, vision_hidden_size=1152, vision_layers=27,
                                  hidden_size=2304, layers=26, heads=8), 3_032_242_416),
    "smolvlm2-500m": ("smolvlm", _smolvlm2_500m,
                      dict(image_size=512, patch_size=16, vision_hidden_size=768, vision_layers=12, hidden_size=960,
                           layers=32, heads=15), 507_482_304),
    "qwen2-vl-2b": ("qwen2_vl", _qwen2_vl_2b,
                    dict(image_size=224, patch_size=14, vision_hidden_size=1280, vision_layers=32, hidden_size=1536,
                         layers=28, heads=12), 2_208_985_600),
    "qwen2.5-vl-3b": ("qwen2_5_vl", _qwen2_5_vl_3b,
                      dict(image_size=224, patch_size=14, vision_hidden_size=1280, vision_layers=32,
                           hidden_size=2048, layers=36, heads=16), 3_754_622_976),
    "qwen3-vl-2b": ("qwen3_vl", _qwen3_vl_2b,
                    dict(image_size=224, patch_size=16, vision_hidden_size=1024, vision_layers=24, hidden_size=2048,
                         layers=28, heads=16), 2_127_532_032),
}


def preset_hf_config(name: str, kind: str):
    """The transformers config of preset `name`; it must be a `kind` architecture."""
    if name not in PRESETS:
        raise ValueError(f"backbone.preset: unknown preset {name!r}; known: {sorted(PRESETS)}")
    preset_kind, factory, _, _ = PRESETS[name]
    if preset_kind != kind:
        raise ValueError(f"backbone.preset: {name!r} is a {preset_kind} architecture, backbone.kind is {kind!r}")
    return factory()


def preset_backbone_config(name: str, **overrides: Any) -> BackboneConfig:
    """A BackboneConfig for preset `name` whose size fields describe it (image_size is what the model sees)."""
    if name not in PRESETS:
        raise ValueError(f"backbone.preset: unknown preset {name!r}; known: {sorted(PRESETS)}")
    kind, _, fields, _ = PRESETS[name]
    return BackboneConfig(**{"kind": kind, "preset": name, **fields, **overrides})


def published_parameters(name: str) -> int:
    """The parameter count published for preset `name`'s model (see `PRESETS`)."""
    return PRESETS[name][3]

