"""The fusion interface: ``features`` (N, dim) matrices of one domain, in feature order -> (N, dim).

A method is one module in this package registering a builder ``(feature names, dim) -> Fusion``;
``sum`` (today's text [+ id]) needs no parameters."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from crossrec_cli.registry import Registry


class Fusion(nn.Module):
    def forward(self, parts: list[torch.Tensor], key: str) -> torch.Tensor:
        raise NotImplementedError


FUSIONS: Registry[Callable[..., Fusion]] = Registry("fusion method", "model.fusion", "crossrec_cli.models.fusion")


def build_fusion(name: str, features: list[str], dim: int, init_std: float = 0.02) -> Fusion:
    """The fusion registered as ``name`` over ``features`` (in that order), ``dim``-sized vectors."""
    return FUSIONS.get(name)(features, dim, init_std)
