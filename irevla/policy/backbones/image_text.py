"""One adapter for the transformers image-text-to-text VLMs (PaliGemma, SmolVLM, Qwen2-VL, Qwen2.5-VL, Qwen3-VL).

The model is the class `AutoModelForImageTextToText` maps the config's ``model_type`` to, built with random weights
from a transformers config or loaded from a local snapshot. `encode` lays out one sequence per sample::

    [camera 1's image block] ... [camera C's image block] [instruction, right-padded to max_text_tokens]

runs the model's base (``model.model``: vision tower, projector, language model; never the vocabulary projection,
which the action head replaces) once, and keeps the language model's last hidden states over the whole sequence
as the latent. Image blocks have a fixed length per family and image size, and the instruction is padded to a fixed
length, so every latent of a configuration has the same length m (the RL replay buffer stores latents of one
shape); the mask marks the instruction's padding.

A family (``paligemma.py``, ``smolvlm.py``, ``qwen_vl.py``) says only what differs:

* `image_block_ids` -- the token ids one camera contributes (placeholders the model fills with image features,
  and the markers around them);
* `pixel_inputs` -- the model's image arguments for a batch (pixel tensors, Qwen's patch rows and grid, ...);
* `extra_inputs` -- other per-token arguments (PaliGemma's ``token_type_ids``, Qwen's ``mm_token_type_ids``);
* `tiny_hf_config` -- a small random-weight architecture from the size fields (tests, the CPU demo);
* `model_image_size` -- the side the vision tower sees; `default_image_statistics` -- its mean / std.

Images are preprocessed in torch (`irevla.policy.images.to_pixels`: resize with antialiasing, normalise with the
snapshot's preprocessor_config.json mean / std), not by the family's image processor: those need torchvision for
their fast path, and a torch version batches and runs on the GPU. Tests compare it with SigLIP's processor at the
native size, and PaliGemma's whole token sequence with PaliGemmaProcessor's (SmolVLM's and Qwen's processors need
torchvision's video processor and are not run).

LoRA targets need no per-family list: ``language`` is every linear layer inside the language model (found through
the model's ``get_decoder()``), ``all`` adds the vision tower and the projector (every linear layer of ``model.model``;
never ``lm_head``).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from irevla.policy.backbones.base import BackboneAdapter, TokenSequence, check_camera_batch
from irevla.policy.images import to_pixels


def model_class_for(model_type: str) -> type:
    """The transformers class `AutoModelForImageTextToText` uses for `model_type`."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    name = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.get(model_type)
    if name is None:
        raise ValueError(f"model_type {model_type!r} is not an image-text-to-text model of transformers "
                         f"{transformers.__version__}")
    return getattr(transformers, name)


class ImageTextAdapter(BackboneAdapter):
    """See the module docstring. Subclasses set ``kind`` and ``model_types`` and implement the hooks."""

    @classmethod
    def hf_config_from_dict(cls, data: dict[str, Any]):
        from transformers import CONFIG_MAPPING

        model_type = data.get("model_type")
        if model_type not in cls.model_types:
            raise ValueError(f"backbone config: model_type {model_type!r} is not a {cls.kind} model "
                             f"({' or '.join(cls.model_types)})")
        return CONFIG_MAPPING[model_type].from_dict(dict(data))

    @classmethod
    def model_class_for_config(cls, hf_config) -> type:
        return model_class_for(hf_config.model_type)

    @classmethod
    def pretrained_class(cls) -> type:
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText

    # ------------------------------------------------------------------------------------------------ hooks
    @abstractmethod
    def model_image_size(self) -> int:
        """The square side images are resized to before the vision tower."""

    @abstractmethod
    def image_block_ids(self) -> list[int]:
        """Token ids of one camera's image block (its placeholders are replaced by image features)."""

    @abstractmethod
    def pixel_inputs(self, pixels: torch.Tensor, batch: int, n_cameras: int) -> dict[str, torch.Tensor]:
        """Model arguments for normalised pixels (B * C, 3, S, S), sample-major (sample 0's cameras first)."""

    def extra_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Further per-token model arguments (default none)."""
        return {}

    # -------------------------------------------------------------------------------------------- interface
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    def image_tokens_per_camera(self) -> int:
        return len(self.image_block_ids())

    def special_token_id(self, token: str, tiny_id: int) -> int:
        """A marker token's id: from the snapshot's tokenizer, or `tiny_id` for random-weight models."""
        tokenizer = getattr(self.tokenizer, "tokenizer", None)
        if tokenizer is None:
            return tiny_id
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"{self.config.pretrained}: the tokenizer has no {token!r} token, which a "
                             f"{self.kind} model needs around its image tokens")
        return int(token_id)

    def encode(self, images: Sequence[torch.Tensor], instructions: Sequence[str]) -> TokenSequence:
        n_cameras, batch = check_camera_batch(images)
        if len(instructions) != batch:
            raise ValueError(f"instructions: expected {batch} (one per image), got {len(instructions)}")
        device, dtype = self.device, self.dtype
        # Sample-major image order: the models fill image placeholders with image features in sequence order.
        stacked = torch.stack([camera.to(device) for camera in images], dim=1).flatten(0, 1)  # (B * C, H, W, 3)
        pixels = to_pixels(stacked, self.model_image_size(), self.image_mean, self.image_std, torch.float32)
        block = torch.tensor(self.image_block_ids(), device=device)
        text = self.tokenizer(self.prompts(instructions))
        input_ids = torch.cat([block.repeat(batch, n_cameras), text.ids.to(device)], dim=1)
        mask = torch.cat([torch.ones((batch, n_cameras * block.numel()), dtype=torch.bool, device=device),
                          text.mask.to(device)], dim=1)
        arguments = {name: value.to(dtype) if value.is_floating_point() else value
                     for name, value in self.pixel_inputs(pixels, batch, n_cameras).items()}
        hidden = self.model.model(input_ids=input_ids, attention_mask=mask.long(), use_cache=False,
                                  **arguments, **self.extra_inputs(input_ids)).last_hidden_state
        return TokenSequence(hidden, mask)

    def compile_targets(self) -> dict[str, nn.Module]:
        """Each block of the language model and of the vision tower, compiled on its own. Compiling ``model.model``
        whole breaks the graph ~50 times for Qwen (its rotary indices, window and sequence boundaries are computed
        with data-dependent shapes and ``.item()``); the blocks, where the time goes, compile cleanly, and the glue
        between them stays eager."""
        names = {id(module): name for name, module in self.model.named_modules()}
        targets: dict[str, nn.Module] = {}
        for stack in (self.model.model.get_decoder(), self.vision_tower()):
            blocks = max((m for m in stack.modules() if isinstance(m, nn.ModuleList)), key=len, default=None)
            for block in blocks or []:
                targets[names[id(block)]] = block
        return targets

    def vision_tower(self) -> nn.Module:
        for attribute in ("visual", "vision_tower", "vision_model"):  # Qwen, PaliGemma, SmolVLM
            tower = getattr(self.model.model, attribute, None)
            if tower is not None:
                return tower
        raise RuntimeError(f"{type(self.model).__name__}: no vision tower found (visual / vision_tower / "
                           f"vision_model)")

    def language_model_name(self) -> str:
        """The module name (inside ``self.model``) of the language model."""
        decoder = self.model.model.get_decoder()
        for name, module in self.model.named_modules():
            if module is decoder:
                return name
        raise RuntimeError(f"{type(self.model).__name__}: its decoder is not one of its modules")

    def lora_target_patterns(self, which: str) -> list[str]:
        if which == "all":
            return [r"model\..*"]  # vision tower, projector and language model; lm_head is top-level
        return [re.escape(self.language_model_name()) + r"\..*"]
