"""PaliGemma and PaliGemma 2 (the VLM inside pi0): a SigLIP vision tower whose patch embeddings, linearly projected,
are the first tokens of a Gemma language model's prefix.

Each camera image becomes ``<image> x (S / patch)^2`` (256 at 224 px with 14-px patches), followed by the
instruction and a newline, as PaliGemma's processor lays out ``<image>... <bos> prompt \\n`` (the snapshot's
tokenizer adds the ``<bos>``). ``token_type_ids`` are 0 on every position: the whole sequence is PaliGemma's
prefix, which it attends to bidirectionally. The vision tower
has fixed position embeddings, so images are resized to its native side (config.json's ``vision_config.image_size``),
whatever ``backbone.image_size`` says.
"""

from __future__ import annotations

import torch

from irevla.policy.backbones.image_text import ImageTextAdapter
from irevla.policy.config import BackboneConfig
from irevla.policy.tokenizer import ByteTokenizer, HFTextTokenizer

_IMAGE = ByteTokenizer.VOCAB_SIZE  # the <image> placeholder of random-weight models


class PaliGemmaAdapter(ImageTextAdapter):
    kind = "paligemma"
    model_types = ("paligemma",)

    @classmethod
    def default_image_statistics(cls) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    @classmethod
    def tiny_hf_config(cls, config: BackboneConfig):
        from transformers import PaliGemmaConfig

        vision = dict(model_type="siglip_vision_model", hidden_size=config.vision_hidden_size,
                      intermediate_size=4 * config.vision_hidden_size, num_hidden_layers=config.vision_layers,
                      num_attention_heads=config.heads, patch_size=config.patch_size, image_size=config.image_size,
                      projection_dim=config.hidden_size, vision_use_head=False)
        text = dict(model_type="gemma2", hidden_size=config.hidden_size, intermediate_size=4 * config.hidden_size,
                    num_hidden_layers=config.layers, num_attention_heads=config.heads,
                    num_key_value_heads=config.heads, head_dim=config.hidden_size // config.heads,
                    vocab_size=ByteTokenizer.VOCAB_SIZE + 1, pad_token_id=ByteTokenizer.PAD,
                    bos_token_id=ByteTokenizer.BOS, eos_token_id=ByteTokenizer.EOS,
                    query_pre_attn_scalar=config.hidden_size // config.heads)
        return PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=_IMAGE,
                               vocab_size=ByteTokenizer.VOCAB_SIZE + 1, projection_dim=config.hidden_size,
                               hidden_size=config.hidden_size)

    def model_image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @classmethod
    def text_tokenizer(cls, hf_tokenizer, max_tokens: int) -> HFTextTokenizer:
        return HFTextTokenizer(hf_tokenizer, max_tokens, add_special_tokens=False)  # the prompt has its <bos>

    def prompts(self, instructions):
        hf_tokenizer = getattr(self.tokenizer, "tokenizer", None)
        bos = hf_tokenizer.bos_token if hf_tokenizer is not None and hf_tokenizer.bos_token else ""
        return [f"{bos}{prompt}\n" for prompt in super().prompts(instructions)]

    def image_block_ids(self) -> list[int]:
        vision = self.model.config.vision_config
        return [int(self.model.config.image_token_index)] * (vision.image_size // vision.patch_size) ** 2

    def pixel_inputs(self, pixels: torch.Tensor, batch: int, n_cameras: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": pixels}

    def extra_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"token_type_ids": torch.zeros_like(input_ids)}
