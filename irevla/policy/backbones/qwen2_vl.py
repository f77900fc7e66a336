"""Qwen2-VL: a native-resolution ViT whose 2x2-merged patches are spliced into a Qwen2 LM as image tokens.

Each camera image becomes ``<vision_start> <image_pad> x N <vision_end>`` in the LM's input, N = (S / patch)^2 /
merge^2, followed by the instruction. The model replaces the ``<image_pad>`` embeddings with the vision features
and gives them 3-D (time, row, column) rotary positions, for which it needs ``mm_token_type_ids`` (1 on image
tokens, 0 elsewhere) alongside ``input_ids``. The latent is the LM's last hidden states over the whole sequence;
the vocabulary projection is never computed.

Pixels are patchified in torch exactly as ``Qwen2VLImageProcessorPil.patchify`` does (a test compares the two): a
still image is repeated over the ``temporal_patch_size`` frames a patch spans.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from irevla.policy.backbones.base import BackboneAdapter, TokenSequence, check_camera_batch
from irevla.policy.config import BackboneConfig
from irevla.policy.images import to_pixels
from irevla.policy.tokenizer import ByteTokenizer

_LANGUAGE_LAYERS = r"model\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
_VISION_LAYERS = (r"model\.visual\.blocks\..*\.(qkv|proj|fc1|fc2)", r"model\.visual\.merger\.mlp\.[02]")

# Special ids appended after the byte tokenizer's 259 for random-weight models.
_VISION_START, _VISION_END, _IMAGE_PAD, _VIDEO_PAD = range(ByteTokenizer.VOCAB_SIZE, ByteTokenizer.VOCAB_SIZE + 4)


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


class Qwen2VLAdapter(BackboneAdapter):
    kind = "qwen2_vl"
    model_class = Qwen2VLForConditionalGeneration
    config_class = Qwen2VLConfig

    @classmethod
    def tiny_hf_config(cls, config: BackboneConfig) -> Qwen2VLConfig:
        head_dim = config.hidden_size // config.heads
        if head_dim % 8:
            raise ValueError(f"qwen2_vl: hidden_size / heads = {head_dim} must be a multiple of 8 (3-D rotary "
                             f"sections)")
        half = head_dim // 2  # rotary frequencies per head, split over (time, row, column) like Qwen's 16/24/24
        time_part = half // 4
        row_part = (half - time_part) // 2
        text = dict(vocab_size=ByteTokenizer.VOCAB_SIZE + 4, hidden_size=config.hidden_size,
                    intermediate_size=4 * config.hidden_size, num_hidden_layers=config.layers,
                    num_attention_heads=config.heads, num_key_value_heads=config.heads,
                    max_position_embeddings=4096, pad_token_id=ByteTokenizer.PAD, bos_token_id=ByteTokenizer.BOS,
                    eos_token_id=ByteTokenizer.EOS,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                     "mrope_section": [time_part, row_part, half - time_part - row_part]})
        vision = dict(depth=config.vision_layers, embed_dim=config.vision_hidden_size, hidden_size=config.hidden_size,
                      num_heads=config.heads, mlp_ratio=4, patch_size=config.patch_size, spatial_merge_size=2,
                      temporal_patch_size=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=_IMAGE_PAD,
                             video_token_id=_VIDEO_PAD, vision_start_token_id=_VISION_START,
                             vision_end_token_id=_VISION_END)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    def _grid(self) -> tuple[int, int]:
        """(patches per side, merge size) at this adapter's image size."""
        vision = self.model.config.vision_config
        side = self.config.image_size // vision.patch_size
        if side % vision.spatial_merge_size or self.config.image_size % vision.patch_size:
            raise ValueError(f"qwen2_vl: image_size {self.config.image_size} must be a multiple of patch_size x "
                             f"spatial_merge_size = {vision.patch_size * vision.spatial_merge_size}")
        return side, vision.spatial_merge_size

    def image_tokens_per_camera(self) -> int:
        side, merge = self._grid()
        return (side // merge) ** 2 + 2  # + <vision_start> and <vision_end>

    def encode(self, images: Sequence[torch.Tensor], instructions: Sequence[str]) -> TokenSequence:
        n_cameras, batch = check_camera_batch(images)
        if len(instructions) != batch:
            raise ValueError(f"instructions: expected {batch} (one per image), got {len(instructions)}")
        config, device, dtype = self.model.config, self.device, self.dtype
        vision = config.vision_config
        side, merge = self._grid()
        # Sample-major image order: the model assigns image features to <image_pad> runs in sequence order.
        stacked = torch.stack([camera.to(device) for camera in images], dim=1).flatten(0, 1)  # (B * C, H, W, 3)
        pixels = to_pixels(stacked, self.config.image_size, self.image_mean, self.image_std, torch.float32)
        patches = patchify(pixels, vision.patch_size, merge, vision.temporal_patch_size).to(dtype)
        grid_thw = torch.tensor([[1, side, side]], device=device).repeat(batch * n_cameras, 1)

        n_pad = (side // merge) ** 2
        camera_ids = torch.tensor([config.vision_start_token_id] + [config.image_token_id] * n_pad
                                  + [config.vision_end_token_id], device=device)
        text = self.tokenizer(self.prompts(instructions))
        input_ids = torch.cat([camera_ids.repeat(batch, n_cameras), text.ids.to(device)], dim=1)
        mask = torch.cat([torch.ones((batch, n_cameras * camera_ids.numel()), dtype=torch.bool, device=device),
                          text.mask.to(device)], dim=1)
        token_types = (input_ids == config.image_token_id).int()
        hidden = self.model.model(input_ids=input_ids, attention_mask=mask.long(), pixel_values=patches,
                                  image_grid_thw=grid_thw, mm_token_type_ids=token_types,
                                  use_cache=False).last_hidden_state
        return TokenSequence(hidden, mask)

    def lora_target_patterns(self, which: str) -> list[str]:
        return [_LANGUAGE_LAYERS] + (list(_VISION_LAYERS) if which == "all" else [])
