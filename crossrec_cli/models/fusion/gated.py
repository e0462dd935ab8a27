"""``gated``: a learned gate per feature and per item, softmax over the features,
``sum_f g_f(x) v_f`` with ``g(x) = softmax_f(w . v_f + b_f)``. The gates start equal (w = 0,
b = 0), i.e. at the mean of the feature vectors; ``gates(parts)`` returns them for inspection."""

from __future__ import annotations

import torch
from torch import nn

from crossrec_cli.models.fusion.base import FUSIONS, Fusion


@FUSIONS.register("gated")
class GatedFusion(Fusion):
    def __init__(self, features: list[str], dim: int, init_std: float = 0.02):
        super().__init__()
        self.features = list(features)
        self.score = nn.Linear(dim, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(len(features)))
        nn.init.zeros_(self.score.weight)

    def gates(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """(N, F) gate weights of each item's features (rows sum to 1)."""
        stacked = torch.stack(parts, 1)  # (N, F, d)
        return torch.softmax(self.score(stacked).squeeze(-1) + self.bias, -1)

    def forward(self, parts: list[torch.Tensor], key: str) -> torch.Tensor:
        return (self.gates(parts).unsqueeze(-1) * torch.stack(parts, 1)).sum(1)
