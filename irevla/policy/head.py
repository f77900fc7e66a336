"""The action head: token learner + MLP, the part of the VLA that stage-1 RL trains (and the critic's shape).

    pooled = token_learner(tokens, mask)                        # (B, S * w), see token_learner.py
    x      = concat(pooled, proprio, extra)                     # proprio normalised; extra = the action for a critic
    for each hidden layer i:  x = gelu(layer_norm_i(linear_i(x)))   (LayerNorm only with layer_norm: true)
    y      = out(x)                                             # (B, output_dim)
    y      = tanh(y) if squash                                  # actions live in [-1, 1] (normalised units)

An actor head has ``output_dim = action_chunk * A`` and ``squash=True`` and returns (B, chunk, A); a critic head is
the same structure with ``extra_dim = A`` (the action), ``output_dim = 1`` and ``squash=False``
(`ActionHead.critic_like`). Parameter names (``state_dict`` keys) are the learner's contract and documented in
docs/policy.md: ``token_learner.*``, ``mlp.linear{i}.*``, ``mlp.norm{i}.*``, ``mlp.out.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from irevla.policy.config import HeadConfig
from irevla.policy.token_learner import TokenLearner


class MLP(nn.Module):
    """Linear -> (LayerNorm) -> GELU per hidden width, then a linear output layer."""

    def __init__(self, input_dim: int, hidden: tuple[int, ...], output_dim: int, layer_norm: bool) -> None:
        super().__init__()
        self.depth = len(hidden)
        self.layer_norm = layer_norm
        width = input_dim
        for index, size in enumerate(hidden):
            setattr(self, f"linear{index}", nn.Linear(width, size))
            if layer_norm:
                setattr(self, f"norm{index}", nn.LayerNorm(size))
            width = size
        self.out = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(self.depth):
            x = getattr(self, f"linear{index}")(x)
            if self.layer_norm:
                x = getattr(self, f"norm{index}")(x)
            x = F.gelu(x)
        return self.out(x)


class ActionHead(nn.Module):
    """latent tokens (+ proprio, + extra) -> (B, chunk, A) in [-1, 1], or (B, output_dim) unsquashed for a critic."""

    def __init__(self, config: HeadConfig, latent_dim: int, proprio_dim: int, action_dim: int,
                 output_dim: int | None = None, extra_dim: int = 0, squash: bool = True) -> None:
        super().__init__()
        self.config = config
        self.latent_dim, self.action_dim, self.extra_dim, self.squash = latent_dim, action_dim, extra_dim, squash
        self.proprio_dim = proprio_dim if config.use_proprio else 0
        self.chunk = config.action_chunk
        self.output_dim = output_dim if output_dim is not None else self.chunk * action_dim
        self.token_learner = TokenLearner(latent_dim, config.token_dim, config.pool_queries, config.attention_heads)
        self.mlp = MLP(self.token_learner.output_dim + self.proprio_dim + extra_dim, tuple(config.hidden),
                       self.output_dim, config.layer_norm)
        if squash:
            # Start near the middle of the action range: small initial outputs keep tanh out of saturation.
            nn.init.uniform_(self.mlp.out.weight, -1e-3, 1e-3)
            nn.init.zeros_(self.mlp.out.bias)

    def critic_like(self) -> ActionHead:
        """A fresh critic head of the same structure: input + action, one unsquashed output (stage-1 RL)."""
        return ActionHead(self.config, self.latent_dim, self.proprio_dim, self.action_dim, output_dim=1,
                          extra_dim=self.action_dim, squash=False)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, proprio: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        parts = [self.token_learner(tokens, mask)]
        if self.proprio_dim:
            if proprio is None or proprio.shape[-1] != self.proprio_dim:
                raise ValueError(f"ActionHead: expected normalised proprio (B, {self.proprio_dim}), got "
                                 f"{None if proprio is None else tuple(proprio.shape)}")
            parts.append(proprio.to(parts[0].dtype))
        if self.extra_dim:
            if extra is None or extra.shape[-1] != self.extra_dim:
                raise ValueError(f"ActionHead: expected extra input (B, {self.extra_dim}), got "
                                 f"{None if extra is None else tuple(extra.shape)}")
            parts.append(extra.to(parts[0].dtype))
        output = self.mlp(torch.cat(parts, dim=-1))
        if not self.squash:
            return output
        return torch.tanh(output).view(-1, self.chunk, self.action_dim)
