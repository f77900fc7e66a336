"""SmolVLM / SmolVLM2 (the VLM inside SmolVLA; transformers' Idefics3 family): a SigLIP vision tower, a pixel shuffle
that folds scale_factor^2 neighbouring patches into one token, a linear projector, and a SmolLM2 language model.

Each camera image, whole (no splitting into tiles: one global image per camera keeps the latent short and of a fixed
length), becomes ``<fake_token_around_image> <global-img> <image> x ((S / patch) / scale)^2 <fake_token_around_image>``
-- 64 image tokens for SmolVLM2-500M at 512 px -- followed by the instruction. The vision tower has fixed position
embeddings, so images are resized to its native side (config.json's ``vision_config.image_size``).
"""

from __future__ import annotations

import torch

from irevla.policy.backbones.image_text import ImageTextAdapter
from irevla.policy.config import BackboneConfig
from irevla.policy.tokenizer import ByteTokenizer

# Ids of <image>, <fake_token_around_image> and <global-img> for random-weight models.
_IMAGE, _AROUND, _GLOBAL = range(ByteTokenizer.VOCAB_SIZE, ByteTokenizer.VOCAB_SIZE + 3)


class SmolVLMAdapter(ImageTextAdapter):
    kind = "smolvlm"
    model_types = ("smolvlm", "idefics3")

    @classmethod
    def default_image_statistics(cls) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    @classmethod
    def tiny_hf_config(cls, config: BackboneConfig):
        from transformers import SmolVLMConfig

        side = config.image_size // config.patch_size
        if side % 2:
            raise ValueError(f"smolvlm: image_size / patch_size = {side} must be even (2x2 pixel shuffle)")
        vision = dict(hidden_size=config.vision_hidden_size, intermediate_size=4 * config.vision_hidden_size,
                      num_hidden_layers=config.vision_layers, num_attention_heads=config.heads,
                      patch_size=config.patch_size, image_size=config.image_size)
        text = dict(model_type="llama", hidden_size=config.hidden_size, intermediate_size=4 * config.hidden_size,
                    num_hidden_layers=config.layers, num_attention_heads=config.heads,
                    num_key_value_heads=config.heads, vocab_size=ByteTokenizer.VOCAB_SIZE + 3,
                    pad_token_id=ByteTokenizer.PAD, bos_token_id=ByteTokenizer.BOS, eos_token_id=ByteTokenizer.EOS,
                    max_position_embeddings=4096)
        return SmolVLMConfig(vision_config=vision, text_config=text, image_token_id=_IMAGE, scale_factor=2)

    def model_image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    def image_block_ids(self) -> list[int]:
        config = self.model.config
        vision = config.vision_config
        n_image = ((vision.image_size // vision.patch_size) // config.scale_factor) ** 2
        around = self.special_token_id("<fake_token_around_image>", _AROUND)
        return [around, self.special_token_id("<global-img>", _GLOBAL)] + [int(config.image_token_id)] * n_image \
            + [around]

    def pixel_inputs(self, pixels: torch.Tensor, batch: int, n_cameras: int) -> dict[str, torch.Tensor]:
        # (B, C, 3, S, S): the model flattens images per sample in order. It drops an image whose pixels are all
        # exactly 0.0 as padding; with the 0.5 / 0.5 normalisation no uint8 image normalises to all zeros.
        return {"pixel_values": pixels.view(batch, n_cameras, *pixels.shape[1:])}
