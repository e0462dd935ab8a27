"""``concat``: the feature vectors side by side, mapped back to ``dim`` by one linear layer."""

from __future__ import annotations

import torch
from torch import nn

from crossrec_cli.models.fusion.base import FUSIONS, Fusion


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    def __init__(self, features: list[str], dim: int, init_std: float = 0.02):
        super().__init__()
        self.map = nn.Linear(len(features) * dim, dim)
        nn.init.normal_(self.map.weight, std=init_std)
        nn.init.zeros_(self.map.bias)

    def forward(self, parts: list[torch.Tensor], key: str) -> torch.Tensor:
        return self.map(torch.cat(parts, -1))
