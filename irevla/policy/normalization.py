"""Normalisation between environment units and the units the network works in.

* Actions: ``unit = 2 (a - low) / (high - low) - 1`` so that the head's tanh range [-1, 1] covers [low, high].
  ``bounds`` mode takes low/high from the `ActionSpec` (the same in every round of iRe-VLA, whatever data is added);
  ``quantile`` mode takes the training data's 1st/99th percentiles (finer resolution when demos use a small part of
  the range), falling back to the spec where the data is (nearly) constant. Going back, actions are always clipped
  to the ActionSpec.
* Proprio: ``(p - mean) / std`` with the training data's statistics; std is floored (a constant dimension in the
  demos must not blow up at test time) and the result clipped to +-``PROPRIO_CLIP``.

The constants are buffers of the module, so they move with ``.to(device)``; checkpoints store the `DatasetStats` and
the `ActionSpec` they were computed from, never the buffers themselves.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from irevla.data.stats import DatasetStats
from irevla.spec import ActionSpec, ContractError

PROPRIO_CLIP = 10.0
MIN_STD = 1e-3


class Normalizer(nn.Module):
    def __init__(self, action_spec: ActionSpec, stats: DatasetStats, mode: Literal["bounds", "quantile"] = "bounds",
                 ) -> None:
        super().__init__()
        if stats.action.names != action_spec.names:
            raise ContractError(f"Normalizer: statistics are for actions {stats.action.names}, the ActionSpec has "
                                f"{action_spec.names}")
        self.action_spec, self.stats, self.mode = action_spec, stats, mode
        low, high = action_spec.low_array.astype(np.float64), action_spec.high_array.astype(np.float64)
        if mode == "quantile":
            q_low = np.maximum(stats.action.q01, low)
            q_high = np.minimum(stats.action.q99, high)
            usable = (q_high - q_low) > 1e-3 * (high - low)
            low, high = np.where(usable, q_low, low), np.where(usable, q_high, high)
        elif mode != "bounds":
            raise ValueError(f"action_normalization: expected 'bounds' or 'quantile', got {mode!r}")
        self.register_buffer("action_low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(high, dtype=torch.float32))
        self.register_buffer("spec_low", torch.as_tensor(action_spec.low_array, dtype=torch.float32))
        self.register_buffer("spec_high", torch.as_tensor(action_spec.high_array, dtype=torch.float32))
        self.register_buffer("proprio_mean", torch.as_tensor(stats.proprio.mean, dtype=torch.float32))
        self.register_buffer("proprio_std", torch.as_tensor(np.maximum(stats.proprio.std, MIN_STD),
                                                            dtype=torch.float32))

    @property
    def proprio_dim(self) -> int:
        return int(self.proprio_mean.shape[0])

    def action_to_unit(self, actions: torch.Tensor) -> torch.Tensor:
        """Env units -> [-1, 1] (clipped: a target outside the range must not pull tanh into saturation)."""
        unit = 2.0 * (actions.float() - self.action_low) / (self.action_high - self.action_low) - 1.0
        return unit.clamp(-1.0, 1.0)

    def action_from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> env units, clipped to the ActionSpec bounds."""
        actions = self.action_low + (unit.float().clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.action_high - self.action_low)
        return torch.maximum(torch.minimum(actions, self.spec_high), self.spec_low)

    def proprio_to_unit(self, proprio: torch.Tensor) -> torch.Tensor:
        if proprio.shape[-1] != self.proprio_dim:
            raise ContractError(f"proprio: expected {self.proprio_dim} values {self.stats.proprio.names}, got "
                                f"{proprio.shape[-1]}")
        return ((proprio.float() - self.proprio_mean) / self.proprio_std).clamp(-PROPRIO_CLIP, PROPRIO_CLIP)
