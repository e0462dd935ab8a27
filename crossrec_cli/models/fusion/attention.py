"""``attention``: an item's feature vectors as tokens, attended by one learned query
(multi-head, ``heads`` of the user tower), plus a residual mean of the features."""

from __future__ import annotations

import torch
from torch import nn

from crossrec_cli.models.fusion.base import FUSIONS, Fusion


@FUSIONS.register("attention")
class AttentionFusion(Fusion):
    def __init__(self, features: list[str], dim: int, init_std: float = 0.02):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * init_std)
        self.kind = nn.Parameter(torch.randn(len(features), dim) * init_std)  # which feature a token is
        self.attn = nn.MultiheadAttention(dim, 1, batch_first=True)

    def forward(self, parts: list[torch.Tensor], key: str) -> torch.Tensor:
        tokens = torch.stack(parts, 1)  # (N, F, d)
        q = self.query.expand(len(tokens), 1, -1)
        out, _ = self.attn(q, tokens + self.kind, tokens)
        return out.squeeze(1) + tokens.mean(1)
