"""``id``: a learned vector per item, one table per domain (SASRec's item embedding; makes a
model transductive)."""

from __future__ import annotations

import torch
from torch import nn

from crossrec_cli.models.features.base import FEATURES, Catalogue, FeatureContext, ItemFeature


@FEATURES.register("id")
class ItemIds(ItemFeature):
    transductive = True

    def __init__(self, ctx: FeatureContext, name: str = ""):
        super().__init__()
        self.ctx = ctx
        self.emb = nn.ModuleDict()

    def add_catalogue(self, key: str, catalogue: Catalogue) -> None:
        if key not in self.emb:
            emb = nn.Embedding(catalogue.n_items, self.ctx.cfg.dim)
            nn.init.normal_(emb.weight, std=self.ctx.cfg.init_std)
            self.emb[key] = emb.to(self.ctx.device())

    def can_score(self, key: str) -> bool:
        return key in self.emb

    def forward(self, key: str, fresh: torch.Tensor | None = None) -> torch.Tensor:
        return self.emb[key].weight

    def rows(self, key: str, rows: torch.Tensor) -> torch.Tensor:
        return self.emb[key].weight[rows]
