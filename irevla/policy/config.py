"""Typed settings of the VLA policy and of supervised fine-tuning (SFT), loaded from YAML by `irevla.config`.

Two groups:

* `PolicyConfig` -- the model: which backbone (`BackboneConfig`), the action head (`HeadConfig`), what of the
  backbone trains (``backbone_training``: ``lora`` / ``full`` / ``frozen``) and the LoRA settings (`LoraSettings`).
  A checkpoint stores it, so a saved policy rebuilds itself without the YAML it was trained from.
* `SFTConfig` -- one SFT run: data (`SFTDataConfig`), optimisation (`SFTTrainConfig`), output directory, and an
  optional ``init`` checkpoint to continue from (stage 2 of iRe-VLA starts from the current policy).

No torch here: the CLI validates a config before anything heavy is imported.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from irevla.config import ConfigModel
from irevla.metrics_log import WandbConfig

BackboneKind = Literal["blip2", "paligemma", "smolvlm", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
BackboneTraining = Literal["lora", "full", "frozen"]


class BackboneConfig(ConfigModel):
    """The vision-language backbone.

    With ``pretrained`` unset, a small model with random weights is built from the size fields below (tests, the
    demo, CPU experiments). With ``pretrained`` set to a local directory written by ``save_pretrained`` (config.json,
    *.safetensors, tokenizer files), that model is loaded and the size fields are ignored. Nothing is ever
    downloaded: a hub name instead of a directory is an error.
    """

    kind: BackboneKind = Field(default="blip2", description="the model family: blip2 (the paper's), paligemma "
                                                            "(PaliGemma 1/2), smolvlm (SmolVLM/SmolVLM2), qwen2_vl, "
                                                            "qwen2_5_vl or qwen3_vl (docs/policy.md, Backbones)")
    pretrained: str | None = Field(default=None, description="local model directory; unset: random weights")
    image_size: int = Field(default=64, ge=16, le=1024, description="square side the backbone sees; camera images "
                                                                    "are resized to it")
    patch_size: int = Field(default=8, ge=2, le=64, description="vision patch side (random-weight models)")
    vision_hidden_size: int = Field(default=64, ge=8, description="vision encoder width (random-weight models)")
    vision_layers: int = Field(default=2, ge=1, description="vision encoder depth (random-weight models)")
    hidden_size: int = Field(default=128, ge=8, description="language-model width = latent width d")
    layers: int = Field(default=2, ge=1, description="language-model depth (random-weight models)")
    heads: int = Field(default=4, ge=1, description="attention heads (random-weight models)")
    num_query_tokens: int = Field(default=8, ge=1, description="BLIP-2 Q-Former queries per camera")
    max_text_tokens: int = Field(default=32, ge=4, le=512, description="instruction tokens, padded/truncated to "
                                                                      "exactly this many: latents have a fixed length")
    prompt: str = Field(default="{instruction}", description="text given to the language model; {instruction} is "
                                                            "replaced by the task's instruction")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default="float32", description="backbone weight dtype")
    attention: Literal["sdpa", "eager"] = Field(default="sdpa", description="attention kernels: torch's "
                                                                            "scaled_dot_product_attention (fused "
                                                                            "on a GPU) where the model supports "
                                                                            "it (Gemma 2 does not: eager there), "
                                                                            "or transformers' eager code")
    preset: str | None = Field(default=None, description="a named real-size architecture with random weights "
                                                         "(irevla.policy.presets, e.g. blip2-opt-2.7b) instead of "
                                                         "the size fields; for benchmarks")

    @field_validator("prompt")
    @classmethod
    def _prompt_has_instruction(cls, prompt: str) -> str:
        if "{instruction}" not in prompt:
            raise ValueError("the prompt must contain '{instruction}'")
        return prompt

    @model_validator(mode="after")
    def _sizes_fit(self) -> BackboneConfig:
        if self.pretrained is None and self.preset is None:  # a preset's sizes come from its own config
            if self.image_size % self.patch_size:
                raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
            if self.hidden_size % self.heads or self.vision_hidden_size % self.heads:
                raise ValueError(f"hidden_size {self.hidden_size} and vision_hidden_size {self.vision_hidden_size} "
                                 f"must be multiples of heads {self.heads}")
        return self


class LoraSettings(ConfigModel):
    """LoRA on the backbone (peft). ``targets``: ``language`` (the LM's linear layers, as TAIL and the paper do),
    ``all`` (also the vision encoder and the vision-to-language connector), or explicit module-name patterns."""

    r: int = Field(default=8, ge=1, description="rank")
    alpha: float = Field(default=16.0, gt=0, description="scale numerator: the update is (alpha / r) * B A")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    targets: Literal["language", "all"] | tuple[str, ...] = "language"


class HeadConfig(ConfigModel):
    """The action head: token learner (attention pooling of the latent tokens) + MLP -> tanh (see head.py)."""

    token_dim: int = Field(default=256, ge=8, description="width the tokens are projected to before pooling")
    pool_queries: int = Field(default=1, ge=1, description="learned pooling queries (1 = one vector, as in the paper)")
    attention_heads: int = Field(default=4, ge=1)
    hidden: tuple[int, ...] = Field(default=(256, 256), min_length=1, description="MLP hidden widths")
    layer_norm: bool = Field(default=True, description="LayerNorm after each MLP hidden layer (SERL-style)")
    use_proprio: bool = Field(default=True, description="feed normalised proprio to the MLP")
    action_chunk: int = Field(default=1, ge=1, description="actions predicted per step (act() returns the first)")

    @model_validator(mode="after")
    def _heads_divide(self) -> HeadConfig:
        if self.token_dim % self.attention_heads:
            raise ValueError(f"token_dim {self.token_dim} must be a multiple of attention_heads "
                             f"{self.attention_heads}")
        return self


class PolicyConfig(ConfigModel):
    """The whole VLA: backbone, head, what trains, how actions and proprio are normalised."""

    backbone: BackboneConfig = BackboneConfig()
    head: HeadConfig = HeadConfig()
    backbone_training: BackboneTraining = Field(default="lora", description="lora: LoRA adapters train, base weights "
                                                                            "frozen; full: every weight trains; "
                                                                            "frozen: only the head trains")
    lora: LoraSettings = LoraSettings()
    action_normalization: Literal["bounds", "quantile"] = Field(
        default="bounds", description="map actions to [-1, 1] by the ActionSpec bounds (fixed across rounds) or by "
                                      "the training data's 1st/99th percentiles")


class SFTDataConfig(ConfigModel):
    """Which episodes to train on and how to split them."""

    dirs: tuple[str, ...] = Field(min_length=1, description="episode directories (D_e, and D_RL in stage 2)")
    tasks: tuple[str, ...] | None = Field(default=None, description="only these task names (default: all)")
    success_only: bool = Field(default=True, description="train on successful episodes only")
    cameras: tuple[str, ...] | None = Field(default=None, description="cameras the policy sees (default: all the "
                                                                      "data has)")
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="episodes held out for validation loss")
    split_seed: int = 0
    cache: bool = Field(default=True, description="read every frame into memory up front (small datasets)")
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes")
    expert_fraction: float | None = Field(default=None, gt=0.0, lt=1.0, description=(
        "stage 2: the share of every batch drawn from the first directory (D_e), the rest from the others (D_RL), "
        "by weighted sampling; unset: uniform over the union of all samples, as the paper"))

    @model_validator(mode="after")
    def _mixing_needs_groups(self) -> SFTDataConfig:
        if self.expert_fraction is not None and len(self.dirs) < 2:
            raise ValueError("expert_fraction needs at least two dirs (the first is D_e, the rest D_RL)")
        return self


class SFTTrainConfig(ConfigModel):
    """Optimisation. The schedule, batches and augmentation are pure functions of (seed, step): resuming from a
    checkpoint continues exactly where the run stopped."""

    steps: int = Field(default=2000, ge=1, description="total optimiser steps")
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-4, gt=0, description="learning rate of the backbone's trainable weights")
    head_lr: float = Field(default=1e-4, gt=0, description="learning rate of the action head (1e-3 measured to stop a "
                                                            "random-weight backbone from learning to see)")
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=100, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = Field(default=1.0, gt=0, description="clip the global gradient norm to this")
    shift_pixels: int = Field(default=0, ge=0, description="random image shift augmentation (+-pixels); 4 stopped a "
                                                          "random-weight backbone from learning to see in 500 steps")
    jitter_brightness: float = Field(default=0.0, ge=0.0, lt=1.0, description="colour jitter: brightness factor "
                                                                               "drawn from [1-x, 1+x] (0: off)")
    jitter_contrast: float = Field(default=0.0, ge=0.0, lt=1.0, description="colour jitter: contrast factor "
                                                                             "drawn from [1-x, 1+x] (0: off)")
    jitter_saturation: float = Field(default=0.0, ge=0.0, lt=1.0, description="colour jitter: saturation factor "
                                                                               "drawn from [1-x, 1+x] (0: off)")
    loss: Literal["mse", "l1", "huber"] = Field(default="mse", description="regression loss on unit-space actions "
                                                                          "(training and validation)")
    huber_delta: float = Field(default=1.0, gt=0, description="where the huber loss turns from quadratic to linear")
    grad_accumulation: int = Field(default=1, ge=1, description="split each batch of batch_size into this many "
                                                                "micro-batches (same update, less memory)")
    eval_every: int = Field(default=500, ge=1, description="validation loss every this many steps")
    val_batches: int = Field(default=20, ge=1, description="batches per validation")
    checkpoint_every: int = Field(default=500, ge=1, description="write <out>/last every this many steps")
    log_every: int = Field(default=50, ge=1)
    seed: int = 0
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: torch's choice)")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(default="no", description="autocast on a GPU")
    gradient_checkpointing: bool = Field(default=False, description="recompute the backbone's activations in the "
                                                                    "backward pass: less memory for a real-size "
                                                                    "VLM, ~30 % more compute, same gradients")
    tensorboard: bool = Field(default=True, description="also write TensorBoard events to <out>/tensorboard")
    wandb: WandbConfig = Field(default_factory=WandbConfig, description=(
        "also log to Weights & Biases (off by default; irevla.metrics_log.WandbConfig)"))

    @model_validator(mode="after")
    def _micro_batches_divide(self) -> SFTTrainConfig:
        if self.batch_size % self.grad_accumulation:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of grad_accumulation "
                             f"{self.grad_accumulation}")
        return self


class SFTConfig(ConfigModel):
    """One supervised fine-tuning run (stage 0 on D_e, or stage 2 on D_e + D_RL with ``init``)."""

    policy: PolicyConfig = PolicyConfig()
    data: SFTDataConfig
    train: SFTTrainConfig = SFTTrainConfig()
    out: str = Field(default="runs/sft", description="run directory: last/, policy/, metrics.jsonl, config.yaml")
    init: str | None = Field(default=None, description="start from this policy checkpoint: its architecture and "
                                                      "normalisation are kept, policy.backbone_training and "
                                                      "policy.lora still decide what trains")


# Keys that may change between a run and its resumption: they do not change what is computed.
RESUMABLE_KEYS = frozenset({"train.steps", "train.eval_every", "train.val_batches", "train.checkpoint_every",
                            "train.log_every", "train.threads", "train.tensorboard", "data.num_workers", "out",
                            "train.grad_accumulation", "train.gradient_checkpointing",
                            *(f"train.wandb.{key}" for key in WandbConfig.model_fields)})
