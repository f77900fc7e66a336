"""What a success detector sees: the frozen VLM's hidden states of an observation, pooled, and the robot's state.

The stage-1 actor already runs the VLM once per observation (`irevla.policy.latent_actor.LatentActor.observe`), so a
detector on the same hidden states costs one small MLP per step and no second model on the robot PC. The hidden
states depend on the VLM alone (not on the head, which stage 1 trains): a detector stays valid for as long as the
VLM does, i.e. until the next stage 2 retrains it. `vlm_fingerprint` names that VLM; a detector records it and refuses
to run on another one.

Per frame (`FrameEncoder`):

* ``latent``: the masked mean and the masked max over the VLM's last hidden states, concatenated (2 d values); the
  detector projects them onto their first principal components (fitted on its training frames: with a few hundred
  positive frames, 2 d raw values are learned by heart, not generalised);
* ``proprio``: the observation's proprio vector (end-effector pose, gripper): "the arm stopped at the button" is
  often the clearest sign of success there is.

With ``context = c`` the frame's vector x_t is followed by x_t - x_{t-1} .. x_t - x_{t-c} (frame 0 stands in for
frames before it): the detector sees motion, e.g. a press that has come to rest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irevla.spec import Observation


def pool_tokens(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(..., m, d) tokens and (..., m) mask -> (..., 2 d) float32: masked mean, then masked max."""
    tokens = np.asarray(tokens, np.float32)
    mask = np.asarray(mask, bool)
    if tokens.ndim < 2 or mask.shape != tokens.shape[:-1]:
        raise ValueError(f"pool_tokens: tokens {tokens.shape} and mask {mask.shape} do not match (expected (..., m, d) "
                         f"and (..., m))")
    weights = mask[..., None].astype(np.float32)
    count = np.maximum(weights.sum(axis=-2), 1.0)
    mean = (tokens * weights).sum(axis=-2) / count
    masked = np.where(mask[..., None], tokens, -np.inf)
    largest = masked.max(axis=-2)
    largest = np.where(np.isfinite(largest), largest, 0.0)  # an all-padding row
    return np.concatenate([mean, largest], axis=-1).astype(np.float32)


def with_context(frames: np.ndarray, context: int) -> np.ndarray:
    """(T, F) per-frame vectors of one episode -> (T, F * (context + 1)): x_t, then x_t - x_{t-1} .. x_t - x_{t-c}
    (frame 0 stands in for the frames before it)."""
    frames = np.asarray(frames, np.float32)
    if context == 0:
        return frames
    parts = [frames]
    for back in range(1, context + 1):
        index = np.maximum(np.arange(len(frames)) - back, 0)
        parts.append(frames - frames[index])
    return np.concatenate(parts, axis=1)


def vlm_fingerprint(policy_dir: str | Path) -> str:
    """sha256 of what determines a policy checkpoint's VLM: the backbone's config, its weight file (LoRA adapters
    included) and, for a pretrained base, that model's fingerprint. The head does not count: stage 1 keeps it."""
    from irevla.policy.checkpoint import BACKBONE_FILE, read_manifest

    manifest = read_manifest(policy_dir, verify=False)
    content: dict[str, Any] = {
        "backbone_hf_config": manifest["backbone_hf_config"], "base_weights": manifest["base_weights"],
        "pretrained": manifest.get("pretrained"), "lora": manifest.get("lora"),
        "backbone_config": manifest["config"].get("backbone"), "backbone_file": manifest["files"][BACKBONE_FILE],
        "cameras": manifest["cameras"]}
    return "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class FrameEncoder:
    """Per-frame detector features of observations through a policy's frozen VLM (batched)."""

    def __init__(self, policy, batch_size: int = 32) -> None:
        self.policy, self.batch_size = policy, int(batch_size)
        policy.freeze_backbone()
        policy.eval()

    def encode(self, observations: Sequence[Observation]) -> tuple[np.ndarray, np.ndarray]:
        """((N, 2 d) pooled hidden states, (N, P) proprio) of `observations`."""
        import torch

        policy = self.policy
        out = []
        with torch.inference_mode():
            for start in range(0, len(observations), self.batch_size):
                images, instructions, _ = policy.observations_to_batch(observations[start:start + self.batch_size])
                latent = policy.encode({c: t.to(policy.device) for c, t in images.items()}, instructions)
                out.append(pool_tokens(latent.tokens.float().cpu().numpy(), latent.mask.cpu().numpy()))
        proprio = np.stack([np.asarray(o.proprio, np.float32) for o in observations]) if observations else \
            np.zeros((0, 0), np.float32)
        return (np.concatenate(out) if out else np.zeros((0, 0), np.float32)), proprio

    def episode(self, episode) -> tuple[np.ndarray, np.ndarray]:
        """Every observation of an `irevla.data.episode.Episode`, the final one included: (T + 1, 2 d), (T + 1, P)."""
        return self.encode([episode.observation(t) for t in range(episode.n_steps + 1)])
