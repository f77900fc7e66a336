"""Camera images -> backbone pixel tensors, and the training-time augmentations (random shift, colour jitter).

Preprocessing is done in torch (no transformers image processor: BLIP-2's needs torchvision, which this project does
not install, and a torch version batches and runs on the GPU): uint8 (B, H, W, 3) -> float (B, 3, S, S), resized
with antialiasing and normalised with the backbone's mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# The mean/std CLIP was trained with; BLIP-2's and Qwen2-VL's image processors use these too.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_pixels(images: torch.Tensor, size: int, mean: Sequence[float] = CLIP_MEAN,
              std: Sequence[float] = CLIP_STD, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB -> normalised float (B, 3, size, size)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected uint8 (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    pixels = images.permute(0, 3, 1, 2).float().div_(255.0)
    if pixels.shape[-2:] != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return ((pixels - mean_t) / std_t).to(dtype)


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each uint8 (B, H, W, 3) image by up to +-`pixels` in x and y, filling with the edge (DrQ-style).

    Small random shifts are the augmentation that makes pixel-based behaviour cloning generalise across the
    slightly different layouts and viewpoints it meets at test time.
    """
    if pixels <= 0:
        return images
    batch, height, width, _ = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (pixels,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * pixels + 1, (batch, 2), generator=generator)
    shifted = torch.stack([padded[i, :, dy:dy + height, dx:dx + width]
                           for i, (dy, dx) in enumerate(offsets.tolist())])
    return shifted.permute(0, 2, 3, 1).to(torch.uint8)


def color_jitter(images: torch.Tensor, brightness: float, contrast: float, saturation: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Random brightness / contrast / saturation of each uint8 (B, H, W, 3) image (torchvision's ColorJitter
    formulas, fixed order): each factor is drawn per image from [1 - x, 1 + x]; x = 0 leaves that property alone.

    brightness scales the pixels; contrast blends with the image's mean grey; saturation blends with the
    per-pixel grey. The result is clipped to [0, 255]; with all three 0 the input is returned unchanged.
    """
    if not (brightness or contrast or saturation):
        return images
    batch = images.shape[0]

    def factors(x: float) -> torch.Tensor:
        return (1.0 + x * (2.0 * torch.rand(batch, generator=generator) - 1.0)).view(batch, 1, 1, 1)

    pixels = images.float()
    gray_weights = torch.tensor([0.299, 0.587, 0.114])
    if brightness:
        pixels = (pixels * factors(brightness)).clamp(0, 255)
    if contrast:
        mean = (pixels @ gray_weights).mean(dim=(1, 2)).view(batch, 1, 1, 1)
        f = factors(contrast)
        pixels = (f * pixels + (1 - f) * mean).clamp(0, 255)
    if saturation:
        gray = (pixels @ gray_weights).unsqueeze(-1)
        f = factors(saturation)
        pixels = (f * pixels + (1 - f) * gray).clamp(0, 255)
    return pixels.round().to(torch.uint8)
