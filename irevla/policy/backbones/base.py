"""The backbone adapter interface: (camera images, instructions) -> a fixed-length token sequence (the latent).

A VLA is "VLM backbone + action head". The head only ever sees `TokenSequence` -- the backbone's last hidden states
h (B, m, d) and a mask of the real tokens -- so any VLM that can produce them plugs in by subclassing
`BackboneAdapter`:

* `tiny_hf_config(config)` -- a transformers config of a small random-weight model from the size fields (tests, CPU
  runs); real-size architectures come from `irevla.policy.presets`;
* `encode(images, instructions)` -- uint8 images (one (B, H, W, 3) tensor per camera) + strings -> TokenSequence;
* `lora_target_patterns(which)` -- module-name regexes that LoRA adapts (``language`` or ``all``);
* `compile_targets()` -- the modules `encode` spends its time in (`VLAPolicy.compile`).

Most families need only the hooks of the generic adapter (`image_text.ImageTextAdapter`). Pretrained models load
from a local snapshot (`from_pretrained`, checked first by `snapshot.check_snapshot`; safetensors only); nothing
downloads.
The latent length m is fixed per configuration (image tokens per camera x cameras + ``max_text_tokens``), so RL
replay buffers store latents of one shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from irevla.errors import one_line
from irevla.policy.backbones.snapshot import SnapshotError, check_loading_info, check_snapshot, read_json
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
        model = cls.new_model(cls.random_hf_config(config, hf_config), config.attention)
        cls.initialize_random_weights(model)
        return cls(config, model.to(DTYPES[config.dtype]), ByteTokenizer(config.max_text_tokens),
                   *cls.default_image_statistics())

    @classmethod
    def random_hf_config(cls, config: BackboneConfig, hf_config: Mapping[str, Any] | None = None):
        """The transformers config of a random-weight model: `hf_config` (a checkpoint's), the preset, or tiny."""
        if hf_config is not None:
            return cls.hf_config_from_dict(dict(hf_config))
        if config.preset is not None:
            from irevla.policy.presets import preset_hf_config

            return preset_hf_config(config.preset, cls.kind)
        return cls.tiny_hf_config(config)

    @classmethod
    def hf_config_from_dict(cls, data: dict[str, Any]):
        return cls.config_class.from_dict(data)

    @classmethod
    def new_model(cls, hf_config, attention: str = "sdpa") -> nn.Module:
        """The transformers model of `hf_config` with random weights (on the current default device: ``meta``
        inside ``torch.device("meta")``, which is how parameter counts of real-size presets are taken)."""
        if attention == "eager":  # "sdpa" is transformers' default where a model supports it (Gemma 2 does not)
            hf_config._attn_implementation = "eager"
        return cls.model_class_for_config(hf_config)(hf_config)

    @classmethod
    def model_class_for_config(cls, hf_config) -> type:
        """The transformers model class a config builds (one class per adapter, unless a subclass says otherwise)."""
        return cls.model_class

    @classmethod
    def default_image_statistics(cls) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the family normalises images with when the snapshot has no preprocessor_config.json."""
        return CLIP_MEAN, CLIP_STD

    @classmethod
    def initialize_random_weights(cls, model: nn.Module) -> None:
        """Fix-ups for models trained from scratch (transformers initialises some weights for loading only)."""

    model_types: ClassVar[tuple[str, ...]] = ()  # config.json model_type values this adapter loads

    @classmethod
    def pretrained_class(cls) -> type:
        return cls.model_class

    @classmethod
    def from_pretrained(cls, config: BackboneConfig) -> BackboneAdapter:
        """Load a local snapshot (see `irevla.policy.backbones.snapshot`): checked first, so a missing file, another
        family's model or weights that do not fit config.json are errors naming the file. Nothing downloads."""
        from transformers import AutoTokenizer

        snapshot = check_snapshot(config.pretrained, config.kind, cls.model_types or (cls.kind,))
        try:
            model, info = cls.pretrained_class().from_pretrained(
                snapshot.path, dtype=DTYPES[config.dtype], local_files_only=True, use_safetensors=True,
                output_loading_info=True, ignore_mismatched_sizes=True,
                **({"attn_implementation": "eager"} if config.attention == "eager" else {}))
        except (OSError, ValueError) as exc:
            raise SnapshotError(f"{snapshot.path}: transformers could not load the model: {one_line(exc)}") from None
        check_loading_info(snapshot, info)
        try:
            hf_tokenizer = AutoTokenizer.from_pretrained(snapshot.path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise SnapshotError(f"{snapshot.path}: the tokenizer files do not load: {one_line(exc)}") from None
        mean, std = cls.default_image_statistics()
        processor_file = snapshot.path / "preprocessor_config.json"
        if processor_file.is_file():
            processor = read_json(processor_file)
            mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
            if len(mean) != 3 or len(std) != 3:
                raise SnapshotError(f"{processor_file}: fields 'image_mean'/'image_std': expected 3 values each "
                                    f"(RGB), got {mean} / {std}")
        return cls(config, model, cls.text_tokenizer(hf_tokenizer, config.max_text_tokens), mean, std)

    @classmethod
    def text_tokenizer(cls, hf_tokenizer, max_tokens: int) -> HFTextTokenizer:
        """The snapshot's tokenizer as instructions are tokenised for this family."""
        return HFTextTokenizer(hf_tokenizer, max_tokens)

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

    def compile_targets(self) -> dict[str, nn.Module]:
        """The modules `encode` spends its time in, by name, for `torch.compile` (`VLAPolicy.compile`)."""
        return {"model.model": self.model.model}

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (transformers' checkpointing, non-reentrant: it works with
        frozen base weights and LoRA, where no input of a layer needs a gradient)."""
        self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

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
