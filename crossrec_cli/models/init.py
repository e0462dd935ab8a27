"""One initialisation for every tower (item features, projections, user tower)."""

from __future__ import annotations

from torch import nn


def init_weights(module: nn.Module, std: float) -> None:
    """Every embedding, linear map and attention projection ~ N(0, std), biases 0, LayerNorms
    1/0 (BERT / SASRec). torch's defaults (N(0, 1) embeddings, Kaiming / Xavier maps) put the
    position table ~50x above the item vectors at the user tower's input."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            nn.init.normal_(m.in_proj_weight, std=std)
            nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
