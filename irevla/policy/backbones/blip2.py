"""BLIP-2 (the paper's backbone): ViT -> Q-Former queries -> language model; latent = the LM's last hidden states.

For each camera the vision encoder and Q-Former turn the image into ``num_query_tokens`` embeddings in the LM's
input space (``get_image_features``). We place them first, the instruction's token embeddings after (the order
BLIP-2's processor uses), run the LM's decoder stack once and keep its last hidden states -- the LM's vocabulary
projection is never computed, because the action head replaces it. With several cameras their query tokens are
concatenated in camera order.

Building the LM input from embeddings ourselves (instead of ``input_ids`` with image placeholder tokens, which is
how ``Blip2ForConditionalGeneration.forward`` does the same thing) lets any number of cameras share one sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig

from irevla.policy.backbones.base import BackboneAdapter, TokenSequence, check_camera_batch
from irevla.policy.config import BackboneConfig
from irevla.policy.images import to_pixels
from irevla.policy.tokenizer import ByteTokenizer

# OPT's linear layers inside the language model; vision/Q-Former/projection names for "all".
_LANGUAGE_LAYERS = r"language_model\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"
_VISION_LAYERS = (r"vision_model\..*\.(qkv|projection|fc1|fc2)",
                  r"qformer\..*\.(query|key|value|dense)",
                  r"language_projection")


class Blip2Adapter(BackboneAdapter):
    kind = "blip2"
    model_types = ("blip-2",)
    model_class = Blip2ForConditionalGeneration
    config_class = Blip2Config

    @classmethod
    def tiny_hf_config(cls, config: BackboneConfig) -> Blip2Config:
        vision = Blip2VisionConfig(hidden_size=config.vision_hidden_size,
                                   intermediate_size=4 * config.vision_hidden_size,
                                   num_hidden_layers=config.vision_layers, num_attention_heads=config.heads,
                                   image_size=config.image_size, patch_size=config.patch_size)
        qformer = Blip2QFormerConfig(hidden_size=config.vision_hidden_size,
                                     intermediate_size=4 * config.vision_hidden_size,
                                     num_hidden_layers=config.vision_layers, num_attention_heads=config.heads,
                                     encoder_hidden_size=config.vision_hidden_size, vocab_size=ByteTokenizer.VOCAB_SIZE,
                                     max_position_embeddings=max(64, config.num_query_tokens),
                                     cross_attention_frequency=1)
        text = OPTConfig(hidden_size=config.hidden_size, ffn_dim=4 * config.hidden_size,
                         num_hidden_layers=config.layers, num_attention_heads=config.heads,
                         vocab_size=ByteTokenizer.VOCAB_SIZE, word_embed_proj_dim=config.hidden_size,
                         max_position_embeddings=max(128, config.max_text_tokens + 64),
                         pad_token_id=ByteTokenizer.PAD, bos_token_id=ByteTokenizer.BOS,
                         eos_token_id=ByteTokenizer.EOS, dropout=0.0, attention_dropout=0.0)
        return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                           text_config=text.to_dict(), num_query_tokens=config.num_query_tokens)

    @classmethod
    def initialize_random_weights(cls, model: nn.Module) -> None:
        # transformers sets the Q-Former's query tokens to zeros (pretrained weights overwrite them). From scratch,
        # identical queries stay identical: every query pools the image the same way and spatial detail is lost
        # (measured: the policy then ignores the image). BLIP-2's own code draws them from N(0, 0.02).
        with torch.no_grad():
            model.query_tokens.normal_(0.0, model.config.qformer_config.initializer_range)

    def compile_targets(self) -> dict[str, nn.Module]:
        return {"model.vision_model": self.model.vision_model, "model.qformer": self.model.qformer,
                "model.language_model.base_model": self.model.language_model.base_model}

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    def image_tokens_per_camera(self) -> int:
        return int(self.model.config.num_query_tokens)

    def encode(self, images: Sequence[torch.Tensor], instructions: Sequence[str]) -> TokenSequence:
        n_cameras, batch = check_camera_batch(images)
        if len(instructions) != batch:
            raise ValueError(f"instructions: expected {batch} (one per image), got {len(instructions)}")
        device, dtype = self.device, self.dtype
        native = int(self.model.config.vision_config.image_size)
        size = self.config.image_size if self.config.pretrained is None else (self.config.image_size or native)
        pixels = torch.cat([to_pixels(camera.to(device), size, self.image_mean, self.image_std, dtype)
                            for camera in images])  # camera-major: (C * B, 3, S, S)
        queries = self.model.get_image_features(pixels, interpolate_pos_encoding=size != native,
                                                return_dict=True).pooler_output
        n_queries, width = queries.shape[1:]
        queries = queries.view(n_cameras, batch, n_queries, width).transpose(0, 1).reshape(batch, -1, width)
        text = self.tokenizer(self.prompts(instructions))
        text_embeddings = self.model.get_input_embeddings()(text.ids.to(device))
        inputs = torch.cat([queries.to(text_embeddings.dtype), text_embeddings], dim=1)
        mask = torch.cat([torch.ones(queries.shape[:2], dtype=torch.bool, device=device), text.mask.to(device)],
                         dim=1)
        hidden = self.model.language_model.base_model(inputs_embeds=inputs, attention_mask=mask.long(),
                                                      use_cache=False).last_hidden_state
        return TokenSequence(hidden, mask)

    def lora_target_patterns(self, which: str) -> list[str]:
        return [_LANGUAGE_LAYERS] + (list(_VISION_LAYERS) if which == "all" else [])
