"""The backbone adapter interface: (camera images, instructions) -> a fixed-length token sequence (the latent).

A VLA is "VLM backbone + action head". The head only ever sees `TokenSequence` -- the backbone's last hidden states
h (B, m, d) and a mask of the real tokens -- so any VLM that can produce them plugs in by subclassing
`BackboneAdapter`:

* `build_model(config)` -- a transformers model with random weights from the size fields (tests, CPU runs);
* `encode(images, instructions)` -- uint8 images (one (B, H, W, 3) tensor per camera) + strings -> TokenSequence;
* `lora_target_patterns(which)` -- module-name regexes that LoRA adapts (``language`` or ``all``).

Pretrained models load from a local directory (``from_pretrained(path)``, safetensors only); nothing downloads.
The latent length m is fixed per configuration (image tokens per camera x cameras + ``max_text_tokens``), so RL
replay buffers store latents of one shape.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from irevla.errors import MissingFileError
from irevla.policy.config import BackboneConfig
from irevla.policy.images import CLIP_MEAN, CLIP_STD
from irevla.policy.tokenizer import ByteTokenizer, HFTextTokenizer, TextTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class TokenSequence:
    """The latent an observation encodes to: ``tokens`` float (B, m, d), ``mask`` bool (B, m), True = real token.

    This is what stage-1 RL stores in its replay buffer (the VLM is frozen there, so latents never go stale).
    """

    tokens: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3 or self.mask.shape != self.tokens.shape[:2] or self.mask.dtype != torch.bool:
            raise ValueError(f"TokenSequence: expected tokens (B, m, d) and a bool mask (B, m), got "
                             f"{tuple(self.tokens.shape)} and {self.mask.dtype} {tuple(self.mask.shape)}")

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TokenSequence:
        return TokenSequence(self.tokens.to(device=device, dtype=dtype), self.mask.to(device=device))

    def __getitem__(self, index: Any) -> TokenSequence:
        return TokenSequence(self.tokens[index], self.mask[index])


class BackboneAdapter(nn.Module, ABC):
    """A transformers VLM behind one interface; see the module docstring. Holds the model as ``self.model``."""

    kind: ClassVar[str]
    model_class: ClassVar[type]
    config_class: ClassVar[type]

    def __init__(self, config: BackboneConfig, model: nn.Module, tokenizer: TextTokenizer,
                 image_mean: Sequence[float] = CLIP_MEAN, image_std: Sequence[float] = CLIP_STD) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)

    # --------------------------------------------------------------------------------------------- construction
    @classmethod
    def create(cls, config: BackboneConfig, hf_config: Mapping[str, Any] | None = None) -> BackboneAdapter:
        """Random weights from `hf_config` (a saved model config) or from the size fields; or load `pretrained`."""
        if config.pretrained is not None:
            return cls.from_pretrained(config)
        if hf_config is not None:
            hf = cls.config_class.from_dict(dict(hf_config))
        elif config.preset is not None:
            from irevla.policy.presets import preset_hf_config

            hf = preset_hf_config(config.preset, cls.kind)
        else:
            hf = cls.tiny_hf_config(config)
        model = cls.model_class(hf)
        cls.initialize_random_weights(model)
        return cls(config, model.to(DTYPES[config.dtype]), ByteTokenizer(config.max_text_tokens))

    @classmethod
    def initialize_random_weights(cls, model: nn.Module) -> None:
        """Fix-ups for models trained from scratch (transformers initialises some weights for loading only)."""

    @classmethod
    def from_pretrained(cls, config: BackboneConfig) -> BackboneAdapter:
        path = Path(config.pretrained)
        if not (path / "config.json").is_file():
            raise MissingFileError(f"{path}: backbone.pretrained must be a local model directory with config.json "
                                   f"and *.safetensors (irevla never downloads models)")
        from transformers import AutoTokenizer

        model = cls.model_class.from_pretrained(path, dtype=DTYPES[config.dtype], local_files_only=True,
                                                use_safetensors=True)
        tokenizer = HFTextTokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True),
                                    config.max_text_tokens)
        mean, std = CLIP_MEAN, CLIP_STD
        processor_file = path / "preprocessor_config.json"
        if processor_file.is_file():
            processor = json.loads(processor_file.read_text())
            mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
        return cls(config, model, tokenizer, mean, std)

    @classmethod
    @abstractmethod
    def tiny_hf_config(cls, config: BackboneConfig):
        """The transformers config of a random-weight model sized by `config`'s size fields."""

    def hf_config_dict(self) -> dict[str, Any]:
        """The model's transformers config as plain JSON data (stored in checkpoints)."""
        return self.model.config.to_dict()

    # ----------------------------------------------------------------------------------------------- interface
    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """d, the width of the latent tokens."""

    @abstractmethod
    def image_tokens_per_camera(self) -> int:
        """How many latent tokens one camera image contributes."""

    def latent_length(self, n_cameras: int) -> int:
        return n_cameras * self.image_tokens_per_camera() + self.tokenizer.max_tokens

    @abstractmethod
    def encode(self, images: Sequence[torch.Tensor], instructions: Sequence[str]) -> TokenSequence:
        """uint8 (B, H, W, 3) per camera + B instructions -> TokenSequence (B, m, d)."""

    def forward(self, images: Sequence[torch.Tensor], instructions: Sequence[str]) -> TokenSequence:
        return self.encode(images, instructions)

    @abstractmethod
    def lora_target_patterns(self, which: str) -> list[str]:
        """Regexes (full-match against module names inside ``self.model``) of the linear layers LoRA adapts."""

    def prompts(self, instructions: Sequence[str]) -> list[str]:
        return [self.config.prompt.format(instruction=text) for text in instructions]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def check_camera_batch(images: Sequence[torch.Tensor]) -> tuple[int, int]:
    """(cameras, batch) of a list of uint8 (B, H, W, 3) tensors, all with the same B."""
    if not images:
        raise ValueError("images: expected at least one camera")
    batch = images[0].shape[0]
    for index, image in enumerate(images):
        if image.dtype != torch.uint8 or image.ndim != 4 or image.shape[-1] != 3 or image.shape[0] != batch:
            raise ValueError(f"images[{index}]: expected uint8 ({batch}, H, W, 3), got {image.dtype} "
                             f"{tuple(image.shape)}")
    return len(images), batch
