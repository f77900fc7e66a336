"""Token learner: attention pooling of a masked token sequence (B, m, d) to a few vectors (Set Transformer's PMA).

The paper replaces the VLM's last layer with "a token learner and an MLP"; the token learner is what lets the head
summarise m tokens whose useful content moves around (which image patch holds the button, which words name the
task). Computation, with learned queries ``queries`` (S, w):

    x  = input_norm(input_proj(tokens))                    # (B, m, w)
    q  = q_proj(queries); k = k_proj(x); v = v_proj(x)     # H heads of w / H
    a  = softmax(q k^T / sqrt(w / H), masked to real tokens)
    z  = queries + o_proj(a v)                             # (B, S, w)
    z  = z + fc2(gelu(fc1(mlp_norm(z))))
    out = output_norm(z).flatten()                         # (B, S * w)

Every step is a plain linear layer, LayerNorm or GELU with the parameter names above, so another framework (the
JAX/Flax RL learner) can reproduce it exactly from the saved tensors. A sequence with no real token pools to the
queries alone (its attention weights are zero), never to NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenLearner(nn.Module):
    def __init__(self, input_dim: int, width: int, num_queries: int = 1, num_heads: int = 4) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"TokenLearner: width {width} must be a multiple of num_heads {num_heads}")
        self.width, self.num_queries, self.num_heads = width, num_queries, num_heads
        self.input_proj = nn.Linear(input_dim, width)
        self.input_norm = nn.LayerNorm(width)
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.o_proj = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)
        self.output_norm = nn.LayerNorm(width)

    @property
    def output_dim(self) -> int:
        return self.num_queries * self.width

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (B, m, d), mask bool (B, m) True = real -> (B, S * w)."""
        batch = tokens.shape[0]
        heads, head_dim = self.num_heads, self.width // self.num_heads
        x = self.input_norm(self.input_proj(tokens))
        q = self.q_proj(self.queries).view(1, self.num_queries, heads, head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, -1, heads, head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, -1, heads, head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)  # (B, H, S, m)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        # nan_to_num: an all-padding row gives softmax(-inf...) = NaN; its weights become 0 instead.
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        attended = (weights @ v).transpose(1, 2).reshape(batch, self.num_queries, self.width)
        z = self.queries.unsqueeze(0) + self.o_proj(attended)
        z = z + self.fc2(F.gelu(self.fc1(self.mlp_norm(z))))
        return self.output_norm(z).reshape(batch, self.output_dim)
