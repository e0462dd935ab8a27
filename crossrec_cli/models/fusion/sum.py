"""``sum``: the feature vectors added in feature order (text + id, as SASRec / UniSRec's
transductive variant)."""

from __future__ import annotations

import torch

from crossrec_cli.models.fusion.base import FUSIONS, Fusion


@FUSIONS.register("sum")
class SumFusion(Fusion):
    def __init__(self, features: list[str], dim: int, init_std: float = 0.02):
        super().__init__()

    def forward(self, parts: list[torch.Tensor], key: str) -> torch.Tensor:
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out
