"""Backbone adapters: real transformers models (tiny, random weights) -> fixed-length TokenSequence latents."""


import numpy as np
import pytest
import torch
from policy_factory import tiny_config

from irevla.policy.backbones import KINDS, build_backbone
from irevla.policy.backbones.qwen_vl import patchify
from irevla.policy.images import random_shift
from irevla.policy.tokenizer import ByteTokenizer


def _images(batch, cameras=1, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)
            for _ in range(cameras)]


@pytest.fixture(scope="module", params=KINDS)
def backbone(request):
    torch.manual_seed(0)
    return build_backbone(tiny_config(request.param).backbone).eval()


def test_latent_has_a_fixed_length_and_masks_only_text_padding(backbone):
    with torch.no_grad():
        latent = backbone.encode(_images(3, cameras=2), ["push left", "a much longer instruction here", "x"])
    m = backbone.latent_length(2)
    assert latent.tokens.shape == (3, m, backbone.hidden_size)
    assert latent.mask.shape == (3, m) and latent.mask.dtype == torch.bool
    image_tokens = 2 * backbone.image_tokens_per_camera()
    assert latent.mask[:, :image_tokens].all()
    text_lengths = latent.mask[:, image_tokens:].sum(1).tolist()
    assert text_lengths[1] > text_lengths[0] > text_lengths[2]  # real tokens only; the rest is padding
    assert torch.isfinite(latent.tokens).all()


def test_latent_depends_on_image_and_instruction(backbone):
    images = _images(1)
    with torch.no_grad():
        base = backbone.encode(images, ["push left"]).tokens
        other_text = backbone.encode(images, ["push right"]).tokens
        other_image = backbone.encode(_images(1, seed=1), ["push left"]).tokens
    assert not torch.allclose(base, other_text)
    assert not torch.allclose(base, other_image)


def test_batch_items_are_independent(backbone):
    images = _images(4)
    with torch.no_grad():
        batched = backbone.encode(images, ["push left"] * 4).tokens
        single = backbone.encode([images[0][2:3]], ["push left"]).tokens
    torch.testing.assert_close(batched[2:3], single, atol=1e-5, rtol=1e-4)


def test_gradients_reach_the_vision_encoder(backbone):
    backbone.model.requires_grad_(True)
    latent = backbone.encode(_images(2), ["push left", "push right"])
    latent.tokens.pow(2).mean().backward()
    vision = [p for n, p in backbone.model.named_parameters() if "vision" in n or "visual" in n]
    assert vision and any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision)
    backbone.model.zero_grad(set_to_none=True)


def test_other_image_sizes_are_resized(backbone):
    with torch.no_grad():
        latent = backbone.encode(_images(2, size=48), ["push left"] * 2)
    assert latent.tokens.shape[1] == backbone.latent_length(1)


def test_bad_inputs_name_the_problem(backbone):
    with pytest.raises(ValueError, match=r"images\[0\]: expected uint8"):
        backbone.encode([torch.zeros(2, 32, 32, 3)], ["a", "b"])
    with pytest.raises(ValueError, match="instructions: expected 2"):
        backbone.encode(_images(2), ["only one"])


def test_qwen2_vl_patchify_matches_the_transformers_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    processor = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                         size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64})
    reference = processor(images=[image], return_tensors="pt")
    assert reference["image_grid_thw"].tolist() == [[1, 4, 6]]
    ours = patchify(_normalised(image), 8, 2, 2)
    torch.testing.assert_close(ours, reference["pixel_values"], atol=1e-5, rtol=1e-5)


def _normalised(image):
    """Normalise a non-square image without resizing it (to_pixels resizes to a square)."""
    from irevla.policy.images import CLIP_MEAN, CLIP_STD

    pixels = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0
    return (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def test_byte_tokenizer_pads_and_truncates_to_a_fixed_length():
    tokenizer = ByteTokenizer(8)
    tokens = tokenizer(["ab", "abcdefghijk"])
    assert tokens.ids.shape == (2, 8)
    assert tokens.ids[0, :4].tolist() == [ByteTokenizer.BOS, ord("a") + 3, ord("b") + 3, ByteTokenizer.EOS]
    assert tokens.mask.sum(1).tolist() == [4, 8]
    assert tokens.ids[1, -1] == ByteTokenizer.EOS


def test_random_shift_moves_content_and_keeps_dtype():
    image = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    image[:, 8, 8] = 255
    shifted = random_shift(image, 3, torch.Generator().manual_seed(0))
    assert shifted.dtype == torch.uint8 and shifted.shape == image.shape
    assert random_shift(image, 0, torch.Generator()) is image
    moved = [tuple(torch.nonzero(shifted[i, :, :, 0]).tolist()[0]) for i in range(2)]
    assert all(abs(y - 8) <= 3 and abs(x - 8) <= 3 for y, x in moved)
