"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: native-resolution ViTs whose 2x2-merged patches are spliced into a Qwen LM.

Each camera image becomes ``<|vision_start|> <|image_pad|> x N <|vision_end|>`` in the LM's input, N = (S / patch)^2
/ merge^2, followed by the instruction. The model replaces the ``<|image_pad|>`` embeddings with the vision features
and gives them 3-D (time, row, column) rotary positions, for which it needs ``mm_token_type_ids`` (1 on image tokens,
0 elsewhere) alongside ``input_ids``. The three generations differ inside the model (Qwen2.5-VL's windowed vision
attention, Qwen3-VL's DeepStack features injected into early LM layers and its interleaved rotary sections), not in
this interface; the ids of the markers are in the model's config.

Pixels are patchified in torch exactly as ``Qwen2VLImageProcessorPil.patchify`` does (a test compares the two): a
still image is repeated over the ``temporal_patch_size`` frames a patch spans. The image side must be a multiple of
patch x merge (28 for Qwen2/2.5-VL, 32 for Qwen3-VL); latents have (S / (patch x merge))^2 + 2 tokens per camera.
"""

from __future__ import annotations

import torch

from irevla.policy.backbones.image_text import ImageTextAdapter
from irevla.policy.config import BackboneConfig
from irevla.policy.tokenizer import ByteTokenizer

# Special ids appended after the byte tokenizer's 259 for random-weight models.
_VISION_START, _VISION_END, _IMAGE_PAD, _VIDEO_PAD = range(ByteTokenizer.VOCAB_SIZE, ByteTokenizer.VOCAB_SIZE + 4)
_MARKER_IDS = dict(image_token_id=_IMAGE_PAD, video_token_id=_VIDEO_PAD, vision_start_token_id=_VISION_START,
                   vision_end_token_id=_VISION_END)


def patchify(pixels: torch.Tensor, patch_size: int, merge_size: int, temporal_patch_size: int) -> torch.Tensor:
    """(N, C, H, W) normalised images -> (N * gh * gw, C * temporal * patch * patch) rows, merge blocks together."""
    n, channels, height, width = pixels.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = pixels.reshape(n, channels, grid_h // merge_size, merge_size, patch_size,
                             grid_w // merge_size, merge_size, patch_size)
    # -> (n, gh/m, gw/m, m, m, C, p, p): the order the processor emits, so merged 2x2 blocks are contiguous rows.
    patches = patches.permute(0, 2, 5, 3, 6, 1, 4, 7)
    patches = patches.unsqueeze(6).expand(*patches.shape[:6], temporal_patch_size, *patches.shape[6:])
    return patches.reshape(n * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)


def _rotary_sections(config: BackboneConfig) -> list[int]:
    """(time, row, column) rotary frequencies per head, split like Qwen's 16/24/24 of 64."""
    head_dim = config.hidden_size // config.heads
    if head_dim % 8:
        raise ValueError(f"{config.kind}: hidden_size / heads = {head_dim} must be a multiple of 8 (3-D rotary "
                         f"sections)")
    half = head_dim // 2
    time_part = half // 4
    row_part = (half - time_part) // 2
    return [time_part, row_part, half - time_part - row_part]


def _tiny_text(config: BackboneConfig, **extra) -> dict:
    return dict(vocab_size=ByteTokenizer.VOCAB_SIZE + 4, hidden_size=config.hidden_size,
                intermediate_size=4 * config.hidden_size, num_hidden_layers=config.layers,
                num_attention_heads=config.heads, num_key_value_heads=config.heads, max_position_embeddings=4096,
                pad_token_id=ByteTokenizer.PAD, bos_token_id=ByteTokenizer.BOS, eos_token_id=ByteTokenizer.EOS,
                **extra)


class QwenVLAdapter(ImageTextAdapter):
    """The Qwen VL interface shared by the three generations (see the module docstring)."""

    def model_image_size(self) -> int:
        vision = self.model.config.vision_config
        unit = vision.patch_size * vision.spatial_merge_size
        if self.config.image_size % unit:
            raise ValueError(f"{self.kind}: backbone.image_size {self.config.image_size} must be a multiple of "
                             f"patch_size x spatial_merge_size = {unit}")
        return self.config.image_size

    def image_block_ids(self) -> list[int]:
        config = self.model.config
        vision = config.vision_config
        n_pad = (self.model_image_size() // (vision.patch_size * vision.spatial_merge_size)) ** 2
        return [config.vision_start_token_id] + [config.image_token_id] * n_pad + [config.vision_end_token_id]

    def pixel_inputs(self, pixels: torch.Tensor, batch: int, n_cameras: int) -> dict[str, torch.Tensor]:
        vision = self.model.config.vision_config
        side = pixels.shape[-1] // vision.patch_size
        grid_thw = torch.tensor([[1, side, side]], device=pixels.device).repeat(pixels.shape[0], 1)
        return {"pixel_values": patchify(pixels, vision.patch_size, vision.spatial_merge_size,
                                         vision.temporal_patch_size),
                "image_grid_thw": grid_thw}

    def extra_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (input_ids == self.model.config.image_token_id).int()}


class Qwen2VLAdapter(QwenVLAdapter):
    kind = "qwen2_vl"
    model_types = ("qwen2_vl",)

    @classmethod
    def tiny_hf_config(cls, config: BackboneConfig):
        from transformers import Qwen2VLConfig

        text = _tiny_text(config, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                   "mrope_section": _rotary_sections(config)})
        vision = dict(depth=config.vision_layers, embed_dim=config.vision_hidden_size, hidden_size=config.hidden_size,
                      num_heads=config.heads, mlp_ratio=4, patch_size=config.patch_size, spatial_merge_size=2,
                      temporal_patch_size=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **_MARKER_IDS)


class Qwen2_5_VLAdapter(QwenVLAdapter):  # noqa: N801 (the family's own name)
    kind = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)

    @classmethod
    def tiny_hf_config(cls, config: BackboneConfig):
        from transformers import Qwen2_5_VLConfig

        text = _tiny_text(config, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                   "mrope_section": _rotary_sections(config)})
        # Windowed attention in every vision layer but the last, as the real model has it in 28 of 32; the window
        # (in pixels) spans two merged patches, so a tiny image still has several windows.
        vision = dict(depth=config.vision_layers, hidden_size=config.vision_hidden_size,
                      intermediate_size=4 * config.vision_hidden_size, num_heads=config.heads,
                      out_hidden_size=config.hidden_size, patch_size=config.patch_size, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=4 * config.patch_size,
                      fullatt_block_indexes=[config.vision_layers - 1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_MARKER_IDS)


class Qwen3VLAdapter(QwenVLAdapter):
    kind = "qwen3_vl"
    model_types = ("qwen3_vl",)

    @classmethod
    def default_image_statistics(cls) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    @classmethod
    def tiny_hf_config(cls, config: BackboneConfig):
        from transformers import Qwen3VLConfig

        text = _tiny_text(config, head_dim=config.hidden_size // config.heads,
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                           "mrope_section": _rotary_sections(config), "mrope_interleaved": True})
        side = config.image_size // config.patch_size
        # DeepStack: the first vision layer's features also enter the LM (the real 2B model taps layers 5, 11, 17).
        vision = dict(depth=config.vision_layers, hidden_size=config.vision_hidden_size,
                      intermediate_size=4 * config.vision_hidden_size, num_heads=config.heads,
                      out_hidden_size=config.hidden_size, patch_size=config.patch_size, spatial_merge_size=2,
                      temporal_patch_size=2, num_position_embeddings=side * side, deepstack_visual_indexes=[0])
        return Qwen3VLConfig(text_config=text, vision_config=vision, **_MARKER_IDS)

